"""The bench's raw HTTP client against a tiny scripted server: responses split anywhere, chunked
bodies, keep-alive, one reconnect; and the hold loop sends what ``Http.encode`` would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from loadtests import wsclient
from loadtests.loadgen import (
    API,
    Http,
    Job,
    Sample,
    SharedRead,
    browse_loop,
    hold_loop,
    note_shared,
    note_updates,
    pick_range,
    run_job,
    won_hold_loop,
)

Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A server that answers each request with ``reply``; counts connections, keeps requests."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line[15:])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                await self.reply(request, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Reply], Awaitable[Scripted]]]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> Scripted:
        script = Scripted(reply)
        server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
        script.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return script

    yield start
    for server in servers:
        server.close()


async def in_pieces(writer: asyncio.StreamWriter, data: bytes, cuts: list[int]) -> None:
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        writer.write(data[start:end])
        await writer.drain()
        await asyncio.sleep(0.01)


async def test_a_response_split_anywhere_is_read_whole(
    scripted: Callable[[Reply], Awaitable[Scripted]],
) -> None:
    body = b'{"detail": "split"}'
    response = b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n"
    response += b"CONTENT-LENGTH: %d\r\n\r\n%s" % (len(body), body)

    async def reply(request: bytes, writer: asyncio.StreamWriter) -> None:
        await in_pieces(writer, response, [3, 11, len(response) - len(body) - 2, len(response) - 4])

    script = await scripted(reply)
    http = Http("127.0.0.1", script.port)
    try:
        assert await http.call("POST", "/x", {"a": 1}, "tok") == (409, body)
        assert await http.call("GET", "/y") == (409, body)
    finally:
        await http.close()
    assert script.connections == 1  # keep-alive
    host = f"Host: 127.0.0.1:{script.port}\r\n"
    assert script.requests == [
        f"POST /x HTTP/1.1\r\n{host}Authorization: Bearer tok\r\nContent-Type: application/json"
        '\r\nContent-Length: 7\r\n\r\n{"a":1}'.encode(),
        f"GET /y HTTP/1.1\r\n{host}\r\n".encode(),
    ]


async def test_a_chunked_body_is_joined(
    scripted: Callable[[Reply], Awaitable[Scripted]],
) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
    )

    async def reply(request: bytes, writer: asyncio.StreamWriter) -> None:
        await in_pieces(writer, response, [50, 52, 60, len(response) - 3])

    script = await scripted(reply)
    http = Http("127.0.0.1", script.port)
    try:
        assert await http.call("GET", "/a") == (200, b"hello, world")
        assert await http.call("GET", "/b") == (200, b"hello, world")
    finally:
        await http.close()
    assert script.connections == 1


async def test_a_server_that_hung_up_is_called_again_once(
    scripted: Callable[[Reply], Awaitable[Scripted]],
) -> None:
    async def answer_then_hang_up(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        writer.close()

    script = await scripted(answer_then_hang_up)
    http = Http("127.0.0.1", script.port)
    try:
        assert await http.call("DELETE", "/a") == (204, b"")
        await asyncio.sleep(0.05)
        assert await http.call("DELETE", "/b") == (204, b"")
    finally:
        await http.close()
    assert script.connections == 2


async def test_a_server_that_never_answers_fails_after_one_retry(
    scripted: Callable[[Reply], Awaitable[Scripted]],
) -> None:
    async def hang_up(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.close()

    script = await scripted(hang_up)
    http = Http("127.0.0.1", script.port)
    try:
        with pytest.raises((OSError, asyncio.IncompleteReadError)):
            await http.call("GET", "/a")
    finally:
        await http.close()
    assert script.connections == 2


async def test_the_hold_loop_sends_what_encode_would(
    scripted: Callable[[Reply], Awaitable[Scripted]],
) -> None:
    holds = [0]

    async def win_every_other(request: bytes, writer: asyncio.StreamWriter) -> None:
        if request.startswith(b"DELETE"):
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            return
        holds[0] += 1
        if holds[0] % 2:
            writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}")
        else:
            writer.write(b"HTTP/1.1 409 Conflict\r\ncontent-length: 2\r\n\r\n{}")

    script = await scripted(win_every_other)
    seats = list(range(1000, 1100))
    job = Job("hold", "127.0.0.1", script.port, 0, 0, tokens=["t0", "t1"], screening_id=7)
    job.seat_ids = seats
    http, sample = Http("127.0.0.1", script.port), Sample()
    try:
        await hold_loop(job, http, 1, time.perf_counter() + 0.1, sample)
    finally:
        await http.close()
    assert sample.ops > 10 and sample.won > 5 and set(sample.statuses) == {201, 409}
    for n, request in enumerate(script.requests):
        head, _, raw = request.partition(b"\r\n\r\n")
        method, target = head.split(b" ")[:2]
        if method == b"POST":
            body = orjson.loads(raw)
            chosen = body["seat_ids"]
            assert body["screening_id"] == 7 and 1 <= len(chosen) <= 6
            assert chosen == seats[seats.index(chosen[0]) :][: len(chosen)]  # neighbours
            expected = http.encode("POST", f"{API}/seat-reservations/reserve", body, "t1")
        else:  # the cancel of the hold just won
            previous = orjson.loads(script.requests[n - 1].partition(b"\r\n\r\n")[2])
            query = parse_qs(urlsplit(target.decode()).query)
            assert query["seat_ids"] == [",".join(map(str, previous["seat_ids"]))]
            expected = http.encode("DELETE", target.decode(), None, "t1")
            assert target.decode().startswith(f"{API}/seat-reservations/cancel/7?")
        assert request == expected
    assert sum(r.startswith(b"DELETE") for r in script.requests) == sample.won


async def test_a_job_connects_before_its_clock_starts(
    scripted: Callable[[Reply], Awaitable[Scripted]],
) -> None:
    async def ok(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    script = await scripted(ok)
    start_at = time.time() + 0.3
    job = Job("get", "127.0.0.1", script.port, start_at, 0.2, connections=3, path="/x")
    running = asyncio.create_task(run_job(job))
    await asyncio.sleep(0.2)
    assert script.connections == 3 and script.requests == []  # connected, nothing timed yet
    sample = await running
    assert sample.ops > 0 and script.connections == 3


def test_holds_take_1_to_6_neighbouring_seats_around_the_middle() -> None:
    picks = [pick_range(500) for _ in range(30_000)]
    counts = [count for _, count in picks]
    assert set(counts) == {1, 2, 3, 4, 5, 6}
    assert all(4_500 < counts.count(n) < 5_500 for n in range(1, 7))  # evenly
    assert all(0 <= first <= 500 - count for first, count in picks)
    middles = sorted(first for first, _ in picks)
    assert 245 <= middles[len(middles) // 2] <= 255  # the gauss spread around the middle
    assert sum(abs(m - 250) <= 25 for m in middles) > 0.6 * len(middles)  # ~68% within 1 sigma


async def test_the_won_hold_loop_holds_its_own_seats_and_cancels_them(
    scripted: Callable[[Reply], Awaitable[Scripted]],
) -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        if request.startswith(b"DELETE"):
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}")

    script = await scripted(answer)
    job = Job("won-hold", "127.0.0.1", script.port, 0, 0, tokens=["t0", "t1"])
    job.work = [(7, [1, 2]), (8, [3, 4])]
    http, sample = Http("127.0.0.1", script.port), Sample()
    try:
        await won_hold_loop(job, http, 1, time.perf_counter() + 0.1, sample)
    finally:
        await http.close()
    assert sample.ops > 5 and sample.won == sample.ops and len(sample.steps["cancel"]) == sample.ops
    reserve = http.encode(
        "POST", f"{API}/seat-reservations/reserve", {"screening_id": 8, "seat_ids": [3, 4]}, "t1"
    )
    cancel = http.encode("DELETE", f"{API}/seat-reservations/cancel/8?seat_ids=3,4", None, "t1")
    assert script.requests[: 2 * sample.ops] == [reserve, cancel] * sample.ops


async def test_the_browse_loop_revalidates_with_the_etag_it_was_given(
    scripted: Callable[[Reply], Awaitable[Scripted]],
) -> None:
    async def etagged(request: bytes, writer: asyncio.StreamWriter) -> None:
        if b'if-none-match: "v1"' in request.lower():
            writer.write(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n')
        else:
            writer.write(b'HTTP/1.1 200 OK\r\nETag: "v1"\r\nContent-Length: 2\r\n\r\n[]')

    script = await scripted(etagged)
    job = Job("browse", "127.0.0.1", script.port, 0, 0, paths=["/a", "/b"], conditional=True)
    http, sample = Http("127.0.0.1", script.port), Sample()
    try:
        await browse_loop(job, http, 0, time.perf_counter() + 0.1, sample)
        assert sample.ops > 5 and set(sample.statuses) == {304}
        job.conditional, sample = False, Sample()
        await browse_loop(job, http, 0, time.perf_counter() + 0.1, sample)
        assert sample.ops > 5 and set(sample.statuses) == {200}
    finally:
        await http.close()
    paths = {request.split(b" ")[1] for request in script.requests}
    assert paths == {b"/a", b"/b"}


def test_watchers_given_one_read_count_as_each_of_them() -> None:
    """A read many watchers got alike (one Known list) is tallied per read and added up at the
    end: each of its changes seen once per watcher, as late as the last of them got it; the
    same figures as reads noted one by one."""
    job = Job("watch", "127.0.0.1", 1, 0.0, 1.0)

    def update(seat: int, at: str) -> bytes:
        return orjson.dumps({"type": "seat_update", "seat_id": seat, "timestamp": at})

    one, two = update(1, "2026-12-05T12:00:00.000Z"), update(2, "2026-12-05T12:00:00.500Z")
    stamp = 1_796_472_000.0  # 2026-12-05T12:00:00Z
    reads = [(wsclient.Known([one, two]), stamp + 1.0), ([one, two], stamp + 0.75)]
    shared_sample, plain_sample = Sample(), Sample()
    shared: dict[int, SharedRead] = {}
    for raws, received in [reads[0], reads[0], reads[1]]:
        note_updates(job, shared_sample, raws, received, {}, shared)
        note_updates(job, plain_sample, list(raws), received, {})
    assert len(shared) == 1 and shared_sample.events.keys() == {one, two}  # the plain read
    note_shared(shared_sample, shared, {})
    assert shared_sample.events == plain_sample.events
    assert shared_sample.events[one] == (pytest.approx(1000.0), 3)
    assert shared_sample.events[two] == (pytest.approx(500.0), 3)
    assert not shared
