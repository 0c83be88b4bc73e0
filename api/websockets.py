"""WebSocket seat updates: ``/ws/screenings/{id}?token=...`` and the guide's ``/ws/stats``.

A client joins the process's hub before ``connection_confirmed`` is sent, so no change published
after the confirmation is missed. Under uvicorn's websockets protocol, when no middleware wraps
the connection's ``send``, the hub writes seat updates as ready-made frames straight to the
client's transport (see ``direct_writer``); otherwise, and for pongs and heartbeats, a sender task
drains the client's bounded queue (with a ping when idle); the receiving side only watches for
the close and answers pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.auth import principal_from_token
from api.errors import BACKEND_DOWN, WS_TRY_AGAIN_LATER, ws_close_code
from api.routing import MAX_ID, Call, Router
from seatlock.engine.events import (
    CLOSE,
    MAX_BUFFERED,
    FrameWriter,
    Timestamp,
    Watcher,
    encode,
    now_iso,
    text_frame,
)
from seatlock.errors import NotFound, SeatLockError
from seatlock.services.container import Services

logger = logging.getLogger(__name__)

router = Router("WebSockets")
HEARTBEAT_S = 20.0
Clock = Callable[[], int]  # the hub's: ms on Redis's clock, that of hold times
MAX_WRAPPERS = 8  # Starlette wrappers looked through for the server's send


# The messages this module sends (the seat updates are seatlock/engine/events.py's); their types
# are also the JSON Schema of /asyncapi.json (api/asyncapi.py).
class ConnectionConfirmed(msgspec.Struct, tag_field="type", tag="connection_confirmed"):
    """The first message: the client is watching; every change from now on is sent."""

    screening_id: int
    message: str


class Ping(msgspec.Struct, tag_field="type", tag="ping"):
    """The server's heartbeat, sent after 20 s (HEARTBEAT_S) with nothing sent; needs no answer."""

    timestamp: Timestamp


class Pong(msgspec.Struct, tag_field="type", tag="pong"):
    """The answer to a client's ``ping`` (plain text or JSON ``{"type": "ping"}``)."""

    timestamp: Timestamp


class StatsOut(msgspec.Struct):
    total_connections: int
    active_screenings: list[int]
    screening_details: dict[str, int]  # screening id -> watchers


@router.get("/ws/stats", response=StatsOut)
async def stats(call: Call) -> dict[str, Any]:
    """WebSocket connections of every server process, per screening.

    Summed over the entries the processes sharing the Redis keep there (``Hub.service_stats``):
    another process's figures are up to a second old, a dead one's gone within three. Redis down
    answers 503 with Retry-After, as every route does, rather than this process's figures alone
    passed off as the service's (the guide's reply has no field to say it is partial)."""
    return await call.services.hub.service_stats()


async def screening_updates(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    await websocket.accept()
    try:
        screening_id, user_id = await _admit(websocket, services)
    except SeatLockError as exc:
        await websocket.close(code=ws_close_code(exc), reason=exc.detail[:120])
        return
    except BACKEND_DOWN as exc:
        logger.warning("websocket refused, backend unavailable: %r", exc)
        await websocket.close(code=WS_TRY_AGAIN_LATER)
        return
    websocket.scope["user_id"] = user_id  # for the access log (api/observe.py)
    hub = services.hub
    await hub.subscribed(screening_id)  # sharded pub/sub: its channel first, then the join
    write = direct_writer(websocket)
    watcher = hub.join(screening_id, user_id, write)
    try:
        confirmation = _confirmation(screening_id)
        # Written before any await: no event can be dispatched ahead of it.
        if write is None or not write(text_frame(confirmation.encode())):
            await websocket.send_text(confirmation)
        await _serve(websocket, watcher, hub.now_ms)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        hub.leave(watcher)


def _confirmation(screening_id: int) -> str:
    return encode(ConnectionConfirmed(screening_id, "Connected to real-time seat updates"))


def direct_writer(websocket: WebSocket) -> FrameWriter | None:
    """A function writing frames straight to the client's socket, or None: the queued path.

    The one place that relies on server internals for WebSockets (uvicorn's sans-I/O protocol
    object and its ``transport``, ``close_sent`` and ``disconnected``; Starlette's send wrappers,
    see ``server_protocol``); anything else falls back to ``websocket.send_text`` through the
    queue. tests/api/test_middleware.py fails when the installed versions no longer give a
    writer. A frame is refused once the close handshake began or the client is gone (nothing may
    follow a close frame), or when the socket has MAX_BUFFERED bytes unsent: a slow reader.
    Frames are whole ``transport.write`` calls, so they never interleave with uvicorn's own.
    """
    protocol = server_protocol(websocket._send)
    if protocol is None:
        return None
    transport = protocol.transport

    def write(frame: bytes) -> bool:
        if (
            protocol.close_sent
            or protocol.disconnected
            or transport.is_closing()
            or transport.get_write_buffer_size() > MAX_BUFFERED
        ):
            return False
        transport.write(frame)
        return True

    return write


def server_protocol(send: Any) -> Any:
    """uvicorn's sans-I/O websockets protocol whose ``send`` is under ``send``, or None.

    Only Starlette's own wrappers may lie between (its exception handling, which passes every
    WebSocket message through unchanged): a middleware that wraps ``send`` wants to see each
    message, so a chain with one keeps the queued path and the middleware sees every frame.
    Middleware that passes ``send`` on untouched (CORS, GZip) keeps the direct path.
    """
    known = _sansio_protocol()
    for _ in range(MAX_WRAPPERS):
        owner = getattr(send, "__self__", None)
        if owner is not None:
            fields = ("transport", "close_sent", "disconnected")
            ok = type(owner) is known and all(hasattr(owner, f) for f in fields)
            return owner if ok else None
        if not getattr(send, "__module__", "").startswith("starlette."):
            return None
        send = _closed_over_send(send)
    return None


def _closed_over_send(wrapper: Any) -> Any:
    """The ``send`` a Starlette wrapper function closes over, or None."""
    code, cells = getattr(wrapper, "__code__", None), getattr(wrapper, "__closure__", None)
    if code is None or not cells or "send" not in code.co_freevars:
        return None
    try:
        return cells[code.co_freevars.index("send")].cell_contents
    except ValueError:  # an empty cell
        return None


@functools.cache
def _sansio_protocol() -> type | None:
    """uvicorn's sans-I/O websockets protocol class, or None when uvicorn no longer has it."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:
        logger.warning("uvicorn has no WebSocketsSansIOProtocol: seat updates take the queue")
        return None
    return WebSocketsSansIOProtocol


async def _admit(websocket: WebSocket, services: Services) -> tuple[int, int | None]:
    """The screening watched and the caller (None: anonymous); raises when not allowed."""
    token = websocket.query_params.get("token")
    user_id = None
    if token:
        user_id = (await principal_from_token(token, services)).user_id
    screening_id = int(websocket.path_params["screening_id"])
    if screening_id > MAX_ID or await services.layouts.seats(screening_id) is None:
        raise NotFound("Screening not found")
    return screening_id, user_id


async def _serve(websocket: WebSocket, watcher: Watcher, clock: Clock) -> None:
    sender = asyncio.create_task(_send(websocket, watcher, clock))
    receiver = asyncio.create_task(_receive(websocket, watcher, clock))
    done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if sender in done and not sender.cancelled() and sender.exception() is None:
        # The client was too slow and dropped by the hub: tell it to come back later.
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await websocket.close(code=WS_TRY_AGAIN_LATER, reason="Too slow; reconnect")


async def _send(websocket: WebSocket, watcher: Watcher, clock: Clock) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            text = await asyncio.wait_for(watcher.queue.get(), HEARTBEAT_S)
        except TimeoutError:
            if loop.time() - watcher.last_sent < HEARTBEAT_S:
                continue  # seat updates went straight to the socket: not idle
            text = encode(Ping(now_iso(clock())))
        if text == CLOSE:
            return
        await websocket.send_text(text)


async def _receive(websocket: WebSocket, watcher: Watcher, clock: Clock) -> None:
    """Read until the client goes; a ``ping`` (plain or JSON) gets a ``pong``."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text") or ""
        if text.strip() == "ping" or '"ping"' in text:
            watcher.offer(encode(Pong(now_iso(clock()))))


ROUTES = [WebSocketRoute("/ws/screenings/{screening_id:int}", screening_updates)]
