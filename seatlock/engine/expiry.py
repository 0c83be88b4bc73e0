"""Hold expiry: each process frees the holds it made at their deadlines (``free_at_deadlines``),
keyspace notifications push the others' (a process that died), and a periodic sweep is the net.

Every process hears every key of the database expire, sessions and throttles included, and a
release day lapses holds by the ten thousand: the listener keeps only the seats whose lease
expired, by screening (``Lapsed``, at most MAX_LAPSED), and frees each screening's in one script
per pass, however many of its leases expired meanwhile. Past that bound it keeps none and sweeps
every screening once instead (the sweep frees by deadline what the notifications named)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from seatlock import keys
from seatlock.engine.cluster import ClusterTransport, MergedFeed
from seatlock.engine.deadlines import Deadlines
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Feed, Transport
from seatlock.errors import SeatLockError
from seatlock.heartbeats import Beat, no_beat, pause
from seatlock.metrics import EXPIRIES

logger = logging.getLogger(__name__)
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.1, 5.0
TOPOLOGY_S = 2.0  # on a cluster, how often the listener checks that it hears every primary
EXPIRED_BY_LISTENER, EXPIRED_BY_SWEEP = EXPIRIES.labels("listener"), EXPIRIES.labels("sweep")
EXPIRED_BY_TIMER = EXPIRIES.labels("timer")
FLAGS = "notify-keyspace-events"
# Seats the listener keeps between two passes: ~100 bytes each, so ~10 MB at most, however fast
# keys expire; beyond it the next pass is a sweep of every screening.
MAX_LAPSED = 100_000
WAIT_S = 0.5  # the longest the listener waits for an expiry before it beats and looks around


async def enable_keyspace_events(
    transport: Transport, nodes: Sequence[ClusterNode] | None = None
) -> bool:
    """Make Redis publish key expiries ("Ex"), on every primary of a cluster (notifications are
    per node), or on ``nodes``; False when CONFIG is refused."""
    try:
        if isinstance(transport, ClusterTransport):
            await _enable_on_primaries(transport, nodes)
        else:
            await _enable_on(transport.command)
    except ResponseError as exc:
        logger.warning("cannot enable keyspace events (%s); relying on the sweep", exc)
        return False
    return True


async def _enable_on_primaries(
    transport: ClusterTransport, nodes: Sequence[ClusterNode] | None
) -> None:
    for node in await transport.primaries() if nodes is None else nodes:
        try:
            async with transport.node_client(node) as client:
                await _enable_on(client.execute_command)
        except ResponseError:
            raise
        except (RedisError, OSError) as exc:
            # A primary down: the listener's subscription misses it too, and enables it when it
            # answers again or its replica takes over (ClusterTransport.follows).
            logger.warning("cannot enable keyspace events on %s: %r", node.name, exc)


async def _enable_on(command: Callable[..., Awaitable[Any]]) -> None:
    reply = await command("CONFIG", "GET", FLAGS)  # [name, flags], or [] if unknown
    current = _text(reply[1]) if len(reply) > 1 else ""
    wanted = _with_expired_events(current)
    if wanted != current:
        await command("CONFIG", "SET", FLAGS, wanted)


def _with_expired_events(flags: str) -> str:
    """Add E (keyevent channel) and x (expired) to Redis's notify-keyspace-events flags."""
    if "E" not in flags:
        flags += "E"
    if "x" not in flags and "A" not in flags:
        flags += "x"
    return flags


async def listen_for_expiries(
    engine: SeatEngine, transport: Transport, stop: asyncio.Event, beat: Beat = no_beat
) -> None:
    """Turn expired lease keys into seat changes until ``stop`` is set; resubscribes on errors."""
    channel = f"__keyevent@{transport.db}__:expired"
    delay = RECONNECT_MIN_S
    while not stop.is_set():
        try:
            await _listen(engine, transport, channel, stop, beat)
            delay = RECONNECT_MIN_S
        except (RedisError, OSError) as exc:
            logger.warning("expiry listener lost Redis (%r); retrying in %.1fs", exc, delay)
            await pause(stop, delay, beat)
            delay = min(delay * 2, RECONNECT_MAX_S)


async def _listen(
    engine: SeatEngine, transport: Transport, channel: str, stop: asyncio.Event, beat: Beat
) -> None:
    """One subscription: seats whose lease expired are kept as they arrive, and freed together."""
    lapsed = Lapsed()
    feed = await transport.subscribe(channel, lapsed.add)
    # At a stop, the wait for the next expiry ends at once (a shutdown waited up to WAIT_S).
    waking = asyncio.create_task(_at_stop(stop, lapsed.ready.set))
    try:
        if isinstance(feed, MergedFeed):  # a cluster's
            # A promoted replica or a new primary may not publish expiries yet: CONFIG SET is
            # not replicated, so each node needs its own (every subscription is made after a
            # change). On the very primaries the feed covers: asked apart, a failover between
            # the two questions left a promoted replica subscribed to but never told to publish.
            await enable_keyspace_events(transport, feed.nodes)
        # Expiries while we were not subscribed are lost: catch up on them once.
        await _sweep_once(engine.sweep)
        following = _Following(transport, feed)
        while not stop.is_set() and not feed.closed.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lapsed.ready.wait(), WAIT_S)
            if not stop.is_set():
                await _free_lapsed(engine, lapsed)
            beat()
            if not await following.still():
                raise RedisConnectionError("the cluster's primaries changed: subscribing anew")
        if not stop.is_set():
            raise RedisConnectionError(f"expiry subscription closed: {feed.trouble}")
    finally:
        waking.cancel()
        feed.close()


class Lapsed:
    """The seats whose lease expired since the listener's last pass, by screening: each seat
    once, however many notifications name it, and MAX_LAPSED seats at most (``overflowed``:
    some were not kept). Any other key that expired is not kept at all."""

    def __init__(self) -> None:
        self.seats: dict[int, set[int]] = {}
        self.count = 0
        self.overflowed = False
        self.ready = asyncio.Event()  # set when there is something to free

    def add(self, key: bytes | str) -> None:
        """The feed's callback: one expired key."""
        parsed = keys.parse_seat_hold(key)
        if parsed is None:
            return
        screening_id, seat_id = parsed
        seats = self.seats.get(screening_id)
        if seats is None or seat_id not in seats:
            if self.count >= MAX_LAPSED:
                self.overflowed = True
            else:
                self.seats.setdefault(screening_id, set()).add(seat_id)
                self.count += 1
        self.ready.set()

    def take(self) -> tuple[dict[int, set[int]], bool]:
        """What was kept, and whether some was not; the next pass starts empty."""
        taken, overflowed = self.seats, self.overflowed
        self.seats, self.count, self.overflowed = {}, 0, False
        self.ready.clear()
        return taken, overflowed


async def _free_lapsed(engine: SeatEngine, lapsed: Lapsed) -> None:
    """One pass: the kept seats' holds dropped, one script per screening (all at once), and a
    sweep of every screening when some seats were not kept."""
    taken, overflowed = lapsed.take()
    if taken:
        freed = await asyncio.gather(*(_expire(engine, sid, seats) for sid, seats in taken.items()))
        EXPIRED_BY_LISTENER.inc(sum(freed))
    if overflowed:
        logger.warning("over %d holds lapsed at once: sweeping every screening", MAX_LAPSED)
        await _sweep_once(engine.sweep)


async def _expire(engine: SeatEngine, screening_id: int, seats: set[int]) -> int:
    try:
        return await engine.expire_leases(screening_id, list(seats))
    except SeatLockError as exc:  # its node is down: the sweep frees them once it answers
        logger.warning(
            "could not free the %d lapsed holds of screening %s: %s",
            len(seats),
            screening_id,
            exc.detail,
        )
        return 0


async def _at_stop(stop: asyncio.Event, wake: Callable[[], None]) -> None:
    """Call ``wake`` when ``stop`` is set: a loop waiting on something else ends its wait."""
    await stop.wait()
    wake()


class _Following:
    """Whether a cluster subscription still hears every primary, asked every TOPOLOGY_S.

    Keyspace notifications stay on their node: after a failover (kill or CLUSTER FAILOVER, where
    the old primary lives on as a replica and its feed stays up) or a resharding onto a new node,
    the expiries of the moved slots are published where nobody listens. A changed set of
    primaries ends the subscription; the next one enables the notifications and subscribes on
    the primaries of the moment, and sweeps once for what was missed in between.
    """

    def __init__(self, transport: Transport, feed: Feed) -> None:
        self._cluster = transport if isinstance(transport, ClusterTransport) else None
        self._feed = feed
        self._next = time.monotonic() + TOPOLOGY_S

    async def still(self) -> bool:
        if self._cluster is None or time.monotonic() < self._next:
            return True
        self._next = time.monotonic() + TOPOLOGY_S
        try:
            return await self._cluster.follows(self._feed)
        except (RedisError, OSError) as exc:  # no node answers: the feed itself will end
            logger.debug("cannot read the cluster's primaries: %r", exc)
            return True


async def free_at_deadlines(
    engine: SeatEngine, deadlines: Deadlines, stop: asyncio.Event, beat: Beat = no_beat
) -> None:
    """Sweep each screening when its next hold deadline comes (seatlock/engine/deadlines.py),
    until ``stop`` is set; the engine notes the deadlines of the holds made here."""
    engine.deadlines = deadlines
    waking = asyncio.create_task(_at_stop(stop, deadlines.sooner.set))
    try:
        while not stop.is_set():
            deadlines.sooner.clear()  # first: what is noted (or stops) from here on wakes it
            now = engine.now_ms()
            due = deadlines.due(now)
            if due:
                await _free_due(engine, deadlines, due, now)
            beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(deadlines.sooner.wait(), deadlines.wait_s(engine.now_ms()))
    finally:
        waking.cancel()
        engine.deadlines = None


async def _free_due(engine: SeatEngine, deadlines: Deadlines, due: list[int], now: int) -> None:
    try:
        freed, upcoming = await engine.sweep_due(due, now)
    except (SeatLockError, RedisError, OSError) as exc:
        # Their holds are left to the listener and the sweep, until a hold here notes them again.
        logger.warning("could not free the holds due in %d screenings: %r", len(due), exc)
        return
    for screening_id, deadline_ms in upcoming.items():
        deadlines.note(screening_id, deadline_ms)
    if freed:
        EXPIRED_BY_TIMER.inc(freed)


async def sweep_forever(
    engine: SeatEngine, interval_s: float, stop: asyncio.Event, beat: Beat = no_beat
) -> None:
    """Run ``engine.sweep_some()`` every ``interval_s`` seconds until ``stop`` is set: every
    loaded screening is looked at once per interval while there are at most SWEEP_SLICE of them,
    and within len(loaded) / SWEEP_SLICE intervals beyond (a net: each process frees its own
    holds on time, and the listener the others')."""
    while not stop.is_set():
        await _sweep_once(engine.sweep_some)
        beat()
        await pause(stop, interval_s, beat)


async def _sweep_once(sweep: Callable[[], Awaitable[int]]) -> None:
    """One ``sweep`` (the engine's whole sweep or a turn of it), counted and logged."""
    try:
        freed = await sweep()
    except (SeatLockError, RedisError, OSError) as exc:
        logger.warning("sweep failed: %r", exc)
        return
    if freed:
        EXPIRED_BY_SWEEP.inc(freed)
        logger.info("sweep freed %d expired holds", freed)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
