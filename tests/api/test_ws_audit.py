"""Seat-map WebSockets against hostile and unlucky clients: what a client may send, and a
client that stopped reading when its watch ends (seatlock/server/serving.py WebSocketProtocol,
api/websockets.py ``_refuse``)."""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
import socket
import threading
import time
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.server import ServerProtocol

import api.websockets
from seatlock.server import serving
from tests import factories as make
from tests.support import Account, LiveServer, reserve, wait_for_status, watch

PING, CONT, TEXT, CLOSE = 0x9, 0x0, 0x1, 0x8


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """One masked frame, as a client sends it (RFC 6455 5.2); ``payload`` under 126 bytes."""
    mask = os.urandom(4)
    head = bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload)))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def raw_watcher(server: LiveServer, path: str, *, rcvbuf: int = 0) -> socket.socket:
    """A WebSocket client on a plain socket, past its 101 (``rcvbuf``: a receive window that
    shuts soon, as a client's that stopped reading)."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def server_frames(sock: socket.socket, within: float) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of every frame the server sends until its close frame (included) or
    the end of the connection; fails if neither comes ``within`` seconds."""
    frames: list[tuple[int, bytes]] = []
    data = b""
    deadline = time.monotonic() + within
    while True:
        while len(data) >= 2:
            size, start = data[1] & 0x7F, 2
            if size == 126:
                size, start = int.from_bytes(data[2:4], "big"), 4
            elif size == 127:
                size, start = int.from_bytes(data[2:10], "big"), 10
            if len(data) < start + size:
                break
            frames.append((data[0] & 0x0F, data[start : start + size]))
            data = data[start + size :]
            if frames[-1][0] == CLOSE:
                return frames
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"still open after {within} s, {len(frames)} frames read")
        except ConnectionResetError:
            return frames
        if not chunk:
            return frames
        data += chunk


def closed_with(frames: list[tuple[int, bytes]]) -> tuple[int, str]:
    opcode, payload = frames[-1]
    assert opcode == CLOSE, frames[-3:]
    return int.from_bytes(payload[:2], "big"), payload[2:].decode()


def server_connections(server: LiveServer) -> list[Any]:
    return [p for p in server._server.server_state.connections if hasattr(p, "conn")]


async def test_a_client_flooding_pings_it_never_reads_is_cut_off_and_others_keep_their_updates(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    user: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn stops reading after each message until the app took it, but not after a ping:
    such a flood held the worker's loop for seconds at a time (others waited tens of seconds
    for an answer) and grew its pongs unsent without bound (55 MB in 3 s). It reads nothing,
    not even its close: it is reset WS_CUT_OFF_S later."""
    monkeypatch.setattr(serving, "WS_CUT_OFF_S", 0.5)
    show = await make.show(db, 1)
    other = await watch(server, show.id)
    flooder = raw_watcher(server, f"/ws/screenings/{show.id}", rcvbuf=4096)
    cut_off: list[float] = []
    started = time.monotonic()

    def flood() -> None:
        pings = client_frame(PING, b"x" * 16) * 4000
        flooder.settimeout(1)
        while time.monotonic() - started < 8:
            try:
                flooder.sendall(pings)
            except OSError:  # reset, or nothing read for a second: closed on its side
                cut_off.append(time.monotonic() - started)
                return

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        await asyncio.sleep(0.5)
        sent = time.monotonic()
        assert (await reserve(client, user, show, show.seat_ids)).status_code == 201
        await wait_for_status(other, show.seat_ids, "reserved", within=2)
        assert time.monotonic() - sent < 2
        await asyncio.to_thread(thread.join, 10)
        assert cut_off and cut_off[0] < 3, "the flooding client was never cut off"
        for _ in range(100):  # the server let go of it
            if len(server_connections(server)) == 1:
                break
            await asyncio.sleep(0.05)
        assert len(server_connections(server)) == 1
        unsent = [p.transport.get_write_buffer_size() for p in server_connections(server)]
        assert unsent == [0]
    finally:
        flooder.close()
        await other.close()


async def test_a_client_that_sends_too_many_messages_is_closed_with_1008(
    db: asyncpg.Connection, server: LiveServer
) -> None:
    """A watcher sends a ping now and then: WS_MAX_FRAMES in WS_FRAMES_WINDOW_S are answered,
    more are refused with a close the client can read."""
    show = await make.show(db, 1)
    sock = raw_watcher(server, f"/ws/screenings/{show.id}")
    try:
        assert server_frames_until(sock, 1)[0][0] == TEXT  # connection_confirmed
        allowed = serving.WS_MAX_FRAMES - 10
        sock.sendall(client_frame(TEXT, b"ping") * allowed)
        pongs = server_frames_until(sock, allowed)
        assert {orjson.loads(payload)["type"] for _, payload in pongs} == {"pong"}
        sock.sendall(client_frame(TEXT, b"ping") * 20)
        assert closed_with(server_frames(sock, 3)) == serving.WS_TOO_MANY_FRAMES
    finally:
        sock.close()


def server_frames_until(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` whole frames the server sent (read byte-exact: nothing after them is taken)."""
    frames = []
    sock.settimeout(3)
    for _ in range(count):
        head = recv_exactly(sock, 2)
        size = head[1] & 0x7F
        if size == 126:
            size = int.from_bytes(recv_exactly(sock, 2), "big")
        frames.append((head[0] & 0x0F, recv_exactly(sock, size)))
    return frames


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the server closed the connection"
        data += chunk
    return data


async def test_a_message_that_never_ends_is_refused_with_1009(
    db: asyncpg.Connection, server: LiveServer
) -> None:
    """Empty pieces never reach the 64 KB message limit: uvicorn kept a reference to each, and
    a client sending them grew its worker without end (2.3 million held after 18 MB sent)."""
    show = await make.show(db, 1)
    sock = raw_watcher(server, f"/ws/screenings/{show.id}")
    try:
        assert server_frames_until(sock, 1)[0][0] == TEXT  # connection_confirmed
        pieces = serving.WS_MAX_PIECES + 8  # well within WS_MAX_FRAMES
        sock.sendall(client_frame(TEXT, b"p", fin=False) + client_frame(CONT, fin=False) * pieces)
        assert closed_with(server_frames(sock, 3)) == serving.WS_TOO_MANY_PIECES
    finally:
        sock.close()


async def test_a_message_in_a_few_pieces_is_read(
    db: asyncpg.Connection, server: LiveServer
) -> None:
    show = await make.show(db, 1)
    sock = raw_watcher(server, f"/ws/screenings/{show.id}")
    try:
        assert server_frames_until(sock, 1)[0][0] == TEXT  # connection_confirmed
        sock.sendall(
            client_frame(TEXT, b"pi", fin=False)
            + client_frame(CONT, b"", fin=False)
            + client_frame(CONT, b"ng")
        )
        ((opcode, payload),) = server_frames_until(sock, 1)
        assert opcode == TEXT and orjson.loads(payload)["type"] == "pong"
    finally:
        sock.close()


async def test_a_stalled_watcher_whose_session_is_revoked_is_reset(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    user: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its close (1008) waited for room to write, which a client that reads nothing never makes:
    the connection, and what it had not read, were kept for as long as its TCP stack answered.
    The same holds for the watchers of a deleted screening (4404)."""
    monkeypatch.setattr(api.websockets, "CLOSE_SLOW_S", 0.5)
    show = await make.show(db, 2)
    sock = raw_watcher(server, f"/ws/screenings/{show.id}?token={user.token}", rcvbuf=2048)
    try:
        app: Any = server._server.config.app
        hub = app.state.services.hub
        for _ in range(100):
            if hub._rooms.get(show.id):
                break
            await asyncio.sleep(0.02)
        (watcher,) = hub._rooms[show.id]
        server_socket = watcher.socket.get_extra_info("socket")
        server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # fills sooner
        # Updates until the server holds more than its transport takes at once (writes paused)
        # but less than a watcher is dropped for (MAX_BUFFERED): still watching.
        for _ in range(1000):
            if watcher.socket.get_write_buffer_size() > 100_000:
                break
            assert (await reserve(client, user, show, show.seat_ids)).status_code == 201
            cancel = f"/api/v1/seat-reservations/cancel/{show.id}"
            assert (await client.delete(cancel, headers=user.headers)).status_code == 204
        assert watcher.socket.get_write_buffer_size() > 100_000 and not watcher.dropped
        r = await client.post("/api/v1/auth/logout", headers=user.headers)
        assert r.status_code in (200, 204)
        for _ in range(150):
            if server_socket.fileno() == -1:
                break
            await asyncio.sleep(0.02)
        assert server_socket.fileno() == -1, "the server still keeps the connection"
    finally:
        sock.close()


def test_what_the_budget_relies_on_in_uvicorn_and_websockets() -> None:
    """WebSocketProtocol counts the frames a read brought (websockets' ``events``, which
    uvicorn's ``handle_events`` takes with ``events_received``) and the pieces of a message
    (uvicorn's ``frames``, grown by ``handle_cont`` only); ``handle_parser_exception`` closes
    it: a release that changes any of this fails here, not in front of a flood."""
    assert "events" in vars(ServerProtocol())
    source = inspect.getsource(WebSocketsSansIOProtocol.handle_events)
    assert "self.conn.events_received()" in source and "self.handle_cont(event)" in source
    assert "self.frames.append" in inspect.getsource(WebSocketsSansIOProtocol.handle_cont)
    closing = inspect.getsource(WebSocketsSansIOProtocol.handle_parser_exception)
    assert "self.transport.close()" in closing and "websocket.disconnect" in closing
