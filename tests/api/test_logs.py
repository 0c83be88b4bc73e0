"""The request middleware (api/observe.py) over real HTTP: request ids, the request metrics by
route template, the access log's fields, and the lines that matter (refusals, 503s)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api import errors as api_errors
from api.observe import ACCESS, MAX_ID_CHARS, Observe
from seatlock.errors import Unavailable
from seatlock.metrics import flush_tallies
from seatlock.server import logs
from tests import factories as make
from tests.support import RESERVE, Account, LiveServer, make_account, reserve, watch

AVAILABILITY = "/api/v1/seat-reservations/screening/{screening_id:int}/availability"


async def test_a_request_id_is_made_when_the_client_sends_none(client: httpx.AsyncClient) -> None:
    first = await client.get("/health/live")
    second = await client.get("/health/live")
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(0 < len(i) <= MAX_ID_CHARS for i in ids)
    assert ids[0] != ids[1]


async def test_the_clients_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/movies/", headers={"X-Request-ID": "frontend-42/abc"})
    assert r.headers["x-request-id"] == "frontend-42/abc"


@pytest.mark.parametrize(
    "sent", [b"x" * (MAX_ID_CHARS + 1), b"tab\there", "caf\u00e9".encode(), b""]
)
async def test_an_unusable_request_id_is_replaced(client: httpx.AsyncClient, sent: bytes) -> None:
    r = await client.get("/health/live", headers={"X-Request-ID": sent})
    echoed = r.headers["x-request-id"]
    assert echoed and echoed.encode() != sent and echoed.isprintable() and echoed.isascii()


async def test_preflights_404s_and_405s_get_a_request_id(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        RESERVE,
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["x-request-id"]
    missing = await client.get("/api/v1/no-such-route", headers={"X-Request-ID": "r-404"})
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "r-404"
    wrong = await client.delete(RESERVE)
    assert wrong.status_code == 405 and wrong.headers["x-request-id"]


def requests_counted(route: str, method: str, status: int) -> float:
    flush_tallies()  # counted in the process, added to the metrics every second
    labels = {"route": route, "method": method, "status": str(status)}
    return REGISTRY.get_sample_value("seatlock_http_requests_total", labels) or 0.0


async def test_requests_are_counted_by_route_template_not_path(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    show = await make.show(db, 4)
    before = requests_counted(AVAILABILITY, "GET", 200)
    unmatched = requests_counted("unmatched", "GET", 404)
    path = f"/api/v1/seat-reservations/screening/{show.id}/availability"
    for _ in range(3):
        assert (await client.get(path)).status_code == 200
    assert (await client.get("/api/v1/nothing/here")).status_code == 404
    assert requests_counted(AVAILABILITY, "GET", 200) == before + 3
    assert requests_counted("unmatched", "GET", 404) == unmatched + 1
    assert requests_counted(path, "GET", 200) == 0.0  # never the raw path
    timed = REGISTRY.get_sample_value(
        "seatlock_http_request_duration_seconds_count", {"route": AVAILABILITY, "method": "GET"}
    )
    assert timed is not None and timed >= 3


async def test_an_access_line_names_route_status_duration_user_and_request_id(
    client: httpx.AsyncClient, db: asyncpg.Connection, server: LiveServer
) -> None:
    show = await make.show(db, 4)
    alice = await make_account(client, "alice@example.com", "Alice Example")
    with access_log() as lines:
        r = await client.post(
            RESERVE,
            json={"screening_id": show.id, "seat_ids": show.seat_ids[:1]},
            headers={**alice.headers, "X-Request-ID": "hold-1"},
        )
        assert r.status_code == 201
        await client.get(f"/api/v1/movies/?page=1&token={alice.token}")
        ws = await watch(server, show.id, alice.token)
        await ws.close()
        await settle(lines, 4)
    hold, listing, accepted, closed = lines[-4:]
    assert hold["route"] == RESERVE and hold["path"] == RESERVE
    assert hold["method"] == "POST" and hold["status"] == 201
    assert hold["user_id"] == alice.id and hold["request_id"] == "hold-1"
    assert isinstance(hold["duration_ms"], float) and hold["duration_ms"] > 0
    assert hold["client"].startswith("127.0.0.1:")
    assert hold["logger"] == "seatlock.access" and hold["level"] == "INFO"
    assert listing["path"] == "/api/v1/movies/?page=1&token=[redacted]"
    assert alice.token not in orjson.dumps(lines).decode()
    assert (accepted["event"], accepted["status"], closed["event"]) == ("accepted", 101, "closed")
    assert closed["user_id"] == alice.id and closed["status"] == 1000
    assert accepted["path"].endswith("?token=[redacted]")


async def test_a_path_cannot_forge_a_line_of_the_text_log(client: httpx.AsyncClient) -> None:
    forged = "2026-12-07 18:50:00,000 ERROR [999] api.errors: 500 on FORGED"
    with access_log(logs.TextFormatter()) as lines:
        r = await client.get(f"/api/v1/movies/x%0A{forged}%0D%00%E2%80%A8")
        assert r.status_code == 404
        for _ in range(100):
            if lines.stream.getvalue():
                break
            await asyncio.sleep(0.02)
    [line] = lines.stream.getvalue().splitlines()
    assert f"/api/v1/movies/x\\n{forged}\\r\\x00\\u2028" in line
    assert " INFO [" in line and line.endswith(r.headers["x-request-id"])


@contextlib.contextmanager
def access_log(formatter: logging.Formatter | None = None) -> Iterator[Lines]:
    """The access log's lines as JSON objects (``Lines.read``), captured while the block runs
    (or, given another ``formatter``, its text in ``Lines.stream``)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter or logs.JsonFormatter())
    handler.addFilter(logs.Redact())
    level = ACCESS.level
    ACCESS.addHandler(handler)
    ACCESS.setLevel(logging.INFO)
    try:
        yield Lines(stream)
    finally:
        ACCESS.removeHandler(handler)
        ACCESS.setLevel(level)


class Lines(list[dict[str, Any]]):
    def __init__(self, stream: io.StringIO) -> None:
        super().__init__()
        self.stream = stream

    def read(self) -> None:
        self[:] = [orjson.loads(x) for x in self.stream.getvalue().splitlines()]


async def settle(lines: Lines, count: int) -> None:
    """Until ``count`` lines are written (a WebSocket's close line follows its close)."""
    for _ in range(100):
        lines.read()
        if len(lines) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(lines)} access lines, expected {count}: {lines}")


async def test_a_refused_hold_is_logged_at_debug(
    client: httpx.AsyncClient, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    show = await make.show(db, 4)
    alice: Account = await make_account(client, "alice@example.com", "Alice Example")
    bob = await make_account(client, "bob@example.com", "Bob Example")
    assert (await reserve(client, alice, show, show.seat_ids[:1])).status_code == 201
    caplog.set_level(logging.DEBUG, logger="seatlock.services.holds")
    assert (await reserve(client, bob, show, show.seat_ids[:1])).status_code == 409
    refused = [r for r in caplog.records if r.name == "seatlock.services.holds"]
    assert len(refused) == 1 and refused[0].levelno == logging.DEBUG
    assert refused[0].getMessage().startswith("hold refused (SeatsUnavailable)")


def test_503s_of_a_dependency_down_are_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_errors, "_WARNED", {})
    clock = [100.0]
    monkeypatch.setattr(api_errors.time, "monotonic", lambda: clock[0])
    caplog.set_level(logging.WARNING, logger="api.errors")

    def down() -> Unavailable:
        exc = Unavailable("Seat service temporarily unavailable")
        exc.__cause__ = RedisConnectionError("Connection refused")
        return exc

    for _ in range(50):
        assert api_errors.error_reply(down())[0] == 503
    clock[0] += api_errors.WARN_EVERY_S
    api_errors.error_reply(down())
    lines = [r for r in caplog.records if r.name == "api.errors"]
    assert len(lines) == 2
    assert all(r.levelno == logging.WARNING and r.dependency == "redis" for r in lines)
    assert "49 more" in lines[1].getMessage()


async def test_a_500_is_counted_and_logged_with_its_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("bug")

    app = Starlette(
        routes=[Route("/broken", broken)],
        middleware=[Middleware(Observe)],
        exception_handlers={Exception: api_errors.unexpected},
    )
    before = requests_counted("/broken", "GET", 500)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get("/broken", headers={"X-Request-ID": "boom-1"})
    assert r.status_code == 500 and r.json() == {"detail": "Internal server error"}
    assert requests_counted("/broken", "GET", 500) == before + 1
    [line] = [x for x in caplog.records if x.name == "api.errors"]
    assert line.levelno >= logging.WARNING and line.request_id == "boom-1"
    assert line.exc_info is not None
