"""The server's transport: a response's head leaves with its body, every byte in order; and the
uvicorn internals it relies on are still there (these tests fail, loudly, on a uvicorn that
changed them, where ``seatlock serve`` would fall back to uvicorn's own protocol)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import pickle
import re
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
import uvicorn
import websockets
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.protocol import Protocol

import api.websockets
from seatlock.server import serving
from seatlock.server.serving import (
    GATHER_BYTES,
    HTTP_PARTS,
    MAX_HEAD_BYTES,
    HeadWithBody,
    HttpProtocol,
    WebSocketProtocol,
    http_protocol,
    websocket_options,
)
from tests import factories as make
from tests.support import LiveServer

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recorder:
    """Records what reaches the socket (a stand-in for the loop's transport)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.gathered: list[tuple[bytes, ...]] = []  # what went through writelines, as given
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def writelines(self, chunks: tuple[bytes, ...]) -> None:
        self.gathered.append(chunks)
        self.sent.append(b"".join(chunks))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_head_and_body_leave_in_one_write() -> None:
    real = Recorder()
    transport = HeadWithBody(real)  # type: ignore[arg-type]
    transport.write(HEAD)
    assert real.sent == [] and transport.get_write_buffer_size() == len(HEAD)
    transport.write(b"{}")
    assert real.sent == [HEAD + b"{}"]
    await asyncio.sleep(0)
    assert real.sent == [HEAD + b"{}"]  # nothing left to flush


async def test_a_big_body_leaves_with_its_head_in_one_send_without_a_copy() -> None:
    """A seat map's body is handed over as it is, beside the held head (uvloop: one writev);
    a small body is joined to its head."""
    real = Recorder()
    transport = HeadWithBody(real)  # type: ignore[arg-type]
    body = b"[" + b"0," * (GATHER_BYTES // 2) + b"0]"
    transport.write(HEAD)
    transport.write(body)
    assert real.sent == [HEAD + body]
    (chunks,) = real.gathered
    assert chunks[0] == HEAD and chunks[1] is body
    transport.write(HEAD)
    transport.write(b"{}")
    assert real.sent[1:] == [HEAD + b"{}"] and len(real.gathered) == 1


async def test_a_head_without_body_leaves_at_the_end_of_the_iteration() -> None:
    real = Recorder()
    transport = HeadWithBody(real)  # type: ignore[arg-type]
    transport.write(HEAD)  # e.g. a 204, or a HEAD request
    await asyncio.sleep(0)
    assert real.sent == [HEAD]


async def test_other_writes_are_not_held_and_keep_their_order() -> None:
    real = Recorder()
    transport = HeadWithBody(real)  # type: ignore[arg-type]
    transport.write(b"\x81\x02{}")  # a WebSocket frame
    assert real.sent == [b"\x81\x02{}"]
    transport.write(HEAD)
    transport.close()  # a held head is sent before the socket closes
    assert real.sent == [b"\x81\x02{}", HEAD] and real.closed
    assert transport.get_extra_info("peername") == "info:peername"


async def test_keep_alive_responses_arrive_whole_and_in_order(server: LiveServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        request = b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n"
        big = b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n"  # a body past GATHER_BYTES
        writer.write(request + big + request)  # pipelined: three heads and bodies on one connection
        for asked in (request, big, request):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 OK")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await asyncio.wait_for(reader.readexactly(length), 5)
            if asked is big:
                assert length >= GATHER_BYTES and orjson.loads(body)["openapi"]
            else:
                assert body == b'{"status":"alive"}'
    finally:
        writer.close()
        await writer.wait_closed()


class Socket(Recorder):
    """A stand-in for a connection's transport, as uvicorn's protocol asks it."""

    def get_extra_info(self, name: str) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class SmallJson:
    """An ASGI app answering ``{}``, as our endpoints do: head and body in one iteration."""

    def __init__(self) -> None:
        self.answered = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})
        self.answered.set()


def test_the_installed_uvicorn_gets_our_protocol() -> None:
    protocol = http_protocol(3.5)
    assert isinstance(protocol, functools.partial) and protocol.func is HttpProtocol
    assert protocol.keywords == {"read_timeout_s": 3.5}
    assert pickle.loads(pickle.dumps(protocol)).func is HttpProtocol  # to spawned workers
    assert issubclass(HttpProtocol, HttpToolsProtocol)
    assert all(hasattr(HttpToolsProtocol, name) for name in HTTP_PARTS)


async def test_uvicorns_protocol_sends_a_whole_response_in_one_write() -> None:
    app = SmallJson()
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    protocol = HttpProtocol(config=config, server_state=ServerState(), app_state={})
    socket = Socket()
    protocol.connection_made(socket)  # type: ignore[arg-type]
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.wait_for(app.answered.wait(), 5)
    await asyncio.sleep(0.01)  # every write of the response is done by now
    (response,) = socket.sent
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"\r\n\r\n{}")
    protocol.connection_lost(None)


def test_a_changed_uvicorn_falls_back_to_its_own_protocol(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(serving, "IMPORTED", False)
    with caplog.at_level(logging.WARNING, logger=serving.__name__):
        assert http_protocol() == "auto"
    assert "uvicorn's own protocol" in caplog.text
    monkeypatch.setattr(serving, "IMPORTED", True)
    assert http_protocol() != "auto"
    # A method HttpProtocol extends gone from uvicorn's protocol: uvicorn's own protocol.
    monkeypatch.setattr(serving, "HTTP_PARTS", (*serving.HTTP_PARTS, "on_chunk_header_gone"))
    assert http_protocol() == "auto"


def test_uvicorns_protocol_still_does_what_refusals_rely_on() -> None:
    """HttpProtocol measures a head from what uvicorn's parser callbacks keep, stops the parser
    with an error (uvicorn answers it through send_400_response), and queues a refusal in
    uvicorn's pipeline, which it starts with ``cycle.run_asgi(app)`` once a response is complete;
    a request it refuses in its handler's place is told the client left, as uvicorn does."""
    ours = {
        n for n in vars(HttpProtocol) if not n.startswith("__") and hasattr(HttpToolsProtocol, n)
    }
    assert ours <= set(HTTP_PARTS)  # every uvicorn method ours extends is checked at start-up

    def source(method: Any) -> str:
        return re.sub(r"\s+", " ", inspect.getsource(method))

    assert "self.url += url" in source(HttpToolsProtocol.on_url)
    assert "self.headers.append((name, value))" in source(HttpToolsProtocol.on_header)
    assert 'self.url = b""' in source(HttpToolsProtocol.on_message_begin)
    feed = source(HttpToolsProtocol.data_received)
    assert "except httptools.HttpParserError:" in feed and "self.send_400_response(msg)" in feed
    queued = source(HttpToolsProtocol.on_headers_complete)
    assert "self.pipeline.appendleft((self.cycle, app))" in queued
    turn = source(HttpToolsProtocol.on_response_complete)
    assert "cycle, app = self.pipeline.pop() self._start_asgi_task(cycle, app)" in turn
    assert "cycle.run_asgi(app)" in source(HttpToolsProtocol._start_asgi_task)
    assert "if self.disconnected: return" in source(RequestResponseCycle.send)
    for callback in (HttpToolsProtocol.on_body, HttpToolsProtocol.on_message_complete):
        assert "self.cycle.response_complete" in source(callback)


def big_head(size: int, path: bytes = b"/") -> bytes:
    """A GET whose request line and headers are ``size`` bytes, most of them one header."""
    start = b"GET " + path + b" HTTP/1.1\r\nHost: t\r\nX-Big: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
OVER = big_head(100 * 1024)
SHARED = big_head(30 * 1024) + big_head(MAX_HEAD_BYTES - 500)  # two heads under the limit


class Peer(Socket):
    """A connection's transport that ends its side as asyncio's does: no write after it."""

    eof = False
    late = 0  # writes tried after the end

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def write(self, data: bytes) -> None:
        if self.eof:
            self.late += 1
            raise RuntimeError("Cannot call write() after write_eof()")
        super().write(data)


class Counted(SmallJson):
    """``SmallJson``, answering after a turn of the loop, that counts the requests it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen += 1
        await asyncio.sleep(0.001)  # still answering when the next bytes are parsed
        await super().__call__(scope, receive, send)


def responses(sent: bytes) -> list[tuple[int, bytes]]:
    """The status and body of each response in ``sent``, in order."""
    found = []
    while sent:
        head, _, rest = sent.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: (\d+)", head)
        assert length is not None, head
        end = int(length.group(1))
        found.append((int(head.split(b" ", 2)[1]), rest[:end]))
        sent = rest[end:]
    return found


async def serve_reads(reads: list[bytes]) -> tuple[Peer, Counted]:
    """Our protocol on a stand-in socket given ``reads``, one ``data_received`` each, as the
    loop would read them, until its answers are written."""
    app = Counted()
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    protocol = HttpProtocol(config=config, server_state=ServerState(), app_state={})
    peer = Peer()
    protocol.connection_made(peer)  # type: ignore[arg-type]
    for data in reads:
        protocol.data_received(data)
        await asyncio.sleep(0)
    for _ in range(100):  # until every answer is out (a refusal ends our side)
        await asyncio.sleep(0.01)
        if peer.eof or peer.closed:
            break
    protocol.connection_lost(None)
    return peer, app


REFUSED_431 = (
    431,
    orjson.dumps({"detail": f"Request line and headers over {MAX_HEAD_BYTES} bytes"}),
)
ANSWERED = (200, b"{}")


@pytest.mark.parametrize(
    ("reads", "answers"),
    [
        ([OVER], [REFUSED_431]),  # whole in one read
        ([OVER[: len(OVER) // 2], OVER[len(OVER) // 2 :]], [REFUSED_431]),  # whole in the second
        ([big_head(40 * 1024) * 2 + OVER], [ANSWERED, ANSWERED, REFUSED_431]),  # pipelined
        # The second head's first read holds the first request: only the reads after it count
        # surely (it is under the limit: 34 KB of it in the first read, the rest in two more).
        ([SHARED[: 64 * 1024], SHARED[64 * 1024 : 84 * 1024], SHARED[84 * 1024 :]], [ANSWERED] * 2),
    ],
    ids=["one-read", "two-reads", "pipelined", "first-read-shared"],
)
async def test_a_head_is_measured_however_it_is_read(
    reads: list[bytes], answers: list[tuple[int, bytes]]
) -> None:
    """A head over MAX_HEAD_BYTES is refused whether it comes whole or in pieces, and its
    app never sees it; the heads under it on the same connection are served."""
    peer, app = await serve_reads(reads)
    assert responses(b"".join(peer.sent)) == answers
    assert app.seen == answers.count(ANSWERED)


NOT_HTTP = (400, b'{"detail":"Invalid HTTP request received."}')
COMING = big_head(200 * 1024)


@pytest.mark.parametrize(
    ("bad", "refusal"),
    [
        ([b"NOT HTTP AT ALL\r\n\r\n"], NOT_HTTP),
        ([OVER], REFUSED_431),
        ([COMING[: 100 * 1024], COMING[100 * 1024 : 170 * 1024]], REFUSED_431),  # still coming
        # A body that is not HTTP (a chunk's size): its request is refused, and never begins.
        ([b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], NOT_HTTP),
    ],
    ids=["not-http", "head-too-big", "head-still-coming", "body-not-http"],
)
async def test_requests_before_a_refused_one_are_answered_first(
    bad: list[bytes], refusal: tuple[int, bytes]
) -> None:
    """Pipelined in one read with what is refused, each answered in order, then the refusal,
    then our side ends: no handler writes after it (asyncio's transport raises, a 500 logged)."""
    peer, app = await serve_reads([GET + GET + bad[0], *bad[1:]])
    assert responses(b"".join(peer.sent)) == [ANSWERED, ANSWERED, refusal]
    assert peer.eof and peer.late == 0 and app.seen == 2


async def test_a_body_that_is_not_http_is_refused_in_its_handlers_place() -> None:
    """Its handler, begun, is told the client left (what it answers is not sent): the 400 is
    the one answer, and nothing is written after it."""
    post = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n"
    peer, app = await serve_reads([post, b"zz\r\n"])
    assert responses(b"".join(peer.sent)) == [NOT_HTTP]
    assert peer.eof and peer.late == 0 and app.seen == 1


async def exchange(server: LiveServer, *pieces: bytes) -> list[tuple[int, bytes]]:
    """What the server answers to ``pieces`` (each a send of its own) until it ends its side."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        return responses(await asyncio.wait_for(reader.read(), 10))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.parametrize("pieces", [1, 2])
async def test_a_head_over_the_limit_gets_a_431_in_one_send_or_two(
    server: LiveServer, pieces: int
) -> None:
    head = big_head(100 * 1024 if pieces == 1 else 120 * 1024, b"/api/v1/movies/")
    size = len(head) // pieces
    assert await exchange(server, *(head[i : i + size] for i in range(0, len(head), size))) == [
        REFUSED_431
    ]


@pytest.mark.parametrize(
    ("bad", "refusal"),
    [(b"NOT HTTP AT ALL\r\n\r\n", NOT_HTTP), (big_head(200 * 1024), REFUSED_431)],
    ids=["not-http", "head-too-big"],
)
async def test_a_request_sent_with_bad_bytes_gets_its_answer_first(
    server: LiveServer, bad: bytes, refusal: tuple[int, bytes]
) -> None:
    movies = b"GET /api/v1/movies/ HTTP/1.1\r\nHost: x\r\n\r\n"
    (answer, refused) = await exchange(server, movies + bad)
    assert answer[0] == 200 and isinstance(orjson.loads(answer[1]), dict | list)
    assert refused == refusal


async def test_a_login_sent_with_bad_bytes_is_answered_and_logs_no_error(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Its handler writes once the 400 is decided: it is sent first, and no 500 is logged."""
    body = orjson.dumps({"email": f"{uuid.uuid4().hex}@example.com", "password": "not-it-1234"})
    login = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    uvicorn_errors = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate
    uvicorn_errors.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING):
            answers = await exchange(server, login + b"NOT HTTP AT ALL\r\n\r\n")
            await asyncio.sleep(0.2)  # anything the handler would log after its answer
    finally:
        uvicorn_errors.removeHandler(caplog.handler)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    (answer, refused) = answers
    assert answer[0] == 401 and "detail" in orjson.loads(answer[1])
    assert refused == NOT_HTTP


def test_websockets_are_served_by_the_sansio_protocol_without_deflate() -> None:
    """What seatlock serve and the tests' server pass uvicorn: the protocol the direct writer
    knows (api/websockets.py), named, and no permessage-deflate unless the setting asks."""
    config = uvicorn.Config(SmallJson(), **websocket_options(False))
    config.load()
    assert config.ws_protocol_class is WebSocketProtocol
    assert issubclass(WebSocketProtocol, WebSocketsSansIOProtocol)
    assert api.websockets._sansio_protocol() is WebSocketsSansIOProtocol
    assert config.ws_per_message_deflate is False
    assert config.ws_max_size == serving.WS_MAX_MESSAGE_BYTES
    assert websocket_options(True)["ws_per_message_deflate"] is True


async def test_a_client_offering_deflate_gets_none_by_default(
    db: asyncpg.Connection, server: LiveServer
) -> None:
    show = await make.show(db, 1)
    url = f"{server.ws_url}/ws/screenings/{show.id}"
    async with websockets.connect(url, compression="deflate") as ws:  # as browsers offer it
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert orjson.loads(await ws.recv())["type"] == "connection_confirmed"


async def test_the_setting_turns_deflate_on(db: asyncpg.Connection, make_server: Any) -> None:
    live = make_server(ws_per_message_deflate=True)
    show = await make.show(db, 1)
    async with websockets.connect(f"{live.ws_url}/ws/screenings/{show.id}") as ws:
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        assert orjson.loads(await ws.recv())["type"] == "connection_confirmed"


def test_uvicorns_websocket_protocol_uses_only_what_ours_replaces() -> None:
    """WebSocketProtocol swaps uvicorn's queue and write event for lean ones: a uvicorn that
    calls anything else on them fails here, not on a live connection."""
    source = inspect.getsource(WebSocketsSansIOProtocol)
    for name, methods in serving.WS_LEAN_PARTS.items():
        used = set(re.findall(rf"self\.{name}\.(\w+)", source))
        assert used and used <= set(methods), (name, used)
    assert source.count("self.start_keepalive()") == 1  # once: after the handshake's response
    # Keepalive: uvicorn's ping timer is armed in schedule_ping alone, the pong timer after a ping.
    assert source.count("self.ping_timer = self.loop.call_later") == 1
    assert "self.ping_timer = self.loop.call_later" in inspect.getsource(
        WebSocketsSansIOProtocol.schedule_ping
    )
    assert set(serving.WS_KEEPALIVE) <= set(dir(WebSocketsSansIOProtocol))


class Chat:
    """An ASGI WebSocket app: accepts, echoes one message, closes."""

    def __init__(self) -> None:
        self.done = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"]})
        await send({"type": "websocket.close", "code": 1000})
        self.done.set()


async def test_our_websocket_protocol_serves_a_connection_and_keeps_no_handshake() -> None:
    app = Chat()
    config = uvicorn.Config(app, lifespan="off", log_level="warning", **websocket_options(False))
    protocol = WebSocketProtocol(config=config, server_state=ServerState(), app_state={})
    socket = Socket()
    protocol.connection_made(socket)  # type: ignore[arg-type]
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    protocol.data_received(
        f"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await asyncio.sleep(0.01)
    assert socket.sent[0].startswith(b"HTTP/1.1 101")
    assert protocol.request is None and protocol.response is None  # type: ignore[comparison-overlap]
    # websockets' frame parser was restarted: it no longer holds the handshake's request.
    assert protocol.conn.parser.gi_code is Protocol.parse.__code__
    protocol.data_received(b"\x81")  # half a frame header: the parser is mid-frame now
    assert not serving.restart_parser(protocol.conn)
    protocol.data_received(b"\x82\x00\x00\x00\x00hi")  # the rest: a masked text frame "hi"
    await asyncio.wait_for(app.done.wait(), 5)
    assert b"\x81\x02hi" in b"".join(socket.sent[1:])
    protocol.connection_lost(None)


def handshake(protocol: WebSocketProtocol) -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    protocol.data_received(
        f"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )


async def test_keepalive_pings_come_from_one_sweep_not_a_timer_per_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Idle(Chat):  # accepts, then waits for the client to go
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            await receive()

    monkeypatch.setattr(serving, "SWEEPS", 2)
    options = websocket_options(False)
    config = uvicorn.Config(
        Idle(), lifespan="off", log_level="warning", ws_ping_interval=0.1, **options
    )
    protocols, sockets = [], []
    for _ in range(2):
        protocol = WebSocketProtocol(config=config, server_state=ServerState(), app_state={})
        socket = Socket()
        protocol.connection_made(socket)  # type: ignore[arg-type]
        handshake(protocol)
        protocols.append(protocol)
        sockets.append(socket)
    await asyncio.sleep(0.01)
    assert all(p.ping_timer is None for p in protocols)  # no timer of its own
    assert not any(b"\x89" in b"".join(s.sent[1:]) for s in sockets)  # not due yet
    for _ in range(50):
        await asyncio.sleep(0.02)
        if all(len(s.sent) > 1 for s in sockets):
            break
    for protocol, socket in zip(protocols, sockets, strict=True):
        ping = socket.sent[1]
        assert ping[0] == 0x89 and ping[2:] == protocol.pending_ping_payload
        assert protocol.ping_timer is None and protocol.pong_timer is not None
        # The client's pong (masked, key 0): uvicorn takes it; the next ping is the sweep's.
        protocol.data_received(b"\x8a\x84\x00\x00\x00\x00" + ping[2:])
        assert protocol.pending_ping_payload is None and protocol.pong_timer is None
        assert protocol.ping_timer is None
    keepalive = serving._keepalives[asyncio.get_running_loop()]
    for protocol in protocols:
        protocol.connection_lost(None)
    assert not keepalive._protocols
    await asyncio.sleep(0.15)  # the sweep finds nobody and goes
    assert asyncio.get_running_loop() not in serving._keepalives


async def test_direct_frames_skip_the_head_proxy_once_a_held_head_is_sent() -> None:
    socket = Recorder()
    proxy = HeadWithBody(socket)  # type: ignore[arg-type]
    proxy.write(HEAD)  # held back, as a 101 may be
    assert api.websockets._socket_transport(proxy) is socket
    assert socket.sent == [HEAD]  # sent first: frames written to the socket follow it
    assert api.websockets._socket_transport(socket) is socket  # no proxy: as it is
