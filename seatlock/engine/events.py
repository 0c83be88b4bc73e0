"""WebSocket fan-out: one Redis PSUBSCRIBE per process, one write per watcher per loop turn.

The Lua scripts publish every seat change on the screening's channel; the hub receives them all
through one pattern subscription on a connection of its own (``Transport.subscribe``; with the
fast transport a burst of events costs one read and no task or timeout per message) and hands each
event to the watchers of that screening. The events of a screening read in one turn of the loop
go out together at its end (``Hub._deliver``), each serialised once for the public and once per
watching owner named in it (invariant 9: a holder's id is shown only to that holder), in publish
order, so updates stay in order per seat.

A watcher with a socket (the server's transport, see api/websockets.py) gets them as WebSocket
frames built once per audience and concatenated, the same bytes written to every such socket in
one loop (seatlock/engine/watchers.py): no task wakes and no object is made per watcher. Its
bound is the socket's write buffer: a socket closing or with more than MAX_BUFFERED bytes unsent
drops its client, as a full queue drops a queued one (a server we cannot write to directly), so
a slow reader never stalls the others.

On a Redis Cluster whose primaries all run Redis >= 7 the scripts publish with SPUBLISH, which
stays on the shard of the screening's slot: the hub then also SSUBSCRIBEs the channel of every
screening its clients watch, on the primary of its slot (seatlock/engine/shards.py). A client
waits for that subscription before it is told it is connected (``subscribed``), so no change
published after the confirmation is missed. A channel that stops being live (its node died, its
slot moved, or the slot map the hub reads every TOPOLOGY_S names another primary for it than the
node it is on) is subscribed on the new owner and the screening's watchers get its whole map
again, as after a lost pattern subscription. ``hears`` says whose events arrive: mirrors and the
seat map cache trust only what the subscription of that screening vouches for.

A screening's event log, from which a client reconnecting with ``?since=`` is replayed what it
missed (lua/resume.lua), is kept only while some process marks the screening watched
(lua/watch.lua): a hub marks a screening before its first watcher here joins and every
WATCH_REFRESH_S while it has any, for WATCH_TTL_MS, so the log outlives the last watcher by a
minute or two; the many screenings nobody watches log nothing (an entry cost each hold and
release ~1.2 µs of Redis, and each screening kept up to SEATLOCK_EVENT_LOG_LENGTH events).

``/ws/stats`` answers for every process sharing the Redis: each hub keeps its watchers per
screening in an entry of its own (``keys.ws_stats_entry``) with a TTL of STATS_TTL_MS, rewritten
every STATS_INTERVAL_S (``publish_stats``); ``service_stats`` sums the live entries. Another
process's figures are at most STATS_INTERVAL_S old; a process that dies drops out within
STATS_TTL_MS (Redis expires the entry: no host's clock decides), one that stops removes its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from seatlock import keys
from seatlock.engine.cluster import ClusterTransport
from seatlock.engine.errors import ScreeningNotFound
from seatlock.engine.model import SeatState
from seatlock.engine.shards import ShardChannels
from seatlock.engine.transport import Transport
from seatlock.engine.watchers import CLOSE as CLOSE
from seatlock.engine.watchers import QUEUE_SIZE as QUEUE_SIZE
from seatlock.engine.watchers import Message, Rendered, Room, Socket
from seatlock.engine.watchers import Watcher as Watcher
from seatlock.engine.watchers import text_frame as text_frame
from seatlock.errors import SeatLockError
from seatlock.heartbeats import BEAT_S, Beat, no_beat
from seatlock.metrics import WS_CONNECTIONS, WS_EVENT_DELAY, WS_EVENTS_SENT

logger = logging.getLogger(__name__)

EVENTS_PATTERN = keys.screening_events(0).replace("{scr:0}", "{scr:*}")
# How every seat event starts (lua/lib.lua publish()): the screening id is read from this head
# alone when nobody in this process needs the rest of the event (``Hub.dispatch``).
EVENT_HEAD = b'{"screening_id":'
HEALTH_S = 15.0  # a silent subscription is pinged after this, dropped after twice this
STATS_INTERVAL_S = 1.0  # a process rewrites its /ws/stats entry this often
STATS_TTL_MS = 3000  # an entry not rewritten for this long (its process died) expires
# A fan-out waits this many times the last one's cost after it (``Hub._fan_out_due``), and never
# longer than FAN_OUT_MAX_REST_S.
FAN_OUT_REST = 4.0
FAN_OUT_MAX_REST_S = 0.25
FAN_OUT_MIN_REST_S = 0.001  # a shorter rest is not worth a timer: the end of the turn it is
SUBSCRIBE_S = 2.0  # a client waits this long at most for its screening's shard subscription
RESYNC_MAX_S = 2.0  # a map that could not be read for a resync is asked again at least this often
TOPOLOGY_S = 1.0  # a cluster hub compares the primaries this often (sharded pub/sub or not)
# A screening's event log (what a reconnecting watcher is replayed from) is kept only while some
# process marks it watched (lua/watch.lua): each hub marks its watched screenings for WATCH_TTL_MS,
# again every WATCH_REFRESH_S, so the log outlives the last watcher by one to two minutes.
WATCH_TTL_MS = 120_000
WATCH_REFRESH_S = 20.0

Snapshot = Callable[[int], Awaitable[list[SeatState]]]  # a screening's whole seat map
Watch = Callable[[int, int], Awaitable[object]]  # keep a screening's event log for ttl ms more
EventListener = Callable[[int, dict[str, Any]], None]  # (screening id, the parsed event)


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC with a Z."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def now_iso(ms: int | None = None) -> str:
    """``ms`` (default: this host's clock now) as ISO 8601 UTC with a Z."""
    if ms is None:
        return datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
    return iso(ms) or ""


def encode(message: dict[str, Any] | msgspec.Struct) -> str:
    return msgspec.json.encode(message).decode()


SeatStatus = Literal["available", "reserved", "booked"]
# ISO 8601 UTC with milliseconds and a Z (``iso``); the Meta only documents it (JSON Schema).
Timestamp = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]


class SeatUpdate(msgspec.Struct, tag_field="type", tag="seat_update"):
    """One seat changed (hold, extend, cancel, expiry, booking, ticket cancel)."""

    seat_id: int
    status: SeatStatus
    reserved_by: int | None  # the holder or buyer, only when that is the viewer (invariant 9)
    expires_at: Timestamp | None  # the hold's end; null when not held
    timestamp: Timestamp  # when the change was made
    version: int | None = None  # the screening's version after it (null: see BulkSeatUpdate)


class BulkItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One seat of a bulk update; the owner's field is present only for the owner."""

    seat_id: int
    status: SeatStatus
    reserved_by: int | None = None  # the viewer's own hold
    booked_by: int | None = None  # the viewer's own ticket
    expires_at: Timestamp | None  # the hold's end; null when not held


class BulkSeatUpdate(msgspec.Struct, tag_field="type", tag="bulk_seat_update"):
    """Several seats changed in one step (a multi-seat hold, a booking, a resync's whole map)."""

    updates: list[BulkItem]
    timestamp: Timestamp
    # The screening's version after the change: reconnect with ?since= the last one seen. Null
    # only on a resync's whole map (the server lost its event feed; keep the last version).
    version: int | None = None


def _owner_for(seat: dict[str, Any], viewer: int | None) -> int | None:
    """The seat's holder or buyer if that is the viewer; None otherwise (invariant 9)."""
    owner = seat.get("user_id")
    return owner if owner is not None and owner == viewer else None


def seat_update(
    seat: dict[str, Any], viewer: int | None, ts: str, version: int | None
) -> SeatUpdate:
    return SeatUpdate(
        seat["seat_id"],
        seat["status"],
        _owner_for(seat, viewer),
        iso(seat.get("expires_at")),
        ts,
        version,
    )


def bulk_item(seat: dict[str, Any], viewer: int | None) -> BulkItem:
    owner = _owner_for(seat, viewer)
    if seat["status"] == "booked":
        return BulkItem(seat_id=seat["seat_id"], status="booked", booked_by=owner, expires_at=None)
    expires_at = iso(seat.get("expires_at"))
    return BulkItem(
        seat_id=seat["seat_id"], status=seat["status"], reserved_by=owner, expires_at=expires_at
    )


def render(event: dict[str, Any], viewer: int | None) -> str:
    """The WebSocket message of one engine event as ``viewer`` may see it."""
    return render_json(event, viewer).decode()


def render_json(event: dict[str, Any], viewer: int | None) -> bytes:
    seats: list[dict[str, Any]] = event.get("seats") or []
    ts = iso(event.get("ts")) or now_iso()
    version = event.get("version")
    if len(seats) == 1:
        return msgspec.json.encode(seat_update(seats[0], viewer, ts, version))
    return msgspec.json.encode(BulkSeatUpdate([bulk_item(s, viewer) for s in seats], ts, version))


def rendered(event: dict[str, Any], named: Iterable[int]) -> Rendered:
    """The event as the public sees it, and as each owner named in it among ``named`` does."""
    version = event.get("version")
    owners = {s.get("user_id") for s in event["seats"]}.intersection(named)
    private = {user: Message(render_json(event, user), version) for user in owners}
    return Message(render_json(event, None), version), private


class Hub:
    """This process's watchers, fed by one pattern subscription on every screening's channel."""

    def __init__(
        self,
        transport: Transport,
        snapshot: Snapshot | None = None,
        now_ms: Callable[[], int] | None = None,
        watch: Watch | None = None,
    ) -> None:
        self._transport = transport
        self._snapshot = snapshot
        # Marks a screening watched, so its event log is kept (SeatEngine.watch); None: never
        # marked (a hub of tests that replay nothing).
        self._watch = watch
        self._watched_at: dict[int, float] = {}  # screening -> when last marked (monotonic)
        self._marked_all = time.monotonic()  # when every watched screening was last marked
        # The clock of hold times (the engine's: Redis's), so the ts of snapshots and pings is
        # on the clock of the events' ts and expires_at.
        self.now_ms = now_ms or wall_ms
        self._rooms: dict[int, Room] = {}
        # Events of each screening parsed since the last fan-out, in publish order: they go out
        # together once the loop has read everything that is ready (``_fan_out``).
        self._pending: dict[int, list[dict[str, Any]]] = {}
        self._fanning: asyncio.Handle | None = None
        # When the last fan-out ended (monotonic) and the CPU it took (this thread's, seconds):
        # the next waits for FAN_OUT_REST times as long (``_fan_out_due``).
        self._fanned_at = 0.0
        self._fan_cost = 0.0
        self.ready = asyncio.Event()
        # Told every screening id an event arrives for (caches drop what it changed).
        self.change_listeners: list[Callable[[int], None]] = []
        # Given every event as published, in order.
        self.event_listeners: list[EventListener] = []
        # Given the reset events of screenings watched here, after the events before them went
        # out: rare (a load, a refresh, a move to another room: api/websockets.py sends the
        # watchers of a moved screening its new map). A deleted screening's watchers are let go.
        self.reset_listeners: list[EventListener] = []
        # (wants, listener): given every event of the screenings ``wants`` accepts, in order
        # (seatlock/engine/mirrors.py). ``wants`` must accept a screening before its first
        # event the listener needs is dispatched: events of others are not even parsed.
        self.screening_listeners: list[tuple[Callable[[int], bool], EventListener]] = []
        # live: subscribed and confirmed by Redis, so every event published since arrives.
        # epoch changes whenever live does, so trust built on one subscription ends with it.
        self.live = False
        self.epoch = 0
        # Epochs are drawn from one count, for the pattern subscription (``epoch``) and for each
        # shard channel (``_heard``): no two subscriptions ever share one.
        self._epochs = itertools.count(1)
        # Names this hub's /ws/stats entry: unique across hosts, processes and servers in one.
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._beat: Beat = no_beat
        # Sharded pub/sub (a cluster of Redis >= 7 only): the channels subscribed per screening,
        # the epoch each one became live at (``hears``), clients waiting for theirs.
        self._shards: ShardChannels | None = None
        self._heard: dict[int, int] = {}
        self._joining: Counter[int] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._decided = asyncio.Event()  # a cluster hub knows whether events are sharded

    def join(self, screening_id: int, user_id: int | None, socket: Socket | None = None) -> Watcher:
        """A new watcher of the screening: written to ``socket`` directly, or queued."""
        room = self._rooms.get(screening_id)
        if room is None:
            room = self._rooms[screening_id] = Room()
        watcher = Watcher(room, screening_id, user_id, socket)
        room.add(watcher)
        WS_CONNECTIONS.inc()
        if self._shards is not None:
            self._shards.want(keys.screening_events(screening_id))
        return watcher

    async def subscribed(self, screening_id: int) -> None:
        """Return once the screening's events reach this hub: at once, except with sharded
        pub/sub, where its channel is subscribed first (for SUBSCRIBE_S at most: a client let
        in without it gets the whole map once it is live). Join right after, with no await
        in between, and nothing published after ``join`` is missed. The screening is marked
        watched first (``_mark``), so every event after the map or catch-up the client is sent
        next is in its log, for the client to be replayed if it reconnects."""
        marked = self._watched_at.get(screening_id)
        if marked is None or time.monotonic() - marked >= WATCH_REFRESH_S:
            await self._mark(screening_id)
        if self._shards is None or screening_id in self._heard:
            return
        self._joining[screening_id] += 1
        try:
            async with asyncio.timeout(SUBSCRIBE_S):
                await self._shards.confirmed(keys.screening_events(screening_id))
        except TimeoutError:
            logger.warning("no shard subscription for screening %s yet", screening_id)
        finally:
            self._joining[screening_id] -= 1
            if not self._joining[screening_id]:
                del self._joining[screening_id]
                if screening_id not in self._rooms:
                    # Released and wanted again by the join that follows in the same step (the
                    # subscriptions are settled later): only a client that never joins drops it.
                    self._unwatched(screening_id)

    async def _mark(self, screening_id: int) -> None:
        """Mark the screening watched for WATCH_TTL_MS (its event log is kept meanwhile). A
        mark that fails (Redis down) is retried by the next refresh; a client that reconnects
        before then, finding events missing from the log, is sent the whole map instead."""
        if self._watch is None:
            return
        started = time.monotonic()
        try:
            async with asyncio.timeout(SUBSCRIBE_S):
                await self._watch(screening_id, WATCH_TTL_MS)
        except (SeatLockError, RedisError, OSError, TimeoutError) as exc:
            logger.debug("cannot mark screening %s watched: %r", screening_id, exc)
            return
        self._watched_at[screening_id] = started

    async def mark_watched(self) -> None:
        """Mark every screening watched here again (every WATCH_REFRESH_S, from
        ``publish_stats``), and forget those nobody here watches any more: their marks lapse."""
        self._marked_all = time.monotonic()
        for screening_id in [sid for sid in self._watched_at if sid not in self._rooms]:
            del self._watched_at[screening_id]
        await asyncio.gather(*(self._mark(screening_id) for screening_id in list(self._rooms)))

    def hears(self, screening_id: int) -> int | None:
        """The epoch of the subscription that brings the screening's events (it changes when
        that subscription is lost or replaced); None while none does."""
        if self._shards is None:
            return self.epoch if self.live else None
        return self._heard.get(screening_id)

    def leave(self, watcher: Watcher) -> None:
        room = self._rooms.get(watcher.screening_id)
        if room is not None and room.remove(watcher):
            WS_CONNECTIONS.dec()
            if not room:
                del self._rooms[watcher.screening_id]
                self._unwatched(watcher.screening_id)

    def _unwatched(self, screening_id: int) -> None:
        if self._shards is not None and screening_id not in self._joining:
            self._shards.release(keys.screening_events(screening_id))

    def stats(self) -> dict[str, Any]:
        """This process's watchers (``service_stats``: every process's)."""
        return stats_of(Counter({sid: len(room) for sid, room in self._rooms.items()}))

    async def service_stats(self) -> dict[str, Any]:
        """The watchers of every process sharing the Redis; this one's counted live, the others'
        as last published. Raises when Redis cannot answer (a partial sum would be wrong)."""
        counts = Counter({sid: len(room) for sid, room in self._rooms.items()})
        members = await self._transport.command("SMEMBERS", keys.WS_STATS_PROCESSES)
        others = [m for m in members or () if m != self.process_id.encode()]
        if not others:
            return stats_of(counts)
        entries = await self._transport.command("MGET", *map(_entry_key, others))
        gone = [member for member, entry in zip(others, entries, strict=True) if entry is None]
        if gone:
            # Their processes died. A process that was only late puts itself back with its
            # next write (SADD each time), so this prune costs it one interval at most.
            await self._transport.command("SREM", keys.WS_STATS_PROCESSES, *gone)
        for entry in entries:
            counts.update(_entry_counts(entry))
        return stats_of(counts)

    async def publish_stats(self, stop: asyncio.Event, beat: Beat = no_beat) -> None:
        """Keep this process's entry for /ws/stats until ``stop`` is set, then remove it."""
        failing = False
        try:
            while not stop.is_set():
                if time.monotonic() - self._marked_all >= WATCH_REFRESH_S:
                    self._spawn(self.mark_watched())
                try:
                    await self._write_stats()
                    failing = False
                except (RedisError, OSError) as exc:
                    if not failing:  # one line per outage, not one a second
                        logger.warning("cannot publish WebSocket stats: %r", exc)
                    failing = True
                beat()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), STATS_INTERVAL_S)
        finally:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._remove_stats(), 1)

    async def _write_stats(self) -> None:
        counts = {str(sid): len(room) for sid, room in self._rooms.items()}
        key = keys.ws_stats_entry(self.process_id)
        # Sent together (one write on the fast transport). The set's TTL goes with the last
        # process: a Redis no server uses keeps nothing of the stats.
        await asyncio.gather(
            self._transport.command("SET", key, orjson.dumps(counts), "PX", STATS_TTL_MS),
            self._transport.command("SADD", keys.WS_STATS_PROCESSES, self.process_id),
            self._transport.command("PEXPIRE", keys.WS_STATS_PROCESSES, STATS_TTL_MS),
        )

    async def _remove_stats(self) -> None:
        await asyncio.gather(
            self._transport.command("DEL", keys.ws_stats_entry(self.process_id)),
            self._transport.command("SREM", keys.WS_STATS_PROCESSES, self.process_id),
        )

    def dispatch(self, data: bytes | str) -> None:
        """Hand one published event to the listeners and to the watchers of its screening.

        Every process reads every event of every screening, most of them of screenings it has
        no watcher or mirror of: those are not parsed (their screening id is read from the head
        alone), which is most of what a won hold costs the hubs of a server that nobody watches.
        """
        screening_id = screening_of(data)
        if screening_id is not None and not self._wanted(screening_id):
            for listener in self.change_listeners:
                listener(screening_id)
            return
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
        for wants, screening_listener in self.screening_listeners:
            if wants(screening_id):
                screening_listener(screening_id, event)
        self._deliver(screening_id, event)

    def _wanted(self, screening_id: int) -> bool:
        """Does anything in this process need the events of the screening parsed?"""
        if screening_id in self._rooms or self.event_listeners:
            return True
        return any(wants(screening_id) for wants, _ in self.screening_listeners)

    def _deliver(self, screening_id: int, event: dict[str, Any]) -> None:
        """Send the event to the screening's watchers with the others read in the same turn.

        Events are read from Redis many to one socket read, and one read after another in one
        turn of the loop when they come fast: each read's events were fanned out one by one,
        a write per event per watcher. They now wait for the end of the turn (a callback due
        at once: nothing else is waited for) and go out together, in publish order, each
        framed once: one write per watcher for all of them. A watcher that joins meanwhile
        gets them too, after its confirmation (an event it would otherwise have missed by a
        hair is no harm). Everything delivered to watchers goes through here, resyncs too, so
        no message overtakes another. Only an event without seats, which no ordinary change
        publishes, is looked at further: a reset (``_reset``)."""
        if screening_id not in self._rooms:
            return
        if not event.get("seats"):
            if event.get("reset"):
                self._reset(screening_id, event)
            return
        pending = self._pending.get(screening_id)
        if pending is None:
            self._pending[screening_id] = [event]
        else:
            pending.append(event)
        if self._fanning is None:
            loop = asyncio.get_running_loop()
            rest = self._fan_out_due() - time.monotonic()
            if rest >= FAN_OUT_MIN_REST_S:
                self._fanning = loop.call_later(rest, self.fan_out)
            else:
                self._fanning = loop.call_soon(self.fan_out)

    def _reset(self, screening_id: int, event: dict[str, Any]) -> None:
        """A reset event of a screening watched here (rare), once every event before it went
        out: the watchers of a deleted screening (lua/forget.lua) are let go, to be closed with
        4404 (api/websockets.py); otherwise the reset listeners are told."""
        self.fan_out()
        if event.get("deleted"):
            self.end(screening_id, ScreeningNotFound(screening_id))
            return
        for listener in self.reset_listeners:
            listener(screening_id, event)

    def end(self, screening_id: int, reason: SeatLockError) -> None:
        """Let every watcher of the screening here go for ``reason`` (``Room.ended``), which
        their connections close with; nothing more is sent to them."""
        room = self._rooms.pop(screening_id, None)
        if room is None:
            return
        room.ended = reason
        WS_CONNECTIONS.dec(len(room))  # they left: a later ``leave`` finds them in no room
        self._unwatched(screening_id)
        for watcher in list(room):
            watcher.let_go()

    def watchers(self, screening_id: int) -> list[Watcher]:
        """The screening's watchers here, dropped ones included."""
        room = self._rooms.get(screening_id)
        return [] if room is None else list(room)

    def _fan_out_due(self) -> float:
        """When the next fan-out may start: at once, unless the last was costly and recent.

        A fan-out costs every watcher a socket write (~6 µs), whether it carries one event or
        twenty. Sent at every turn, a release-day crowd's changes (hundreds a second, 5,000
        watchers) left the workers no time for anything else: accepts, answers and the fan-out
        itself fell seconds behind. Resting FAN_OUT_REST times the last fan-out's cost before
        the next keeps it to 1 / (1 + FAN_OUT_REST) of the loop at most, and the events that
        came meanwhile go out together. A room of a thousand watchers (~3 ms) rests ~12 ms,
        well under the latency a watcher sees anyway; no rest is longer than
        FAN_OUT_MAX_REST_S. The cost is the CPU the fan-out took (``time.thread_time``), not
        the time it spanned: on a busy machine the process is often paused in the middle of a
        long fan-out, which made the wall-clock cost two to four times the CPU and the rests as
        much too long (the release-day crowd's watchers saw each change ~40 % later).
        """
        return self._fanned_at + min(FAN_OUT_REST * self._fan_cost, FAN_OUT_MAX_REST_S)

    def fan_out(self) -> None:
        """Send every event waiting to its watchers now (tests call it; the loop does too)."""
        if self._fanning is not None:
            self._fanning.cancel()
            self._fanning = None
        pending, self._pending = self._pending, {}
        if not pending:
            return
        started = time.thread_time()  # the CPU it takes (see _fan_out_due)
        now = asyncio.get_running_loop().time()
        stamps: list[int] = []
        for screening_id, events in pending.items():
            room = self._rooms.get(screening_id)
            if room is not None:
                named = room.named.keys()
                room.fan_out([rendered(event, named) for event in events], now)
                # Once per batch: an increment per client costs ~1 µs.
                WS_EVENTS_SENT.inc(len(room) * len(events))
                stamps += [ts for event in events if isinstance(ts := event.get("ts"), int)]
        self._fanned_at = time.monotonic()  # not loop.time(): uvloop's is the turn's, in ms
        self._fan_cost = time.thread_time() - started
        if stamps:  # how late the last watcher here got each event: server-side lag
            sent_ms = self.now_ms()
            for ts in stamps:
                WS_EVENT_DELAY.observe(max(0, sent_ms - ts) / 1000)

    async def run(self, stop: asyncio.Event, beat: Beat = no_beat) -> None:
        """Receive events until ``stop`` is set; resubscribes after a lost connection."""
        self._beat = beat
        follower = None
        if isinstance(self._transport, ClusterTransport):
            follower = asyncio.create_task(self._follow_cluster(self._transport, stop))
        try:
            await self._receive(stop, beat)
        finally:
            if follower is not None:  # it ends with ``stop`` (else we are cancelled)
                await asyncio.wait([follower], timeout=2 * SUBSCRIBE_S)
                follower.cancel()
            for task in list(self._tasks):  # resyncs still waiting for a map
                task.cancel()
            await asyncio.gather(
                *self._tasks, *[f for f in (follower,) if f is not None], return_exceptions=True
            )

    async def _receive(self, stop: asyncio.Event, beat: Beat) -> None:
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
                logger.warning(
                    "seat event subscription restored; resyncing %d screening(s)", len(self._rooms)
                )
                self._resync()
            if isinstance(self._transport, ClusterTransport) and not self._decided.is_set():
                # Ready once it is known which pub/sub carries the events (else a client let in
                # now would be watching the pattern while the scripts SPUBLISH).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._decided.wait(), SUBSCRIBE_S)
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
            self.epoch = next(self._epochs)

    def _resync(self) -> None:
        """After a lost subscription, send watchers the whole seat map: changes made while we
        were away were not delivered (pub/sub does not queue). Events published since the new
        subscription follow the snapshot, so every seat converges to its latest state."""
        for screening_id in list(self._rooms):
            self._spawn(self._resync_one(screening_id))

    async def _resync_one(self, screening_id: int) -> None:
        """Send the screening's watchers its whole map. A map that cannot be read yet (its
        primary failing over) is asked again until it can, or until nobody watches: giving up
        would leave a change made while we were away unseen until the seat changes again."""
        delay = 0.1
        while self._snapshot is not None and screening_id in self._rooms:
            try:
                states = await self._snapshot(screening_id)
            except (SeatLockError, RedisError, OSError) as exc:
                if delay == 0.1:
                    logger.warning("no seat map to resync screening %s yet: %r", screening_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESYNC_MAX_S)
                continue
            self._deliver(screening_id, snapshot_event(screening_id, states, self.now_ms()))
            return

    async def _follow_cluster(self, transport: ClusterTransport, stop: asyncio.Event) -> None:
        """Keep the shard subscriptions while the cluster publishes with SPUBLISH, and ask
        again whenever its primaries change (a failover, a new node, a mixed cluster)."""
        shards = ShardChannels(transport, self.dispatch, self._channel_changed)
        runner = asyncio.create_task(shards.run(stop))
        seen: set[str] = set()
        try:
            while not stop.is_set():
                slots = None
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    slots = await transport.slot_map()
                    now = {node.name for _, _, node in slots}
                    if now != seen:
                        await transport.choose_publish()
                        seen = now
                self._use_shards(shards if transport.sharded else None)
                if slots is not None and self._shards is not None:
                    self._shards.follow(slots)  # a channel left on a node that lost its slot
                self._decided.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), TOPOLOGY_S)
        finally:
            self._use_shards(None)
            await asyncio.gather(runner, return_exceptions=True)

    def _use_shards(self, shards: ShardChannels | None) -> None:
        """Switch between shard channels and the pattern subscription alone; every watched
        screening's map is sent again once its new subscription is live."""
        if shards is self._shards:
            return
        old, self._shards = self._shards, shards
        self._heard.clear()
        self.epoch = next(self._epochs)
        for screening_id in list(self._rooms):
            channel = keys.screening_events(screening_id)
            if old is not None:
                old.release(channel)
            if shards is not None:
                shards.want(channel)
        if shards is None:
            self._resync()

    def _channel_changed(self, channel: str, live: bool) -> None:
        """A shard channel became live (Redis confirmed it) or stopped being live."""
        screening_id = _screening_of(channel)
        if screening_id is None:
            return
        if not live:
            self._heard.pop(screening_id, None)
            return
        self._heard[screening_id] = next(self._epochs)
        if screening_id in self._rooms:  # watchers who may have missed changes meanwhile
            self._spawn(self._resync_one(screening_id))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _screening_of(channel: str) -> int | None:
    """The screening id of a seat event channel (``keys.screening_events``)."""
    head, _, rest = channel.partition("{scr:")
    number, _, tail = rest.partition("}")
    ok = head == keys.PREFIX and number.isdigit() and tail == ":events"
    return int(number) if ok else None


def screening_of(data: bytes | str) -> int | None:
    """The screening id at the head of a seat event, the rest unread; None when the event does
    not start as publish() writes it (it is then parsed whole, or found malformed)."""
    raw = data if isinstance(data, bytes) else data.encode()
    if not raw.startswith(EVENT_HEAD):
        return None
    start = len(EVENT_HEAD)
    end = raw.find(b",", start)
    digits = raw[start:end]
    return int(digits) if digits.isdigit() else None


def stats_of(counts: Counter[int]) -> dict[str, Any]:
    """The /ws/stats reply for watchers per screening id (screenings with none left out)."""
    active = sorted(sid for sid, n in counts.items() if n > 0)
    return {
        "total_connections": sum(counts[sid] for sid in active),
        "active_screenings": active,
        "screening_details": {str(sid): counts[sid] for sid in active},
    }


def _entry_key(member: bytes) -> str:
    return keys.ws_stats_entry(member.decode())


def _entry_counts(entry: bytes | None) -> Counter[int]:
    """Watchers per screening of one published entry; nothing for a gone or unreadable one."""
    if entry is None:
        return Counter()
    try:
        return Counter({int(sid): int(n) for sid, n in orjson.loads(entry).items()})
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        logger.warning("ignoring malformed WebSocket stats entry %r", entry[:200])
        return Counter()


def wall_ms() -> int:
    return int(time.time() * 1000)


def snapshot_event(screening_id: int, states: list[SeatState], now_ms: int) -> dict[str, Any]:
    seats = [
        {
            "seat_id": s.seat_id,
            "status": s.status,
            "user_id": s.user_id,
            "expires_at": s.expires_at_ms,
        }
        for s in states
    ]
    return {"screening_id": screening_id, "ts": now_ms, "seats": seats}
