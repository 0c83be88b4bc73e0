"""WebSocket seat updates over a real socket: confirmation, events, privacy, refusals, stats."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import websockets
from redis.asyncio import Redis
from starlette.types import Message
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed

import api.websockets
from seatlock.engine import watchers
from seatlock.engine.events import CLOSE, QUEUE_SIZE, Hub
from seatlock.engine.transport import open_transport
from seatlock.services.container import Services
from tests import factories as make
from tests.support import Account, LiveServer, reserve, wait_for_status, watch


def server_services(server: LiveServer) -> Services:
    app: Any = server._server.config.app
    services: Services = app.state.services
    return services


async def closed_with(server: LiveServer, path: str) -> int:
    """The close code the server answers a connection to ``path`` with."""
    async with websockets.connect(f"{server.ws_url}{path}") as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code is not None
        return ws.close_code


async def test_single_seat_update_shows_the_holder_only_to_the_holder(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    user: Account,
    other_user: Account,
) -> None:
    show = await make.show(db, 3)
    seat = show.seat_ids[0]
    mine, theirs, anonymous = (
        await watch(server, show.id, user.token),
        await watch(server, show.id, other_user.token),
        await watch(server, show.id),
    )
    try:
        assert (await reserve(client, user, show, [seat])).status_code == 201
        for ws, shown in ((mine, user.id), (theirs, None), (anonymous, None)):
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 3))
            assert message["type"] == "seat_update"
            assert message["seat_id"] == seat
            assert message["status"] == "reserved"
            assert message["reserved_by"] == shown
            assert message["expires_at"].endswith("Z")
            assert message["timestamp"].endswith("Z")
    finally:
        for ws in (mine, theirs, anonymous):
            await ws.close()


async def test_bulk_update_names_the_owner_only_to_the_owner(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    user: Account,
    other_user: Account,
) -> None:
    show = await make.show(db, 3)
    seats = show.seat_ids[:2]
    mine, theirs = await watch(server, show.id, user.token), await watch(server, show.id)
    try:
        body = {"screening_id": show.id, "seat_ids": seats, "payment_id": "pay_ws"}
        r = await client.post("/api/v1/tickets/book", json=body, headers=user.headers)
        assert r.status_code == 201
        own = await wait_for_status(mine, seats, "booked")
        public = await wait_for_status(theirs, seats, "booked")
        assert {u.get("booked_by") for u in own.values()} == {user.id}
        assert all("booked_by" not in u and "reserved_by" not in u for u in public.values())
    finally:
        await mine.close()
        await theirs.close()


async def test_refusals_close_with_the_right_code(
    client: httpx.AsyncClient, db: asyncpg.Connection, server: LiveServer, user: Account
) -> None:
    show = await make.show(db, 1)
    assert await closed_with(server, f"/ws/screenings/{show.id}?token=garbage") == 1008
    assert await closed_with(server, "/ws/screenings/999999999") == 4404
    assert await closed_with(server, "/ws/screenings/" + "9" * 5000) == 4404  # past int()'s limit
    assert (await client.post("/api/v1/auth/logout", headers=user.headers)).status_code in (
        200,
        204,
    )
    assert await closed_with(server, f"/ws/screenings/{show.id}?token={user.token}") == 1008


async def test_an_empty_token_is_no_token(db: asyncpg.Connection, server: LiveServer) -> None:
    """What a page building the URL for a signed-out visitor sends: watched anonymously."""
    show = await make.show(db, 1)
    async with websockets.connect(f"{server.ws_url}/ws/screenings/{show.id}?token=") as ws:
        first = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["type"] == "connection_confirmed"


async def test_stats_count_this_process_watchers(
    client: httpx.AsyncClient, db: asyncpg.Connection, server: LiveServer
) -> None:
    show = await make.show(db, 1)
    sockets = [await watch(server, show.id) for _ in range(3)]
    try:
        stats = (await client.get("/ws/stats")).json()
        assert stats == {
            "total_connections": 3,
            "active_screenings": [show.id],
            "screening_details": {str(show.id): 3},
        }
    finally:
        for ws in sockets:
            await ws.close()
    await asyncio.sleep(0.2)
    assert (await client.get("/ws/stats")).json()["total_connections"] == 0


async def test_ping_gets_a_pong(db: asyncpg.Connection, server: LiveServer) -> None:
    show = await make.show(db, 1)
    ws = await watch(server, show.id)
    try:
        await ws.send("ping")
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 3))["type"] == "pong"
    finally:
        await ws.close()


async def test_a_slow_client_is_dropped_and_others_keep_going(redis: Redis) -> None:
    hub = Hub(open_transport("fast", redis))  # never connects: events are dispatched by hand
    slow, fast = hub.join(7, None), hub.join(7, 3)
    event = {
        "screening_id": 7,
        "ts": 0,
        "seats": [{"seat_id": 1, "status": "reserved", "user_id": 3, "expires_at": 1000}],
    }
    for _ in range(QUEUE_SIZE + 1):
        hub.dispatch(orjson.dumps(event))
        hub.fan_out()
        if not fast.queue.empty():
            fast.queue.get_nowait()  # the fast client keeps up
    assert slow.dropped and not fast.dropped
    assert slow.queue.get_nowait() == CLOSE  # its sender closes the socket
    hub.dispatch(orjson.dumps(event))
    await asyncio.sleep(0)  # the end of the loop's turn
    assert orjson.loads(fast.queue.get_nowait())["reserved_by"] == 3


async def test_idle_connection_gets_heartbeats(
    db: asyncpg.Connection, server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.websockets, "HEARTBEAT_S", 0.2)
    show = await make.show(db, 1)
    ws = await watch(server, show.id)
    try:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 3))["type"] == "ping"
    finally:
        await ws.close()


async def test_after_a_cut_subscription_watchers_get_the_whole_map_then_events(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    server: LiveServer,
    user: Account,
) -> None:
    show = await make.show(db, 2)
    first, second = show.seat_ids
    ws = await watch(server, show.id)
    try:
        assert (await reserve(client, user, show, [first])).status_code == 201
        await wait_for_status(ws, [first], "reserved")
        assert await redis.client_kill_filter(_type="pubsub") >= 1
        # Changes made while the hub was away are not lost: a full snapshot follows the cut.
        message = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert message["type"] == "bulk_seat_update"
        statuses = {u["seat_id"]: u["status"] for u in message["updates"]}
        assert statuses == {first: "reserved", second: "available"}
        assert all("reserved_by" not in u for u in message["updates"])
        assert (await reserve(client, user, show, [second])).status_code == 201
        await wait_for_status(ws, [second], "reserved")
    finally:
        await ws.close()


async def test_ticket_cancel_reaches_watchers(
    client: httpx.AsyncClient, db: asyncpg.Connection, server: LiveServer, user: Account
) -> None:
    show = await make.show(db, 1)
    seat = show.seat_ids[0]
    body = {"screening_id": show.id, "seat_ids": [seat], "payment_id": "pay_ws_cancel"}
    ticket = (await client.post("/api/v1/tickets/book", json=body, headers=user.headers)).json()
    ws = await watch(server, show.id)
    try:
        r = await client.delete(f"/api/v1/tickets/{ticket[0]['id']}", headers=user.headers)
        assert r.status_code == 200
        await wait_for_status(ws, [seat], "available")
    finally:
        await ws.close()


async def test_the_server_writes_updates_straight_to_the_socket(
    client: httpx.AsyncClient, db: asyncpg.Connection, server: LiveServer, user: Account
) -> None:
    show = await make.show(db, 1)
    ws = await watch(server, show.id)
    try:
        hub: Hub = server_services(server).hub
        (watcher,) = hub._rooms[show.id]
        assert watcher.socket is not None  # no sender task wakes per event
        assert (await reserve(client, user, show, show.seat_ids)).status_code == 201
        await wait_for_status(ws, show.seat_ids, "reserved")
        assert watcher.room.sent_at > 0 and not watcher.dropped
    finally:
        await ws.close()


async def test_other_servers_keep_the_queued_path() -> None:
    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        return None

    websocket = WebSocket({"type": "websocket", "path": "/", "headers": []}, receive, send)
    assert api.websockets.direct_socket(websocket) is None


async def test_a_directly_written_watcher_has_no_queue_and_a_slow_one_is_closed(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    user: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    show = await make.show(db, 1)
    ws = await watch(server, show.id)
    try:
        (watcher,) = server_services(server).hub._rooms[show.id]
        assert watcher.socket is not None and watcher.queue is None
        # Every direct write now finds the socket "too full": the next update drops the client,
        # and with no sender task of its own it is still told to come back later.
        monkeypatch.setattr(watchers, "MAX_BUFFERED", -1)
        assert (await reserve(client, user, show, show.seat_ids)).status_code == 201
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1013 and watcher.dropped
    finally:
        await ws.close()


def stalled_watcher(server: LiveServer, screening_id: int) -> socket.socket:
    """A WebSocket client that reads its 101 and nothing after: its receive window shuts, as
    a phone's does when the app is suspended with the socket open."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws/screenings/{screening_id} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_a_client_that_stopped_reading_is_reset_once_dropped(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    user: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It takes neither its updates nor the close: its connection was kept, with megabytes
    unsent, for as long as its TCP stack answered (for ever)."""
    show = await make.show(db, 2)
    monkeypatch.setattr(watchers, "MAX_BUFFERED", 16_384)
    monkeypatch.setattr(api.websockets, "CLOSE_SLOW_S", 0.5)
    sock = stalled_watcher(server, show.id)
    try:
        hub = server_services(server).hub
        for _ in range(100):
            if hub._rooms.get(show.id):
                break
            await asyncio.sleep(0.02)
        (watcher,) = hub._rooms[show.id]
        assert watcher.socket is not None
        server_socket = watcher.socket.get_extra_info("socket")
        server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # fills sooner
        for _ in range(2000):  # seat changes until the hub drops it (a few hundred)
            if watcher.dropped:
                break
            assert (await reserve(client, user, show, show.seat_ids)).status_code == 201
            cancel = f"/api/v1/seat-reservations/cancel/{show.id}"
            r = await client.delete(cancel, headers=user.headers)
            assert r.status_code == 204
        assert watcher.dropped
        for _ in range(150):  # reset CLOSE_SLOW_S after the drop
            if server_socket.fileno() == -1:
                break
            await asyncio.sleep(0.02)
        assert server_socket.fileno() == -1, "the server still keeps the connection"
        sock.settimeout(5)
        with pytest.raises(ConnectionResetError):
            while sock.recv(65536):
                pass
    finally:
        sock.close()
