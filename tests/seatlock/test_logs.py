"""``seatlock serve``'s log output, read from a real run: two worker processes, JSON lines,
everything logged (debug), and not one secret in it.

One server runs for the module: it is driven through the flows that handle secrets (login,
refresh, a password reset, a WebSocket with ``?token=``, holds, a refused hold), then stopped so
that every worker has written what it queued; the tests read its captured output.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from select import PIPE_BUF
from typing import Any

import httpx
import orjson
import pytest
import websockets

from api.observe import ACCESS, AccessRecord, write_access
from db.demo import DEMO_EMAIL, DEMO_PASSWORD
from seatlock.server import logs
from seatlock.settings import Settings
from tests.support import scratch_dir, start_serve, stop_all

NEW_PASSWORD = "Brand-new-pass-9"
OTHER_PASSWORD = "Other-user-pass-7"


@dataclass
class Run:
    """What one ``seatlock serve`` run wrote, and the secrets it was given or handed out."""

    pid: int
    output: str
    secrets: list[str] = field(default_factory=list)
    users: dict[str, int] = field(default_factory=dict)

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.output.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    settings = {"workers": 2, "bcrypt_rounds": 4, "log_level": "debug", "log_format": "json"}
    with scratch_dir("seatlock-logs-") as data_dir:
        served = start_serve(data_dir, **settings)
        try:
            served.wait_for("/health/live", seconds=60, started=2)
            secrets, users = asyncio.run(drive(served.url, data_dir / "outbox"))
            time.sleep(0.5)  # the reset mail's background task, the WebSocket's close line
            served.interrupt()
            assert served.proc.wait(timeout=30) == 0, served.log.read_text()
            yield Run(served.proc.pid, served.log.read_text(), secrets, users)
        finally:
            stop_all([served])


async def drive(url: str, outbox: Path) -> tuple[list[str], dict[str, int]]:
    """Every flow that carries a secret; returns the secrets and the users' ids."""
    secrets = [DEMO_PASSWORD, NEW_PASSWORD, OTHER_PASSWORD]
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        login = await client.post(
            "/api/v1/auth/login", json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD}
        )
        assert login.status_code == 200, login.text
        tokens = login.json()
        secrets += [tokens["access_token"], tokens["refresh_token"]]
        refreshed = await client.post(
            "/api/v1/auth/refresh-token", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        access = refreshed.json()["access_token"]
        secrets += [access, refreshed.json()["refresh_token"]]
        demo = {"Authorization": f"Bearer {access}"}
        me = (await client.get("/api/v1/auth/me", headers=demo)).json()["id"]
        other = await register_and_login(client, secrets)

        screening = (await client.get("/api/v1/screenings/")).json()[0]["id"]
        path = f"/ws/screenings/{screening}?token={access}"
        ws_url = url.replace("http://", "ws://") + path
        async with websockets.connect(ws_url) as ws:
            await asyncio.wait_for(ws.recv(), 5)  # connection_confirmed
            seats = await client.get(
                f"/api/v1/seat-reservations/screening/{screening}/availability"
            )
            seat = seats.json()[0]["seat"]["id"]
            body = {"screening_id": screening, "seat_ids": [seat]}
            held = await client.post("/api/v1/seat-reservations/reserve", json=body, headers=demo)
            assert held.status_code == 201, held.text
            refused = await client.post(
                "/api/v1/seat-reservations/reserve", json=body, headers=other
            )
            assert refused.status_code == 409, refused.text
            await asyncio.wait_for(ws.recv(), 5)  # the hold's seat update
        anonymous = ws_url.partition("?")[0]
        async with websockets.connect(anonymous) as bad:  # a text frame that is not UTF-8
            await asyncio.wait_for(bad.recv(), 5)
            await bad.send(b"\xff\xfe\xfd", text=True)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(bad.recv(), 5)
            assert bad.close_code == 1007

        forgot = await client.post("/api/v1/auth/forgot-password", json={"email": DEMO_EMAIL})
        assert forgot.status_code == 200, forgot.text
        reset_token = reset_token_from(outbox)
        secrets.append(reset_token)
        reset = await client.post(
            "/api/v1/auth/reset-password",
            json={"token": reset_token, "new_password": NEW_PASSWORD},
        )
        assert reset.status_code == 200, reset.text
    return secrets, {"demo": me}


async def register_and_login(client: httpx.AsyncClient, secrets: list[str]) -> dict[str, str]:
    email = "other@example.com"
    body = {"email": email, "password": OTHER_PASSWORD, "full_name": "Other Person"}
    assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
    r = await client.post(
        "/api/v1/auth/login", data={"username": email, "password": OTHER_PASSWORD}
    )
    assert r.status_code == 200, r.text
    secrets += [r.json()["access_token"], r.json()["refresh_token"]]
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def reset_token_from(outbox: Path) -> str:
    """The token of the newest mail in the outbox (sent after the response: waited for)."""
    for _ in range(100):
        mails = sorted(outbox.glob("*.json")) if outbox.exists() else []
        if mails:
            text = orjson.loads(mails[-1].read_bytes())["body"]
            return str(text.split("token=", 1)[1].split()[0])
        time.sleep(0.05)
    raise AssertionError("no password reset mail")


def test_no_token_or_password_reaches_the_log(run: Run) -> None:
    assert len(run.secrets) == 10
    for secret in run.secrets:
        assert secret not in run.output, f"a secret ({secret[:6]}...) was logged"
    # The lines that carried them are there, redacted: a WebSocket's access lines among them.
    assert "token=[redacted]" in run.output


def test_a_websocket_gets_its_two_access_lines_and_none_of_uvicorns(run: Run) -> None:
    """uvicorn wrote three more INFO lines per WebSocket ("[accepted]", "connection open",
    "connection closed"): at 10,000 watchers, 30,000 lines saying what the access log says."""
    chatter = [
        x["message"]
        for x in run.lines
        if x["message"].endswith('" [accepted]')
        or x["message"] in ("connection open", "connection closed")
    ]
    assert chatter == []
    sockets = [x for x in run.lines if x.get("method") == "WEBSOCKET"]
    assert sockets and {x["event"] for x in sockets} == {"accepted", "closed"}


def test_what_a_client_did_wrong_is_no_error(run: Run) -> None:
    """ERROR is for the server's own failures: uvicorn's ERROR and traceback for a text frame
    that is not UTF-8 (answered with a 1007 close) are a WARNING line."""
    assert [line["message"] for line in run.lines if line["level"] == "ERROR"] == []
    [bad_frame] = [line for line in run.lines if line["message"] in logs.CLIENT_FAULTS]
    assert bad_frame["level"] == "WARNING" and "exception" not in bad_frame


def test_every_line_is_a_json_object_with_the_common_fields(run: Run) -> None:
    lines = run.lines
    assert len(lines) > 50
    for line in lines:
        assert {"time", "level", "logger", "message", "pid"} <= line.keys(), line
        assert line["time"].endswith("Z") and "T" in line["time"]


def test_the_workers_lines_reach_the_output(run: Run) -> None:
    lines = run.lines
    workers = {x["pid"] for x in lines if x["message"] == "Application startup complete."}
    assert len(workers) == 2 and run.pid not in workers
    supervisor = [x for x in lines if x["pid"] == run.pid]
    assert any(x["message"].startswith("seatlock on http://") for x in supervisor)
    # INFO and DEBUG lines of our own loggers, from the workers
    by_workers = [x for x in lines if x["pid"] in workers]
    assert any(x["logger"] == "seatlock.access" for x in by_workers)
    assert any(x["logger"] == "uvicorn.error" and x["level"] == "INFO" for x in by_workers)


def test_access_lines_carry_route_status_duration_user_and_request_id(run: Run) -> None:
    access = [x for x in run.lines if x["logger"] == "seatlock.access"]
    held = [
        x for x in access if x["method"] == "POST" and x["status"] == 201 and "reserve" in x["path"]
    ]
    assert len(held) == 1
    line = held[0]
    assert line["route"] == "/api/v1/seat-reservations/reserve"
    assert line["user_id"] == run.users["demo"]
    assert line["duration_ms"] > 0
    assert line["client"].startswith("127.0.0.1:")
    assert line["request_id"]
    sockets = [x for x in access if x["method"] == "WEBSOCKET" and "?token=" in x["path"]]
    assert [x["event"] for x in sockets] == ["accepted", "closed"]
    assert sockets[0]["route"] == "/ws/screenings/{screening_id:int}"
    assert sockets[1]["user_id"] == run.users["demo"]
    assert sockets[0]["path"].endswith("?token=[redacted]")
    assert sockets[0]["request_id"] == sockets[1]["request_id"]


def test_a_refused_hold_is_logged_at_debug_with_its_reason(run: Run) -> None:
    refused = [x for x in run.lines if x["message"].startswith("hold refused (SeatsUnavailable)")]
    assert len(refused) == 1
    assert refused[0]["level"] == "DEBUG" and refused[0]["request_id"]


# -- the configuration itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /ws/screenings/1?token=abc.def&x=1", "GET /ws/screenings/1?token=[redacted]&x=1"),
        (
            '{"access_token": "a1", "token_type": "bearer"}',
            '{"access_token": "[redacted]", "token_type": "bearer"}',
        ),
        (
            "{'refresh_token': 'r1', 'password': 'p1'}",
            "{'refresh_token': '[redacted]', 'password': '[redacted]'}",
        ),
        ("Login(email='a@b.c', password='p1')", "Login(email='a@b.c', password='[redacted]')"),
        ("(b'authorization', b'Bearer eyJa.b.c')", "(b'authorization', b'Bearer [redacted]')"),
        ("link http://x/reset-password?token=Zq9", "link http://x/reset-password?token=[redacted]"),
        ("new_password=hunter22&next=/", "new_password=[redacted]&next=/"),
        ("postgresql://app:pw@db:5432/seatlock", "postgresql://app:[redacted]@db:5432/seatlock"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig in text", "jwt [redacted] in text"),
        ("seats [1, 2] are taken", "seats [1, 2] are taken"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert logs.redact(text) == expected


def record(msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("seatlock.test", logging.WARNING, __file__, 1, msg, args, None)
    made.__dict__.update(extra)
    return made


def test_the_filter_redacts_message_arguments_and_extra_fields() -> None:
    line = record("url %s", "/ws/1?token=abc", path="/x?refresh_token=r", user_id=7)
    assert logs.Redact().filter(line)
    formatted = orjson.loads(logs.JsonFormatter().format(line))
    assert formatted["message"] == "url /ws/1?token=[redacted]"
    assert formatted["path"] == "/x?refresh_token=[redacted]"
    assert formatted["user_id"] == 7
    assert formatted["level"] == "WARNING" and formatted["logger"] == "seatlock.test"


def test_text_lines_name_the_process_and_the_request() -> None:
    line = logs.TextFormatter().format(record("hello %s", "there", request_id="r-1"))
    assert line.endswith(f" WARNING [{os.getpid()}] seatlock.test: hello there request_id=r-1")


def test_a_text_line_stays_one_line_and_a_traceback_keeps_its_lines() -> None:
    made = record("500 on %s", "GET /x\n2026-12-07 ERROR forged\x00", request_id="r\r1")
    try:
        raise ValueError("boom")
    except ValueError:
        made.exc_info = sys.exc_info()
    first, *traceback = logs.TextFormatter().format(made).splitlines()
    assert first.endswith(r"500 on GET /x\n2026-12-07 ERROR forged\x00")
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == r"ValueError: boom request_id=r\r1"


def test_the_access_log_can_be_turned_off() -> None:
    on = logs.log_config(Settings(), background=False)["loggers"][logs.ACCESS_LOGGER]
    off = logs.log_config(Settings(access_log=False), background=False)
    assert on["level"] == "NOTSET"
    assert off["loggers"][logs.ACCESS_LOGGER]["level"] > logging.CRITICAL


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="SEATLOCK_LOG_FORMAT"):
        Settings.from_env({"SEATLOCK_LOG_FORMAT": "xml"})


def test_the_background_handler_writes_from_a_thread_and_drains_on_close(
    capfd: pytest.CaptureFixture[str],
) -> None:
    handler = logs.BackgroundHandler("json")
    try:
        for n in range(100):
            handler.handle(record("line %d token=%s", n, "s3cret"))
    finally:
        handler.close()
    written = [orjson.loads(x) for x in capfd.readouterr().err.splitlines()]
    assert [x["message"] for x in written] == [f"line {n} token=[redacted]" for n in range(100)]


class Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


def test_lines_are_written_whole_in_writes_a_pipe_keeps_atomic() -> None:
    stream = Writes()
    writer = logs.LineWriter(stream)
    writer.setFormatter(logging.Formatter("%(message)s"))
    for n in range(200):
        writer.handle(record("%03d %s", n, "x" * 96))
    writer.flush()
    assert 1 < len(stream.writes) < 200
    assert all(len(w) <= PIPE_BUF and w.endswith("\n") for w in stream.writes)
    assert "".join(stream.writes).splitlines() == [f"{n:03d} {'x' * 96}" for n in range(200)]


def test_an_access_record_is_formatted_from_its_fields_with_free_text_redacted() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3In0.c2lnbmF0dXJl"
    fields = {
        "method": "GET",
        "route": "/api/v1/movies/",
        "path": f"/api/v1/movies/?q={jwt}",
        "status": 200,
        "duration_ms": 1.34,
        "user_id": None,
        "request_id": f"Bearer {jwt}",
        "client": "127.0.0.1:5000",
    }
    record = AccessRecord.of(dict(fields))
    assert logs.Redact().filter(record)
    text = logs.TextFormatter().format(record)
    assert text.endswith(
        '127.0.0.1:5000 "GET /api/v1/movies/?q=[redacted]" 200 1.3ms user - '
        "request_id=Bearer [redacted]"
    )
    assert " INFO [" in text and "] seatlock.access: " in text
    line = orjson.loads(logs.JsonFormatter().format(record))
    assert line["path"] == "/api/v1/movies/?q=[redacted]"
    assert line["request_id"] == "Bearer [redacted]" and "access" not in line
    assert line["message"] == text.split("seatlock.access: ")[1].split(" request_id=")[0]
    assert jwt not in text and jwt not in orjson.dumps(line).decode()

    closed = AccessRecord.of({**fields, "method": "WEBSOCKET", "event": "closed", "status": None})
    assert '"WEBSOCKET /api/v1/movies/?q=' in closed.getMessage()
    assert closed.getMessage().endswith(" closed - 1.3ms user -")


def test_an_access_record_is_rendered_off_the_event_loop_from_its_raw_values() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3In0.c2lnbmF0dXJl"
    capture = Capture()
    scope = {
        "path": "/api/v1/movies/",
        "query_string": f"page=2&token={jwt}".encode(),
        "client": ("10.0.0.7", 4242),
        "user_id": 7,
        "request_id": "r-1",
    }
    ACCESS.addHandler(capture)
    level, ACCESS.level = ACCESS.level, logging.INFO
    try:
        write_access(scope, "GET", "/api/v1/movies/", 200, 0.0123456)
    finally:
        ACCESS.removeHandler(capture)
        ACCESS.level = level
    (record,) = capture.records
    assert logging.Formatter("%(message)s").format(record) == (
        '10.0.0.7:4242 "GET /api/v1/movies/?page=2&token=[redacted]" 200 12.3ms user 7'
    )
    line = orjson.loads(logs.JsonFormatter().format(record))
    assert line["path"] == "/api/v1/movies/?page=2&token=[redacted]"
    assert (line["client"], line["duration_ms"], line["user_id"]) == ("10.0.0.7:4242", 12.346, 7)
    assert "access_raw" not in line and jwt not in orjson.dumps(line).decode()
    assert record.process == os.getpid() and record.__dict__["access_raw"] is None


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
