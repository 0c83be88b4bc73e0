"""Slow clients (seatlock/server/serving.py ``Stalls``): a connection whose client owes the server
a request, the rest of a request head, the next piece of a body or the reading of its answers
for longer than SEATLOCK_REQUEST_READ_TIMEOUT_SECONDS is closed; clients that keep sending or
reading, handlers, WebSockets and idle keep-alive connections between requests are left alone.
And what the HTTP protocol answers itself: a head over MAX_HEAD_BYTES, bytes that are not HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import time
from pathlib import Path

import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY

from seatlock.metrics import flush_tallies
from seatlock.process import MAX_OPEN_FILES
from seatlock.server import serving as server_protocols
from seatlock.server.serving import MAX_HEAD_BYTES
from seatlock.settings import Settings
from tests import factories as make
from tests.support import LiveServer, backends_of, scratch_dir, serving, watch

TIMEOUT_S = 0.5
# A deadline passes at most a sweep (TIMEOUT_S / 4) late; the rest is a loaded machine's slack.
CLOSED_WITHIN_S = 5.0
# The server's deadlines are read off its loop's clock, which stands still during a turn of the
# loop: one set late in a turn falls due that much early (80 us, seen once in 30 runs).
LOOP_CLOCK_S = 0.01
LOGIN = b"/api/v1/auth/login"
PHONE_BUFFER = 64 * 1024
LOW_SOFT_LIMIT = 1024  # many systems' default for a shell
BODY = orjson.dumps({"email": "nobody@example.com", "password": "not-the-password"})


@pytest.fixture
def slow_server(make_server: object) -> LiveServer:
    return make_server(request_read_timeout_seconds=TIMEOUT_S)  # type: ignore[operator]


def login_answers(status: int) -> float:
    """Logins counted with ``status`` (seatlock_http_requests_total, flushed from the tally)."""
    flush_tallies()
    labels = {"route": LOGIN.decode(), "method": "POST", "status": str(status)}
    return REGISTRY.get_sample_value("seatlock_http_requests_total", labels) or 0.0


def closed_count(stage: str) -> float:
    value = REGISTRY.get_sample_value("seatlock_http_slow_clients_total", {"stage": stage})
    return value or 0.0


async def connect(
    server: LiveServer, receive_buffer: int = 0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection; ``receive_buffer``: its socket's SO_RCVBUF, as a phone's would be, instead
    of loopback's megabytes (TCP acknowledges what the client reads in steps of half of it)."""
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    return await asyncio.open_connection(sock=sock)


async def read_to_end(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed."""
    data = await asyncio.wait_for(reader.read(), CLOSED_WITHIN_S)
    return data, time.monotonic()


def post_head(length: int) -> bytes:
    return (
        b"POST " + LOGIN + b" HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % length
    )


async def test_a_client_that_sends_nothing_is_disconnected(slow_server: LiveServer) -> None:
    before = closed_count("idle")
    started = time.monotonic()  # before the server has the connection: its deadline runs after
    reader, writer = await connect(slow_server)
    data, closed = await read_to_end(reader)
    assert data == b""  # nothing begun, nothing to answer
    assert closed - started >= TIMEOUT_S - LOOP_CLOCK_S
    assert closed_count("idle") == before + 1
    writer.close()


async def test_a_request_head_sent_a_line_at_a_time_gets_a_408(slow_server: LiveServer) -> None:
    """Each line arrives well within the timeout, but the head as a whole does not: its deadline
    runs from its first byte."""
    before = closed_count("head")
    reader, writer = await connect(slow_server)
    started = time.monotonic()  # before the head's first byte leaves
    writer.write(b"GET /health/live HTTP/1.1\r\nHost: t\r\n")

    async def trickle() -> None:
        for n in range(100):
            await asyncio.sleep(TIMEOUT_S / 5)
            writer.write(b"x-more-%d: 1\r\n" % n)

    sender = asyncio.create_task(trickle())
    try:
        data, closed = await read_to_end(reader)
    finally:
        sender.cancel()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"\r\nconnection: close" in head and b"\r\ncontent-type: application/json" in head
    assert orjson.loads(body) == {"detail": "Request not received in time"}
    assert TIMEOUT_S - LOOP_CLOCK_S <= closed - started < CLOSED_WITHIN_S
    assert closed_count("head") == before + 1
    writer.close()


async def test_a_body_that_keeps_coming_is_read_whole(slow_server: LiveServer) -> None:
    """A body sent a byte at a time over several timeouts: each piece sets a new deadline."""
    reader, writer = await connect(slow_server)
    started = time.monotonic()
    writer.write(post_head(len(BODY)))
    for byte in BODY:
        await asyncio.sleep(TIMEOUT_S / 8)
        writer.write(bytes([byte]))
    assert time.monotonic() - started > 3 * TIMEOUT_S
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSED_WITHIN_S)
    assert head.startswith(b"HTTP/1.1 401 "), head  # the login was read and refused
    writer.close()


async def test_a_body_that_stops_halfway_gets_a_408(slow_server: LiveServer) -> None:
    """Its handler waits for the rest: the 408 is the one answer, the handler's own (a 422 or
    401 for what came of the body) is not sent after it."""
    before = closed_count("body")
    counted = login_answers(408)
    reader, writer = await connect(slow_server)
    started = time.monotonic()
    writer.write(post_head(len(BODY)) + BODY[:10])
    data, closed = await read_to_end(reader)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), data
    assert b"\r\nconnection: close" in head
    assert orjson.loads(body) == {"detail": "Request not received in time"}  # and nothing else
    assert TIMEOUT_S - LOOP_CLOCK_S <= closed - started < CLOSED_WITHIN_S
    assert closed_count("body") == before + 1
    for _ in range(200):  # the request is counted (and logged) as the 408 it got, once its
        if login_answers(408) == counted + 1:  # handler has ended
            break
        await asyncio.sleep(0.01)
    assert login_answers(408) == counted + 1
    writer.close()


async def test_a_body_that_stops_after_the_answer_began_gets_no_408(
    slow_server: LiveServer,
) -> None:
    """A handler that answers before reading its body (the login's answer does not wait for
    the unread rest here: a 404 route does) has its answer, and no 408 is put across it."""
    reader, writer = await connect(slow_server)
    writer.write(
        b"POST /api/v1/no-such-route HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
        b"content-length: 100\r\n\r\n{"
    )
    data, _ = await read_to_end(reader)
    assert data.startswith(b"HTTP/1.1 404 "), data
    assert b" 408 " not in data
    writer.close()


async def test_requests_spread_over_a_keep_alive_connection_are_answered(
    slow_server: LiveServer,
) -> None:
    """Between two requests the client owes nothing (uvicorn's keep-alive timeout applies)."""
    reader, writer = await connect(slow_server)
    for _ in range(4):
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSED_WITHIN_S)
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        await asyncio.sleep(TIMEOUT_S * 0.75)  # 3 timeouts in all, less than one keep-alive
    writer.close()


def pipelined(count: int) -> bytes:
    """``count`` requests of a big answer at once: several MB, more than loopback's socket
    buffers hold, so the rest waits in the server's transport for the client to read."""
    return b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n" * count


async def test_a_client_that_stops_reading_its_answers_is_disconnected(
    slow_server: LiveServer,
) -> None:
    """Cut off without reading what the server had buffered for it (a close that waited for
    that would keep the connection, and its handler, for as long as the client does not)."""
    before = closed_count("read")
    reader, writer = await connect(slow_server, receive_buffer=PHONE_BUFFER)
    writer.write(pipelined(60))
    for _ in range(200):  # up to 10 s, reading nothing meanwhile
        if closed_count("read") != before:
            break
        await asyncio.sleep(0.05)
    assert closed_count("read") == before + 1
    received = 0
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(64 * 1024), CLOSED_WITHIN_S):
            received += len(chunk)
    assert received < 1_000_000  # what its own socket held, not the megabytes queued for it
    writer.close()


async def test_a_client_that_reads_slowly_keeps_its_connection(slow_server: LiveServer) -> None:
    """A client reading ~600 KB/s keeps the server's transport full for several timeouts (the
    kernel wakes it only once half of the megabytes it queued are sent): each deadline finds
    the client has read some since the last, so it is not cut off. It reads its socket itself:
    a StreamReader's own buffer would hide its first reads from the server."""
    before = closed_count("read")
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", slow_server.port))
    try:
        await loop.sock_sendall(sock, pipelined(60))
        received, started = 0, time.monotonic()
        while time.monotonic() - started < 5 * TIMEOUT_S:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 16 * 1024), CLOSED_WITHIN_S)
            assert chunk, f"closed after {received} bytes read slowly"
            received += len(chunk)
            await asyncio.sleep(0.025)
        assert closed_count("read") == before
    finally:
        sock.close()


async def test_a_websocket_outlives_the_timeout(
    db: asyncpg.Connection, slow_server: LiveServer
) -> None:
    show = await make.show(db, 1)
    ws = await watch(slow_server, show.id)
    try:
        # The HTTP protocol it began with owes nothing once it handed the socket over (a
        # watcher's memory: it is not kept until its deadline).
        assert sum(map(len, server_protocols._stalls.values())) == 0
        await asyncio.sleep(4 * TIMEOUT_S)
        await ws.send("ping")
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 3))["type"] == "pong"
    finally:
        await ws.close()


def open_files_soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open files limit for {pid}")


def test_seatlock_serve_raises_the_open_files_limit_and_cuts_slow_clients(
    base_settings: Settings,
) -> None:
    """A shell's usual soft limit of 1024 open files would stop each worker near a thousand
    connections: serve raises it to the hard limit for itself and its workers. Its workers
    close slow clients after the timeout given."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= LOW_SOFT_LIMIT:
        pytest.skip(f"the hard limit of open files is {hard}: nothing to raise")
    expected = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)

    with (
        scratch_dir("seatlock-slow-") as data_dir,
        serving(
            data_dir,
            started=2,
            workers=2,
            open_files=LOW_SOFT_LIMIT,
            log_level="info",
            request_read_timeout_seconds=TIMEOUT_S,
            **backends_of(base_settings),
        ) as served,
    ):
        children = served.children()  # the workers, and multiprocessing's resource tracker
        assert len(children) >= 2
        for pid in [served.proc.pid, *children]:
            assert open_files_soft_limit(pid) == expected
        assert f"soft limit raised from {LOW_SOFT_LIMIT} to {expected}" in served.log.read_text()

        async def slow_heads() -> list[bytes]:
            async def one() -> bytes:
                reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
                writer.write(b"GET /health/live HTTP/1.1\r\nHost: t\r\n")
                data, _ = await read_to_end(reader)
                writer.close()
                return data

            return await asyncio.gather(*(one() for _ in range(4)))

        for data in asyncio.run(slow_heads()):
            assert data.startswith(b"HTTP/1.1 408 "), data


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, object]]:
    """The head and the JSON body of the one answer before the server closes the connection."""
    data, _ = await read_to_end(reader)
    head, _, body = data.partition(b"\r\n\r\n")
    return head, orjson.loads(body)


async def test_a_request_head_over_64_kb_gets_a_431_at_once(server: LiveServer) -> None:
    """Not 20 s later, and without the rest of it read: httptools keeps no limit of its own."""
    for start in (
        b"GET /health/live HTTP/1.1\r\nHost: t\r\nX-Big: ",  # a header that never ends
        b"GET /health/live?q=",  # a request line that never ends
    ):
        before = REGISTRY.get_sample_value("seatlock_http_unread_requests_total", {"status": "431"})
        reader, writer = await connect(server)
        started = time.monotonic()
        writer.write(start + b"a" * (MAX_HEAD_BYTES + 1024))
        head, body = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), head
        assert b"\r\ncontent-type: application/json" in head
        assert body == {"detail": f"Request line and headers over {MAX_HEAD_BYTES} bytes"}
        assert time.monotonic() - started < CLOSED_WITHIN_S
        after = REGISTRY.get_sample_value("seatlock_http_unread_requests_total", {"status": "431"})
        assert after == (before or 0) + 1
        writer.close()


async def test_a_big_head_under_the_limit_is_served(server: LiveServer) -> None:
    reader, writer = await connect(server)
    writer.write(
        b"GET /health/live HTTP/1.1\r\nHost: t\r\nX-Big: "
        + b"a" * (MAX_HEAD_BYTES - 1024)
        + b"\r\nConnection: close\r\n\r\n"
    )
    data, _ = await read_to_end(reader)
    assert data.startswith(b"HTTP/1.1 200 "), data[:100]
    writer.close()


async def test_bytes_that_are_not_http_get_a_json_400(server: LiveServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"HELLO THERE\r\n\r\n")
    head, body = await read_answer(reader)
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), head
    assert b"\r\ncontent-type: application/json" in head
    assert body == {"detail": "Invalid HTTP request received."}
    writer.close()


async def test_a_client_still_sending_its_big_head_reads_the_431(server: LiveServer) -> None:
    """The answer, then our side's end, and the close only after what the client still sends is
    read: a close with input unread is a reset, and the client would see that instead."""
    reader, writer = await connect(server)
    writer.write(b"GET /health/live HTTP/1.1\r\nHost: t\r\nX-Big: ")
    for _ in range(12):  # 192 KB in pieces, well past the limit
        writer.write(b"a" * 16 * 1024)
        await writer.drain()
        await asyncio.sleep(0.01)
    head, body = await read_answer(reader)
    assert head.startswith(b"HTTP/1.1 431 "), head
    assert body == {"detail": f"Request line and headers over {MAX_HEAD_BYTES} bytes"}
    writer.close()
