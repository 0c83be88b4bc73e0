"""The soak tool runs end to end: its own servers, every kind of request it makes answered
without a 5xx, watchers coming and going, its samples and growth printed, and no seat the
reconcilers had to repair."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import signal
import sys
import time
from typing import Any

import orjson
import pytest

from loadtests import soak
from loadtests.benchseed import Seeded
from tests.loadtests.tools import ROOT, run_tool, without_settings
from tests.support import processes_mentioning, scratch_dir


@pytest.mark.timeout(150)
async def test_the_soak_runs_and_reports() -> None:
    code, text = await run_tool(
        sys.executable,
        *("-m", "loadtests.soak", "--minutes", "0.25", "--every", "5", "--clients", "4"),
        *("--watchers", "4", "--users", "50", "--screenings", "3"),
        timeout_s=140,
    )
    assert code == 0, text
    for step in ("hold 201", "cancel 204", "book 201", "cancel ticket 200", "seat map 200"):
        assert re.search(rf"\b{step}: [\d,]+", text), (step, text)
    assert re.search(r"watchers connected: [1-9][\d,]*; dropped connections: 0", text), text
    samples = re.findall(r"^ +\d+ +[\d,]+ +[\d.]+ / [\d.]+ ", text, re.MULTILINE)
    assert len(samples) >= 3, text  # at the start, every 5 s, at the end; two workers each
    assert len(re.findall(r"^  worker \d+: RSS [+-][\d.]+ MB", text, re.MULTILINE)) == 2, text
    assert "repaired (Redis disagreed with PostgreSQL): 0" in text, text


class Answers:
    """Stands for the tool's HTTP client: answers each request with the next (status, body)."""

    def __init__(self, *answers: tuple[int, bytes]) -> None:
        self.answers = list(answers)

    def head(self, method: str, path: str, token: str = "") -> bytes:
        return f"{method} {path} HTTP/1.1\r\n".encode()

    async def send(self, request: bytes) -> tuple[int, bytes]:
        return self.answers.pop(0)


async def test_an_unexpected_refusal_keeps_its_first_bodies() -> None:
    """A refusal the workload makes on purpose is only counted; any other keeps what it said."""
    seeded: Any = Seeded([], [], 0, 0, [], 0, [], [], [])
    day = soak.Day(argparse.Namespace(), 0, seeded, {})
    refusals = [(409, b'{"detail":"taken"}'), (401, b"{}")]
    books = [(409, b'{"detail":"Reservation %d expired"}' % i) for i in range(soak.KEPT_BODIES + 2)]
    http: Any = Answers(*refusals, *books)
    await day.call(http, "hold", "POST", "/x")
    await day.call(http, "wrong password", "POST", "/x")
    for _ in books:
        await day.call(http, "book", "POST", "/x")
    assert day.out.statuses == {"hold 409": 1, "wrong password 401": 1, "book 409": 7}
    assert list(day.out.bodies) == ["book 409"]
    assert day.out.bodies["book 409"] == [body for _, body in books[: soak.KEPT_BODIES]]


async def test_a_booking_refused_before_its_hold_could_lapse_fails_the_run() -> None:
    """A booking's 409 is owed once its hold's expires_at has passed (the hold may have lapsed on
    the way); before, the server refused what it had just granted, and the run fails."""
    seeded: Any = Seeded([], [], 0, 0, [], 0, [], [], [])
    day = soak.Day(argparse.Namespace(), 0, seeded, {})
    refused = (409, b'{"detail":"Reservation 7 expired"}')
    http: Any = Answers(refused, refused)
    now = time.time()
    await day.call(http, "book", "POST", "/x", explain=soak.lapsed(now - 0.001))
    assert day.out.statuses == {"book 409 (hold lapsed)": 1}
    assert (day.out.unexpected, day.out.bodies) == (0, {})
    await day.call(http, "book", "POST", "/x", explain=soak.lapsed(now + 60))
    assert day.out.statuses == {"book 409 (hold lapsed)": 1, "book 409": 1}
    assert (day.out.unexpected, day.out.bodies) == (1, {"book 409": [refused[1]]})
    day.out.samples.append(soak.Sample(0, 2, {}, {}, 0, 0, 0))
    assert soak.report(day.out, argparse.Namespace(minutes=1)) == 1


def test_the_expiry_a_booking_is_judged_by_is_its_holds_earliest() -> None:
    answer = orjson.dumps(
        {
            "reservations": [
                {"seat_id": 1, "expires_at": "2026-12-07T10:00:05.250000Z"},
                {"seat_id": 2, "expires_at": "2026-12-07T10:00:04.500000Z"},
            ]
        }
    )
    expected = dt.datetime(2026, 12, 7, 10, 0, 4, 500_000, tzinfo=dt.UTC).timestamp()
    assert soak.earliest_expiry(answer) == expected


def test_no_two_clients_act_for_one_user() -> None:
    users = list(range(100, 117))
    shares = soak.shares(users, 5)
    assert len(shares) == 5 and all(shares)
    assert sorted(u for share in shares for u in share) == users


@pytest.mark.timeout(120)
async def test_a_soak_stopped_by_sigterm_takes_its_servers_and_data_with_it() -> None:
    """``timeout`` or ``kill`` stop a run as Ctrl-C does: PostgreSQL, Redis and the server
    stopped, the scratch directory gone (it was left behind in the temporary directory)."""
    with scratch_dir("seatlock-term-") as tmp:
        tmp.chmod(0o711)  # the embedded PostgreSQL's account works below it
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "loadtests.soak", "--minutes", "5", "--every", "1"),
            *("--clients", "2", "--users", "20", "--watchers", "2", "--screenings", "3"),
            cwd=ROOT,
            env=without_settings() | {"TMPDIR": str(tmp)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert proc.stdout is not None
        seen = b""
        while b"t (s)" not in seen:  # the run has begun: servers up, clients going
            line = await asyncio.wait_for(proc.stdout.readline(), 90)
            assert line, seen.decode(errors="replace")
            seen += line
        assert [p.name[:14] for p in tmp.iterdir()] == ["seatlock-soak-"]
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
        text = (seen + rest).decode(errors="replace")
        assert proc.returncode == 128 + signal.SIGTERM, text
        assert list(tmp.iterdir()) == [], text
        assert processes_mentioning(tmp) == [], text
        assert "Traceback" not in text, text
