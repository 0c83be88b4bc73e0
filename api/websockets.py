"""WebSocket seat updates: ``/ws/screenings/{id}?token=...`` and the guide's ``/ws/stats``.

A client joins the process's hub before ``connection_confirmed`` is sent, so no change published
after the confirmation is missed. Under uvicorn's websockets protocol, when no middleware wraps
the connection's ``send``, the hub writes seat updates as ready-made frames straight to the
client's transport (see ``direct_socket``), and so do pongs and one timer's heartbeats: the
connection's own coroutine only reads (for the close and pings), with no task, queue or timer
of its own, so an idle watcher costs little memory (``DirectSession``, ``Heartbeats``).
Otherwise a sender task drains the client's bounded queue (with a ping when idle) beside a
receiving task.

A client that reconnects with ``?since=VERSION`` (the last version it saw) is first sent what it
missed, then live events (``_catch_up``): the events after VERSION from the screening's log, or
one ``seat_snapshot`` of the whole map when the log no longer has them all. Every watcher of a
screening moved to another room, or loaded anew after Redis lost it, is sent its new map the
same way (``NewMaps``); the watchers of a deleted one are closed with 4404 (the hub lets them go,
``Room.ended`` says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import orjson
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.auth import principal_from_token, session_is_active
from api.errors import BACKEND_DOWN, WS_TRY_AGAIN_LATER, ws_close_code
from api.routing import MAX_ID, Call, Router
from api.seatmaps import SeatStatusOut, current_map, snapshot_json
from seatlock.accounts.tokens import Principal
from seatlock.engine.events import Timestamp, encode, now_iso, render
from seatlock.engine.watchers import CLOSE, Message, Socket, Watcher, reset, text_frame
from seatlock.errors import InvalidInput, NotAuthenticated, NotFound, SeatLockError
from seatlock.services.container import Services

logger = logging.getLogger(__name__)

router = Router("WebSockets")
HEARTBEAT_S = 20.0
CLOSE_SLOW_S = 10.0  # a client dropped as too slow is reset if it has not gone by then
SWEEPS = 4  # Heartbeats look for idle clients this often per HEARTBEAT_S
MAX_VERSION = 2**53  # versions travel through Lua numbers (doubles)
VERSION_DIGITS = len(str(MAX_VERSION))
# What closes a connection before it is served: a refusal, or a backend that cannot answer.
REFUSALS: tuple[type[Exception], ...] = (SeatLockError, *BACKEND_DOWN)
Clock = Callable[[], int]  # the hub's: ms on Redis's clock, that of hold times
MAX_WRAPPERS = 8  # Starlette wrappers looked through for the server's send
REVOKED = "Session has been revoked"  # the reason a revoked session's sockets close with


# The messages this module sends (the seat updates are seatlock/engine/events.py's); their types
# are also the JSON Schema of /asyncapi.json (api/asyncapi.py).
class ConnectionConfirmed(msgspec.Struct, tag_field="type", tag="connection_confirmed"):
    """The first message: the client is watching; every change from now on is sent."""

    screening_id: int
    message: str


class SeatSnapshot(msgspec.Struct, tag_field="type", tag="seat_snapshot"):
    """Sent after connection_confirmed to a client that connected with ``?since=`` when the
    changes since then are no longer all kept (or the screening was reset), and to every
    watcher when the screening moved to another room or Redis lost it (loaded again from
    PostgreSQL: the holds shown are gone): the whole map, as the availability answers it, at
    ``version``; replace the map with it. Live updates follow."""

    version: int
    seats: list[SeatStatusOut]
    timestamp: Timestamp


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
        screening_id, principal = await _admit(websocket, services)
        since = _since(websocket)
    except REFUSALS as exc:
        await _refuse(websocket, exc)
        return
    user_id = None if principal is None else principal.user_id
    if user_id is not None:  # for the access log (api/observe.py), which reads None when absent
        # (the key grows the scope's table: ~770 bytes kept for the connection's life)
        websocket.scope["user_id"] = user_id
    hub = services.hub
    await hub.subscribed(screening_id)  # sharded pub/sub: its channel first, then the join
    socket = direct_socket(websocket)
    # A resuming client is joined first, its live events held back until it has caught up.
    watcher = hub.join(screening_id, user_id, socket)
    # Signed in: closed when its session is revoked, from now on (no await since the join).
    revocable = None if principal is None else Revocable(websocket, watcher, services, principal)
    session: DirectSession | None = None
    if since is not None:
        watcher.replaying()
    try:
        _check_session(revocable)  # revoked since it was admitted
        confirmation = _confirmation(screening_id)
        # Written before any await: no event can be fanned out ahead of it.
        if socket is None or not watcher.send(text_frame(confirmation.encode())):
            await websocket.send_text(confirmation)
        # Admission read the screening from a per-process cache (db/layouts.py), which a delete
        # elsewhere does not clear: asked of Redis now, after the join, so a delete before this
        # is seen here and one after it reaches the room (``Hub.end``).
        if await services.engine.deleted(screening_id):
            raise NotFound("Screening not found")
        if since is not None:
            await _catch_up(websocket, services, watcher, since)
        _check_session(revocable)  # revoked while the confirmation or catch-up was sent
        _check_ended(watcher)  # the screening was deleted meanwhile: 4404
        if since is not None and watcher.dropped and socket is not None:  # too slow for it
            await _close_slow(websocket)
            return
        if socket is None:
            await _serve(websocket, watcher, hub.now_ms, revocable)
        else:  # this coroutine only reads now; awaited here, not in a coroutine more (~260 B)
            session = DirectSession(websocket, watcher, hub.now_ms, heartbeats_of(websocket))
            if revocable is not None:
                revocable.reading = True  # a revocation closes it at once from now on
            await _receive(websocket, watcher, hub.now_ms)
    except REFUSALS as exc:
        hub.leave(watcher)  # before the close frame: nothing may be written after it
        await _refuse(websocket, exc, served=True)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        hub.leave(watcher)
        if session is not None:
            session.end()
        if revocable is not None:
            revocable.end()


async def _refuse(websocket: WebSocket, exc: BaseException, *, served: bool = False) -> None:
    """Close with the code of what went wrong (api/errors.py), its detail as the reason.

    ``served``: the client was joined to the hub, so it may have been sent more than it read
    (a revoked session's or a deleted screening's watcher whose app was suspended): reset if the
    close has not ended it CLOSE_SLOW_S later (``_reset_later``), else the close waited for room
    to write, and the connection was kept, for as long as the client's TCP stack answered."""
    if isinstance(exc, SeatLockError):
        code, reason = ws_close_code(exc), exc.detail[:120]
    else:
        logger.warning("websocket refused, backend unavailable: %r", exc)
        code, reason = WS_TRY_AGAIN_LATER, ""
    if served:
        _reset_later(websocket)
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await websocket.close(code=code, reason=reason)


def query_value(websocket: WebSocket, name: str) -> str | None:
    """The value of ``name`` in the query string (the last, as ``websocket.query_params`` gives
    it), read without keeping the parsed query on the connection (~0.5 KB for its life)."""
    raw: bytes = websocket.scope["query_string"]
    found = None
    for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if key == name:
            found = value
    return found


def _since(websocket: WebSocket) -> int | None:
    """The version a resuming client last saw (``?since=``), None when it is not resuming."""
    raw = query_value(websocket, "since")
    if raw is None:
        return None
    # Its length first: int() refuses more than 4,300 digits.
    if not (
        raw.isascii() and raw.isdigit() and len(raw) <= VERSION_DIGITS and int(raw) <= MAX_VERSION
    ):
        raise InvalidInput("since must be a seat map version: a whole number, 0 or more")
    return int(raw)


async def _catch_up(websocket: WebSocket, services: Services, watcher: Watcher, since: int) -> None:
    """Send a client resuming from version ``since`` what it missed, then let live events in.

    The race: events are published while the catch-up is read and sent. The watcher joined
    (and held back its live events) before ``resume`` read the log, in one script run with the
    version V it brings the client to (or before the map of version V was read, in one script
    run too); so every event after V reaches the watcher, and every event up to V is in the
    catch-up. ``go_live`` drops the held events up to V and sends the rest after the catch-up:
    no gap, no duplicate, publish order kept."""
    version, messages = await catch_up(services, watcher, since)
    for message in messages:
        if watcher.dropped:  # its session was revoked meanwhile
            break
        if watcher.socket is None:
            await websocket.send_text(message.decode())
        elif not watcher.send(text_frame(message)):
            watcher.drop()  # gone, or too slow to take it: told so, as by the hub
            break
    # Events read from Redis in this turn wait for its end (Hub._deliver): hand them to the
    # watcher now, while it still holds events back, so go_live drops those the catch-up had.
    services.hub.fan_out()
    watcher.go_live(version)


async def catch_up(services: Services, watcher: Watcher, since: int) -> tuple[int, list[bytes]]:
    """The messages (JSON) that bring a watcher from version ``since`` to the version returned,
    as it may see them: the events in between, or one snapshot."""
    resumed = await services.engine.resume(watcher.screening_id, since)
    viewer = watcher.user_id
    if resumed.events is not None:
        events = [render(orjson.loads(event), viewer).encode() for event in resumed.events]
        return resumed.version, events
    version, seats = await snapshot_json(services, watcher.screening_id, resumed.version, viewer)
    return version, [snapshot_message(version, seats, services.hub.now_ms())]


def snapshot_message(version: int, seats: bytes, now_ms: int) -> bytes:
    """A ``seat_snapshot``, built around the map's JSON (the availability answer, as cached),
    not parsed again."""
    head = b'{"type":"seat_snapshot","version":%d,"seats":' % version
    return b"".join((head, seats, b',"timestamp":"', now_iso(now_ms).encode(), b'"}'))


def install(services: Services) -> None:
    """Set up what the WebSocket endpoints need of a process's services, once, as they start
    (seatlock/server/wiring.py): the watchers of a screening moved to another room are sent its
    new map (``NewMaps``), and the sessions of open sockets are checked again each time the
    revocation feed is back (``_recheck``)."""
    services.hub.reset_listeners.append(NewMaps(services))
    services.sessions.on_resubscribe.append(lambda: _in_background(_recheck(services)))


class NewMaps:
    """Sends every watcher here of a screening moved to another room (lua/refresh.lua: its reset
    event says "moved") the new map as a ``seat_snapshot``, to replace its map with: seats belong
    to rooms, so no seat of the old map stands, and the updates of the new room follow it.

    The race is the resume's (``_catch_up``): changes are published while the map is read. Each
    watcher holds its live events back from the reset event on (``replaying``, called in the
    hub's dispatch of it), the map is read with its version V in one script run and sent, then
    the held events after V follow (``go_live``). A watcher that was catching up already (its
    catch-up may have been read before the move) is dropped instead (1013: reconnect); its resume
    then gets the new map, as the move's reset emptied the screening's event log. A move made
    while one is being sent is sent again after it. Only this rare path costs anything: the hub
    calls it for reset events alone.

    A screening loaded while watched here (its reset says "loaded": lua/load.lua) is one Redis
    lost under its watchers, a FLUSHALL or a restart with no data that left their subscription
    standing: its holds went with no event, and the watchers would show them held until they
    would have expired. They get the map loaded from PostgreSQL the same way."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._again: dict[int, bool] = {}  # screenings being sent: moved again meanwhile

    def __call__(self, screening_id: int, event: dict[str, Any]) -> None:
        if not (event.get("moved") or event.get("loaded")):
            return
        if screening_id in self._again:
            self._again[screening_id] = True
            return
        watchers = self._hold_back(screening_id)
        if not watchers:  # none here: no map to read
            return
        self._again[screening_id] = False
        _in_background(self._send(screening_id, watchers))

    def _hold_back(self, screening_id: int) -> list[Watcher]:
        held = []
        for watcher in self._services.hub.watchers(screening_id):
            if watcher.held is not None:
                watcher.drop()  # catching up: reconnects, and its resume gets the new map
            elif not watcher.dropped:
                watcher.replaying()
                held.append(watcher)
        return held

    async def _send(self, screening_id: int, watchers: list[Watcher]) -> None:
        try:
            while True:
                await self._send_map(screening_id, watchers)
                if not self._again[screening_id]:
                    return
                self._again[screening_id] = False
                watchers = self._hold_back(screening_id)
        finally:
            del self._again[screening_id]

    async def _send_map(self, screening_id: int, watchers: list[Watcher]) -> None:
        services = self._services
        version = None
        try:
            rendered = await current_map(services, screening_id)
            version = rendered.version
            now, now_ms = asyncio.get_running_loop().time(), services.hub.now_ms()
            public = Message(snapshot_message(version, rendered.all_json, now_ms))
            for watcher in watchers:
                if watcher.dropped or watcher not in watcher.room.others:  # gone meanwhile
                    continue
                viewer = watcher.user_id
                message = public
                if viewer is not None and viewer in rendered.holders:
                    seats = rendered.for_viewer(viewer)
                    message = Message(snapshot_message(version, seats, now_ms))
                if watcher.socket is None:
                    watcher.offer(message.text)
                elif watcher.send(message.frame):
                    watcher.last_sent = now
                else:
                    watcher.drop()
            services.hub.fan_out()  # before go_live: see ``Watcher.go_live``
        except REFUSALS as exc:
            logger.warning("no new map for the watchers of screening %s: %r", screening_id, exc)
        finally:
            for watcher in watchers:
                if watcher not in watcher.room.others:  # left meanwhile: nothing to release
                    continue
                if version is None:
                    watcher.drop()  # reconnects, and its resume gets the map
                else:
                    watcher.go_live(version)


def _confirmation(screening_id: int) -> str:
    return encode(ConnectionConfirmed(screening_id, "Connected to real-time seat updates"))


def direct_socket(websocket: WebSocket) -> Socket | None:
    """The client's socket (its transport) for the hub to write frames to, or None: the queued
    path.

    The one place that relies on server internals for WebSockets (uvicorn's sans-I/O protocol
    object and its ``transport``; Starlette's send wrappers, see ``server_protocol``); anything
    else falls back to ``websocket.send_text`` through the queue. tests/api/test_middleware.py
    fails when the installed versions no longer give a socket. Frames are whole
    ``transport.write`` calls, so they never interleave with uvicorn's own. Nothing may follow
    a close frame: a client gone, or one that sent its close, has a closing transport (uvicorn
    closes it then), which the hub checks before each write; a close this server sends
    (``_refuse``, ``_close_slow``) comes after the watcher left the hub or was dropped.
    """
    protocol = server_protocol(websocket._send)
    if protocol is None:
        return None
    transport: Socket = _socket_transport(protocol.transport)
    return transport


def _socket_transport(transport: Any) -> Any:
    """The socket's own transport under seatlock serve's HTTP proxy (serving.HeadWithBody, which
    holds back response heads: a frame is never one), after sending any head it still holds (the
    101), so frames keep their order; ~1 us less per frame written."""
    flush, real = getattr(transport, "flush", None), getattr(transport, "real", None)
    if flush is None or real is None:
        return transport
    flush()
    return real


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
            ok = known is not None and isinstance(owner, known)
            ok = ok and all(hasattr(owner, f) for f in fields)
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


async def _admit(websocket: WebSocket, services: Services) -> tuple[int, Principal | None]:
    """The screening watched and the caller (None: anonymous); raises when not allowed.

    The token is checked here only: its expiry ends no connection already open, while its
    session's revocation does (``Revocable``)."""
    token = query_value(websocket, "token")
    principal = None
    if token:
        principal = await principal_from_token(token, services)
    screening_id = int(websocket.path_params["screening_id"])
    if screening_id > MAX_ID or await services.layouts.seats(screening_id) is None:
        raise NotFound("Screening not found")
    return screening_id, principal


class Revocable:
    """A signed-in client, closed (1008, "Session has been revoked") once its session is revoked
    in any process: ``SessionTrust.revoke`` calls it, in the revoking process before the answer,
    in the others as the revocation's pub/sub message arrives (seatlock/accounts/sessions.py).

    Nothing of it is on the fan-out path: the watcher leaves the hub, and the connection is
    closed by whoever writes to it then. A directly written client that is only read from
    (``reading``) is closed by a task started then; a queued one by its sender, told by the
    CLOSE queued; one still being sent its confirmation or catch-up by its own coroutine once
    that is sent (``_check_session``). A feed that lost its subscription may have missed
    revocations: every session with open sockets is checked again once it is back
    (``_recheck``)."""

    __slots__ = ("_services", "_session_id", "_watcher", "_websocket", "reading", "revoked")

    def __init__(
        self, websocket: WebSocket, watcher: Watcher, services: Services, principal: Principal
    ) -> None:
        self._websocket, self._watcher, self._services = websocket, watcher, services
        self._session_id = principal.session_id
        self.reading = False
        self.revoked = principal.session_id in services.sessions.revoked
        if not self.revoked:
            services.sessions.on_revoke(self._session_id, self)

    def __call__(self) -> None:
        """The session was revoked: nothing more reaches the client, and it is closed."""
        self.revoked = True
        watcher = self._watcher
        self._services.hub.leave(watcher)  # no seat update is written to it from now on
        if watcher.dropped:
            return  # already being closed as too slow (or, queued, told so by its CLOSE)
        watcher.dropped = True  # nor a pong, ping or held event (``Watcher.offer``, ``deliver``)
        queue = watcher.queue
        if queue is not None:  # its sender is the one writer: it stops, and _serve closes
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(CLOSE)
        elif self.reading:
            _in_background(_refuse(self._websocket, NotAuthenticated(REVOKED), served=True))

    def end(self) -> None:
        self._services.sessions.forget_callback(self._session_id, self)


def _check_session(revocable: Revocable | None) -> None:
    """Raise (a refusal: 1008) when the client's session was revoked."""
    if revocable is not None and revocable.revoked:
        raise NotAuthenticated(REVOKED)


def _check_ended(watcher: Watcher) -> None:
    """Raise why the hub let every watcher of the screening go (deleted: 4404), if it did."""
    ended = watcher.room.ended
    if ended is not None:
        raise ended


async def _recheck(services: Services) -> None:
    """Close the sockets of sessions revoked while the feed was not listening: each session is
    asked of Redis (PostgreSQL when Redis no longer knows it), as a request's would be."""
    trust = services.sessions
    watched = trust.watched()
    if not watched:
        return
    found = await asyncio.gather(
        *(session_is_active(services, sid) for sid in watched), return_exceptions=True
    )
    ended = [sid for sid, active in zip(watched, found, strict=True) if active is False]
    failed = sum(isinstance(active, BaseException) for active in found)
    if failed:
        logger.warning("%d sessions of open websockets could not be checked again", failed)
    trust.revoke(ended)


class DirectSession:
    """A directly written client: its coroutine only reads (``_receive``), nothing of its own
    waits to write. The hub writes seat updates in its fan-out loop, ``_receive`` the pongs and
    ``Heartbeats`` the pings (``watcher.offer``). A client the hub drops (a socket closing or
    too full) is closed by a task started only then, which also ends the read (uvicorn hands the
    reader a disconnect once the close is sent)."""

    __slots__ = ("_clock", "_heartbeats", "_watcher", "_websocket")

    def __init__(
        self, websocket: WebSocket, watcher: Watcher, clock: Clock, heartbeats: Heartbeats
    ) -> None:
        self._websocket, self._watcher, self._clock = websocket, watcher, clock
        self._heartbeats = heartbeats
        watcher.last_sent = asyncio.get_running_loop().time()  # its confirmation, just written
        watcher.on_drop = self._dropped
        heartbeats.add(self)

    def beat(self, now: float) -> None:
        """Ping when nothing went out for HEARTBEAT_S."""
        if now - self._watcher.idle_since() >= HEARTBEAT_S:
            self._watcher.offer(encode(Ping(now_iso(self._clock()))))

    def end(self) -> None:
        self._heartbeats.discard(self)

    def _dropped(self) -> None:
        self.end()
        ended = self._watcher.room.ended  # the screening deleted (4404), else too slow (1013)
        websocket = self._websocket
        if ended is None:
            closing = _close_slow(websocket)
        else:
            closing = _refuse(websocket, ended, served=True)
        _in_background(closing)


class Heartbeats:
    """One timer per server pings every idle directly written client, a sweep every
    HEARTBEAT_S / SWEEPS: a timer per connection would cost ~700 bytes of each (a watcher costs
    ~20 KB in all). A client gets its ping 1 to 1 + 1/SWEEPS HEARTBEAT_S after its last message."""

    __slots__ = ("_sessions", "_timer")

    def __init__(self) -> None:
        self._sessions: set[DirectSession] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, session: DirectSession) -> None:
        self._sessions.add(session)
        loop = asyncio.get_running_loop()
        due = loop.time() + HEARTBEAT_S / SWEEPS
        if self._timer is None or self._timer.when() > due:  # none yet, or HEARTBEAT_S shortened
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(due, self._sweep)

    def discard(self, session: DirectSession) -> None:
        self._sessions.discard(session)

    def _sweep(self) -> None:
        self._timer = None
        if not self._sessions:
            return  # the next client starts the timer again
        loop = asyncio.get_running_loop()
        now = loop.time()
        for session in list(self._sessions):
            session.beat(now)
        self._timer = loop.call_later(HEARTBEAT_S / SWEEPS, self._sweep)


def heartbeats_of(websocket: WebSocket) -> Heartbeats:
    """The app's ``Heartbeats`` (made with its first directly written client)."""
    state = websocket.app.state
    heartbeats: Heartbeats | None = getattr(state, "ws_heartbeats", None)
    if heartbeats is None:
        heartbeats = state.ws_heartbeats = Heartbeats()
    return heartbeats


_closing: set[asyncio.Task[None]] = set()


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` as a task of its own, referenced (``_closing``) until it is done."""
    task = asyncio.get_running_loop().create_task(work)
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _close_slow(websocket: WebSocket) -> None:
    """Tell a client the hub dropped that it was too slow and may come back later, and reset
    its connection if that has not ended it within CLOSE_SLOW_S.

    A client that stopped reading (a phone's app suspended with its socket open: its TCP
    window shut, its kernel still answering) takes neither its frames nor the close. Its
    connection kept what the hub had written (MAX_BUFFERED) and the socket's queue (~3 MB
    measured) for as long as its TCP stack answered, which is for ever: the close waited
    for room to write, and so did uvicorn's own close after it."""
    _reset_later(websocket)
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await websocket.close(code=WS_TRY_AGAIN_LATER, reason="Too slow; reconnect")


def _reset_later(websocket: WebSocket) -> None:
    """Reset a directly written client's connection CLOSE_SLOW_S from now if it is still open
    (nothing happens to one closed by then)."""
    socket = direct_socket(websocket)
    if socket is not None:
        asyncio.get_running_loop().call_later(CLOSE_SLOW_S, reset, socket)


async def _serve(
    websocket: WebSocket, watcher: Watcher, clock: Clock, revocable: Revocable | None = None
) -> None:
    sender = asyncio.create_task(_send(websocket, watcher, clock))
    receiver = asyncio.create_task(_receive(websocket, watcher, clock))
    done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if sender in done and not sender.cancelled() and sender.exception() is None:
        _check_session(revocable)  # its session was revoked: refused (1008)
        _check_ended(watcher)  # its screening was deleted: refused (4404)
        await _close_slow(websocket)  # the client was too slow and dropped by the hub


async def _send(websocket: WebSocket, watcher: Watcher, clock: Clock) -> None:
    loop = asyncio.get_running_loop()
    queue = watcher.queue
    assert queue is not None  # a queued watcher (no ``socket``)
    while True:
        try:
            text = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
        except TimeoutError:
            if loop.time() - watcher.idle_since() < HEARTBEAT_S:
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
