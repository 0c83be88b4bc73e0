"""WebSocket fan-out: one Redis PSUBSCRIBE per process, bounded per-client queues.

The Lua scripts publish every seat change on the screening's channel; the hub receives them all
through one pattern subscription on a connection of its own (``Transport.subscribe``; with the
fast transport a burst of events costs one read and no task or timeout per message) and hands each
event to the watchers of that screening. An event
is serialised once for the public and once per owner named in it (invariant 9: a holder's id is
shown only to that holder). A client whose queue is full is dropped, so a slow reader never stalls
the others; one connection delivers in publish order, so updates stay in order per seat.

A watcher with a ``write`` function (the server's socket, see api/websockets.py) gets each event
as a WebSocket frame built once per audience and written in the dispatch loop itself: no task
wakes per watcher. Its bound is the socket's write buffer: a write refused (client gone, or more
than MAX_BUFFERED bytes unsent) drops it the same way as a full queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from seatlock import keys
from seatlock.engine.model import SeatState
from seatlock.engine.transport import Transport
from seatlock.errors import SeatLockError
from seatlock.heartbeats import BEAT_S, Beat, no_beat
from seatlock.metrics import (
    WS_CLIENTS_DROPPED,
    WS_CONNECTIONS,
    WS_EVENTS_DROPPED,
    WS_EVENTS_SENT,
)

logger = logging.getLogger(__name__)

EVENTS_PATTERN = keys.screening_events(0).replace("{scr:0}", "{scr:*}")
QUEUE_SIZE = 256
MAX_BUFFERED = 1 << 20  # bytes unsent to a directly written client before it is dropped
CLOSE = ""  # queued to tell the sender its client was dropped
HEALTH_S = 15.0  # a silent subscription is pinged after this, dropped after twice this

Snapshot = Callable[[int], Awaitable[list[SeatState]]]  # a screening's whole seat map
FrameWriter = Callable[[bytes], bool]  # writes one frame; False when the client must be dropped


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC with a Z."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def encode(message: dict[str, Any]) -> str:
    return msgspec.json.encode(message).decode()


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = b"\x81\x7e" + size.to_bytes(2, "big")
    else:
        header = b"\x81\x7f" + size.to_bytes(8, "big")
    return header + payload


class Message:
    """One rendered message, as text for queued watchers and as a frame for direct ones."""

    __slots__ = ("_frame", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = text_frame(self.text.encode())
        return self._frame


@dataclass(eq=False)
class Watcher:
    """One WebSocket client of one screening; ``user_id`` None when anonymous."""

    screening_id: int
    user_id: int | None
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: bool = False
    write: FrameWriter | None = None  # set: events bypass the queue
    last_sent: float = 0.0  # loop time of the last direct write (heartbeats go when idle)

    def offer(self, text: str) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.drop()

    def deliver(self, message: Message, now: float) -> None:
        if self.write is None:
            self.offer(message.text)
        elif not self.dropped:
            if self.write(message.frame):
                self.last_sent = now
            else:
                self.drop()

    def drop(self) -> None:
        self.dropped = True
        WS_CLIENTS_DROPPED.inc()
        WS_EVENTS_DROPPED.inc(self.queue.qsize() + 1)  # those queued, and the one refused
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(CLOSE)


def _owner_for(seat: dict[str, Any], viewer: int | None) -> int | None:
    """The seat's holder or buyer if that is the viewer; None otherwise (invariant 9)."""
    owner = seat.get("user_id")
    return owner if owner is not None and owner == viewer else None


def seat_update(seat: dict[str, Any], viewer: int | None, ts: str) -> dict[str, Any]:
    return {
        "type": "seat_update",
        "seat_id": seat["seat_id"],
        "status": seat["status"],
        "reserved_by": _owner_for(seat, viewer),
        "expires_at": iso(seat.get("expires_at")),
        "timestamp": ts,
    }


def bulk_item(seat: dict[str, Any], viewer: int | None) -> dict[str, Any]:
    item: dict[str, Any] = {"seat_id": seat["seat_id"], "status": seat["status"]}
    owner = _owner_for(seat, viewer)
    if owner is not None:
        item["booked_by" if seat["status"] == "booked" else "reserved_by"] = owner
    item["expires_at"] = iso(seat.get("expires_at"))
    return item


def render(event: dict[str, Any], viewer: int | None) -> str:
    """The WebSocket message of one engine event as ``viewer`` may see it."""
    seats: list[dict[str, Any]] = event.get("seats") or []
    ts = iso(event.get("ts")) or now_iso()
    if len(seats) == 1:
        return encode(seat_update(seats[0], viewer, ts))
    updates = [bulk_item(s, viewer) for s in seats]
    return encode({"type": "bulk_seat_update", "updates": updates, "timestamp": ts})


class Hub:
    """This process's watchers, fed by one pattern subscription on every screening's channel."""

    def __init__(self, transport: Transport, snapshot: Snapshot | None = None) -> None:
        self._transport = transport
        self._snapshot = snapshot
        self._rooms: dict[int, set[Watcher]] = {}
        self.ready = asyncio.Event()
        # Told every screening id an event arrives for (caches drop what it changed).
        self.change_listeners: list[Callable[[int], None]] = []
        # Given every event as published, in order (seatlock/engine/mirrors.py).
        self.event_listeners: list[Callable[[int, dict[str, Any]], None]] = []
        # live: subscribed and confirmed by Redis, so every event published since arrives.
        # epoch changes whenever live does, so trust built on one subscription ends with it.
        self.live = False
        self.epoch = 0
        self._beat: Beat = no_beat

    def join(
        self, screening_id: int, user_id: int | None, write: FrameWriter | None = None
    ) -> Watcher:
        watcher = Watcher(screening_id, user_id, write=write)
        self._rooms.setdefault(screening_id, set()).add(watcher)
        WS_CONNECTIONS.inc()
        return watcher

    def leave(self, watcher: Watcher) -> None:
        room = self._rooms.get(watcher.screening_id)
        if room is not None and watcher in room:
            room.discard(watcher)
            WS_CONNECTIONS.dec()
            if not room:
                del self._rooms[watcher.screening_id]

    def stats(self) -> dict[str, Any]:
        details = {str(sid): len(room) for sid, room in sorted(self._rooms.items())}
        return {
            "total_connections": sum(details.values()),
            "active_screenings": sorted(self._rooms),
            "screening_details": details,
        }

    def dispatch(self, data: bytes | str) -> None:
        """Hand one published event to the listeners and to the watchers of its screening."""
        try:
            event = orjson.loads(data)
            screening_id = int(event["screening_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.warning("ignoring malformed seat event %r", data[:200])
            return
        for listener in self.change_listeners:
            listener(screening_id)
        for event_listener in self.event_listeners:
            event_listener(screening_id, event)
        self._deliver(screening_id, event)

    def _deliver(self, screening_id: int, event: dict[str, Any]) -> None:
        room = self._rooms.get(screening_id)
        if not room or not event.get("seats"):
            return
        owners = {s.get("user_id") for s in event["seats"]} - {None}
        public = Message(render(event, None))
        private = {user: Message(render(event, user)) for user in owners}
        now = asyncio.get_running_loop().time()
        WS_EVENTS_SENT.inc(len(room))  # once per event: an increment per client costs ~1 µs
        for watcher in list(room):
            watcher.deliver(private.get(watcher.user_id, public), now)

    async def run(self, stop: asyncio.Event, beat: Beat = no_beat) -> None:
        """Receive events until ``stop`` is set; resubscribes after a lost connection."""
        self._beat = beat
        delay = 0.1
        while not stop.is_set():
            try:
                await self._listen(stop)
                delay = 0.1
            except (RedisError, OSError) as exc:
                logger.warning("seat event subscription lost, retrying: %r", exc)
                await asyncio.sleep(delay)
                beat()
                delay = min(delay * 2, 5.0)

    async def _listen(self, stop: asyncio.Event) -> None:
        feed = await self._transport.subscribe(
            EVENTS_PATTERN,
            self.dispatch,
            pattern=True,
            on_live=self._confirmed,
            health_s=HEALTH_S,
        )
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            if self.ready.is_set():
                await self._resync()
            self.ready.set()
            while not (stopping.done() or feed.closed.done()):
                await asyncio.wait(
                    [stopping, feed.closed], timeout=BEAT_S, return_when=asyncio.FIRST_COMPLETED
                )
                self._beat()
            if not stop.is_set():
                raise RedisConnectionError(f"seat event subscription closed: {feed.trouble}")
        finally:
            stopping.cancel()
            self._set_live(False)
            feed.close()

    def _confirmed(self) -> None:
        # Redis has the subscription: no event published from now on is missed.
        self._set_live(True)

    def _set_live(self, live: bool) -> None:
        if live != self.live:
            self.live = live
            self.epoch += 1

    async def _resync(self) -> None:
        """After a lost subscription, send watchers the whole seat map: changes made while we
        were away were not delivered (pub/sub does not queue). Events published since the new
        subscription follow the snapshot, so every seat converges to its latest state."""
        if self._snapshot is None:
            return
        for screening_id in list(self._rooms):
            try:
                states = await self._snapshot(screening_id)
            except (SeatLockError, RedisError, OSError) as exc:
                logger.warning("no seat map to resync screening %s: %r", screening_id, exc)
                continue
            self._deliver(screening_id, snapshot_event(screening_id, states))


def snapshot_event(screening_id: int, states: list[SeatState]) -> dict[str, Any]:
    seats = [
        {
            "seat_id": s.seat_id,
            "status": s.status,
            "user_id": s.user_id,
            "expires_at": s.expires_at_ms,
        }
        for s in states
    ]
    return {"screening_id": screening_id, "ts": int(time.time() * 1000), "seats": seats}
