"""The bench's part "beyond" in pieces: the best-available loop against a scripted HTTP server,
resumes against a scripted WebSocket server, the CPU read from /proc and the pair's rows. The
whole part runs against a real server in test_bench.py's quick run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from loadtests.beyondbench import pair_rows
from loadtests.loadgen import API, Http, Job, Sample, best_hold_loop, held_seats, resumes
from loadtests.procmem import children_named, tree_cpu_s
from tests.loadtests.test_loadgen import Reply, Scripted, scripted  # noqa: F401 (a fixture)

HELD = {"reservations": [{"seat_id": 41, "id": 1}, {"seat_id": 42, "id": 2}], "minutes": 10}


async def test_the_best_hold_loop_cancels_the_seats_it_was_given(
    scripted: Callable[[Reply], Awaitable[Scripted]],  # noqa: F811
) -> None:
    body = orjson.dumps(HELD)

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        if request.startswith(b"DELETE"):
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            writer.write(
                b"HTTP/1.1 201 Created\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )

    script = await scripted(answer)
    job = Job("best-hold", "127.0.0.1", script.port, 0, 0, tokens=["t0", "t1"])
    job.work = [(7, [1, 2]), (8, [3, 4])]  # the screening of its connection; the seats unused
    http, sample = Http("127.0.0.1", script.port), Sample()
    try:
        await best_hold_loop(job, http, 1, time.perf_counter() + 0.1, sample)
    finally:
        await http.close()
    assert sample.ops > 5 and sample.won == sample.ops and len(sample.steps["cancel"]) == sample.ops
    reserve = http.encode(
        "POST", f"{API}/seat-reservations/reserve-best", {"screening_id": 8, "count": 2}, "t1"
    )
    cancel = http.encode("DELETE", f"{API}/seat-reservations/cancel/8?seat_ids=41,42", None, "t1")
    assert script.requests[: 2 * sample.ops] == [reserve, cancel] * sample.ops
    assert held_seats(body) == b"41,42"


async def test_a_refused_best_hold_is_counted_and_said(
    scripted: Callable[[Reply], Awaitable[Scripted]],  # noqa: F811
) -> None:
    async def full(request: bytes, writer: asyncio.StreamWriter) -> None:
        detail = b'{"detail":"No 2 adjacent seats available"}'
        writer.write(
            b"HTTP/1.1 409 Conflict\r\ncontent-length: %d\r\n\r\n%s" % (len(detail), detail)
        )

    script = await scripted(full)
    job = Job("best-hold", "127.0.0.1", script.port, 0, 0, tokens=["t0"], work=[(7, [])])
    http, sample = Http("127.0.0.1", script.port), Sample()
    try:
        await best_hold_loop(job, http, 0, time.perf_counter() + 0.05, sample)
    finally:
        await http.close()
    assert sample.won == 0 and sample.statuses == {409: sample.ops}
    assert "adjacent" in sample.errors[0] and all(r.startswith(b"POST") for r in script.requests)


@pytest.fixture
async def seat_map_server() -> AsyncIterator[int]:
    """A WebSocket server like the seat-map stream for a screening at version 13 whose log
    keeps the events after version 10: ``?since=10`` is replayed 11..13, ``?since=1`` gets a
    snapshot, no ``since`` the confirmation alone."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"type":"connection_confirmed","screening_id":5}')
        assert ws.request is not None
        since = ws.request.path.partition("since=")[2]
        if since == "10":
            for version in (11, 12, 13):
                await ws.send(orjson.dumps({"type": "seat_update", "version": version}).decode())
        elif since:
            await ws.send('{"type":"seat_snapshot","version":13,"seats":[]}')
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        yield int(server.sockets[0].getsockname()[1])


@pytest.mark.parametrize(("since", "until"), [(None, 0), (10, 13), (1, 0)])
async def test_resumes_are_timed_until_caught_up(
    seat_map_server: int, since: int | None, until: int
) -> None:
    # 1 s: a busy machine made two resumes in 0.2 s, where the check wants a few of each.
    job = Job("resume", "127.0.0.1", seat_map_server, time.time(), 1.0, connections=2)
    job.screening_id, job.since, job.until = 5, since, until
    sample = await resumes(job)
    assert sample.ops > 4 and sample.statuses == {101: sample.ops}
    assert sample.errors == [] and sample.dropped == 0


@pytest.mark.parametrize(("since", "until", "said"), [(1, 13, "a snapshot"), (10, 0, "an event")])
async def test_a_resume_that_is_not_the_one_expected_is_said(
    seat_map_server: int, since: int, until: int, said: str
) -> None:
    job = Job("resume", "127.0.0.1", seat_map_server, time.time(), 0.1, since=since, until=until)
    job.screening_id = 5
    started = time.perf_counter()
    sample = await resumes(job)
    assert sample.errors and all(said in error for error in sample.errors), sample.errors
    assert time.perf_counter() - started < 2  # the connection is dropped, not closed politely


BURN = """import sys, time
sys.stdin.readline()
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print("burnt", flush=True)
time.sleep(30)
"""


def test_the_cpu_of_a_process_tree_includes_its_children() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            before = tree_cpu_s(os.getpid())
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline() == "burnt\n"  # 0.3 s of CPU, and still alive
            assert 0.25 <= tree_cpu_s(os.getpid()) - before < 5
        finally:
            child.kill()


def test_the_bench_finds_its_services_among_its_children_by_command_name() -> None:
    with subprocess.Popen(["sleep", "30"]) as child:
        try:
            assert child.pid in children_named(os.getpid(), "sleep")
            assert child.pid not in children_named(os.getpid(), "redis-server")
        finally:
            child.kill()


def test_best_available_is_reported_as_a_ratio_to_the_won_holds() -> None:
    plain, best = Sample(), Sample()
    for n, sample in ((40, plain), (30, best)):
        for _ in range(n):
            sample.record(201, time.perf_counter())
            sample.won += 1
    base, ratio = pair_rows("via HTTP", plain, best, 2.0, "cancel")
    assert (base.value, base.ratio, base.target, base.met) == (
        "20 holds/s (40 of 40 won)",
        "1.00 (base)",
        "",
        None,
    )
    assert (ratio.value, ratio.ratio, ratio.target) == ("15 holds/s (30 of 30 won)", "0.75", "")
    assert pair_rows("x", Sample(), best, 2.0, "cancel")[1].ratio == "n/a"
