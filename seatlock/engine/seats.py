"""The seat-hold engine: holds, extensions, releases, claims and sales as Python calls.

Every state change is one Lua script (``lua/``), so a multi-seat change is all-or-nothing and is
published on the screening's channel in the order it happened. The screening's layout and sold
seats are loaded from PostgreSQL (a ``LayoutSource``) on first use and again after Redis lost them.
Catalog changes reach Redis through ``refresh`` (start or seats changed: live holds kept, seats
gone from the layout stay listed while held or sold), ``move`` (another room: a refresh that lets
go of every hold, its watchers sent the new map) and ``forget`` (screening deleted: its keys go,
and its tombstone stays, so a load or refresh that read it before writes nothing).
Scripts and the few plain commands reach Redis through a ``Transport``
(seatlock/engine/transport.py), which pipelines the calls of the whole process in order.

With ``replicas`` (``SEATLOCK_HOLD_REPLICAS``), a hold, an extension and a sale are answered only
once WAIT confirmed that many replicas have them, so a failover right after the answer does not
lose them. When WAIT times out the change did happen on the primary, but the caller is told 503
(``ReplicasBehind``): a hold's grant is let go again first, an extension stands (it only ever
gives more time), a sale is retried by the booking flow (seatlock/services/bookings.py).

Every time a script gets (ARGV's now) and every deadline it answers is on Redis's clock, read
through ``clock`` (seatlock/engine/clock.py: the host's clock plus an offset measured against
Redis TIME), so API hosts whose clocks differ decide and show the same hold times. Callers that
need the time of a hold (services, the seat-map cache) take it from ``now_ms()``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from seatlock import keys
from seatlock.engine.clock import RedisClock
from seatlock.engine.deadlines import SPACING_MS, Deadlines
from seatlock.engine.errors import (
    ScreeningNotFound,
    ScreeningStarted,
    SeatsUnavailable,
    StaleRows,
    TooManySeats,
    UnknownSeats,
    raise_for,
)
from seatlock.engine.listing import LoadedScreenings
from seatlock.engine.mirrors import SeatMirrors, SeatSnapshot
from seatlock.engine.model import Extended, Hold, Layout, LayoutSource, SeatState, new_grant
from seatlock.engine.rows import SEAT_TYPES, Geometry, rows_fields
from seatlock.engine.scripts import Status
from seatlock.engine.transport import (
    REDIS_DOWN,
    NotReplicated,
    Replicas,
    Transport,
    answered,
)
from seatlock.errors import InvalidInput, SeatLockError, Unavailable

logger = logging.getLogger(__name__)
SWEEP_BATCH = 500  # seats per sweep script run, and screenings per sweep round trip
# Screenings the periodic sweep looks at per pass (``sweep_some``), the next ones at the next pass:
# looking costs this process ~8 us of CPU per screening, so a pass over 10,000 loaded screenings
# took ~80 ms of it and over 30,000 ~330 ms, every second; a pass now takes 16-19 ms.
SWEEP_SLICE = 2_000
# A screening's holds are all gone max_hold_ms after it starts (holds end at the start at the
# latest, pins a minute later); the sweep stops looking at it after this margin on top.
SWEEP_AFTER_START_MS = 3_600_000
# A screening's node not answering (a cluster primary failing over): what the engine raises for
# it, or the transport's own.
NODE_DOWN: tuple[type[Exception], ...] = (Unavailable, *REDIS_DOWN)
MAX_ID = 2**53  # ids travel through Lua numbers (doubles)
MAX_GEOMETRIES = 512  # screenings whose row geometry a process keeps (``rows``)
# A grant ends its leases' values "user:grant": no ':' in it, so a release by grant matches whole.
GRANT = re.compile(r"[0-9A-Za-z_-]{1,64}")
REPLICAS_BEHIND = "Seat change not yet confirmed by the Redis replicas; please try again"
# Scripts that get the rows hash (seatlock/engine/rows.py) as their last key, after any leases.
ROWS_SCRIPTS = frozenset({"hold", "hold_best", "load", "refresh", "forget"})
# Scripts that get the screening's tombstone (keys.screening_deleted) just before the rows hash.
TOMBSTONE_SCRIPTS = frozenset({"load", "refresh", "forget"})
# How long a deleted screening's tombstone stays (lua/forget.lua). It only has to outlast a load
# or refresh that read PostgreSQL before the delete committed (a request's time, seconds); an
# hour covers any stalled process, and bounds what it costs when ids come back after all (a
# database restored from a backup, or made anew, beside a Redis that kept its data).
TOMBSTONE_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Resumed:
    """A resuming watcher's catch-up (``SeatEngine.resume``): the screening's version and the
    events after the watcher's up to it, oldest first, as published (JSON); None when they are
    not all kept."""

    version: int
    events: list[str] | None


class ReplicasBehind(Unavailable):
    """A change ran on the Redis primary, but too few replicas confirmed it in time (503)."""


class SeatEngine:
    """Seat holds of every screening, kept in Redis; one instance per process."""

    def __init__(
        self,
        transport: Transport,
        source: LayoutSource,
        *,
        hold_ms: int,
        max_hold_ms: int,
        max_seats_per_user: int,
        replicas: Replicas | None = None,
        clock: RedisClock | None = None,
        event_log_length: int = 500,
        no_single_gaps: bool = False,
    ) -> None:
        self.transport = transport  # the way to Redis; the owner closes it
        # Holds, extensions and sales wait for this many replicas (None: for none).
        self.replicas = replicas
        # Redis's clock, the one every hold time is on; synced by its owner's loop (unsynced:
        # the local clock, as tests that pass time in need nothing else).
        self.clock = RedisClock(transport.command) if clock is None else clock
        self._source = source
        self.hold_ms = hold_ms
        self.max_hold_ms = max_hold_ms
        self.max_seats_per_user = max_seats_per_user
        # Events kept per screening for watchers that resume (``resume``); written into Redis
        # with the screening at its load and every refresh.
        self.event_log_length = event_log_length
        # A lock per screening being loaded, refreshed or forgotten here (``_one_at_a_time``).
        self._loading: dict[int, _Turns] = {}
        # The screenings loaded into Redis, for the sweep and the reconciler.
        self.loaded = LoadedScreenings(transport)
        self._swept_up_to = 0  # the last screening a periodic sweep pass looked at (sweep_some)
        # Told the screening id after every script run here (even a failed one): local caches.
        self.change_listeners: list[Callable[[int], None]] = []
        # Refuses hopeless holds without Redis (seatlock/engine/mirrors.py); set by its feeder.
        self.mirrors: SeatMirrors | None = None
        # The single-gap rule of screenings that do not set their own (SEATLOCK_NO_SINGLE_GAPS).
        self.no_single_gaps = no_single_gaps
        # Row geometry as last read from Redis, per screening (best available, gap messages).
        self._rows: dict[int, Geometry] = {}
        # The next deadline of each screening this process holds seats in, for the loop that
        # frees them on time (seatlock/engine/deadlines.py); None: no such loop runs here.
        self.deadlines: Deadlines | None = None

    def now_ms(self) -> int:
        """Redis's clock now (ms since the epoch): the time every hold is decided and shown by."""
        return self.clock.now_ms()

    async def hold(
        self,
        screening_id: int,
        user_id: int,
        seat_ids: list[int],
        now_ms: int | None = None,
        *,
        grant: str | None = None,
    ) -> list[Hold]:
        """Hold every seat for ``hold_ms`` or none, under ``grant`` (None: a new one); seats the
        caller already holds are kept, with the grant they have."""
        _check_user(user_id)
        if grant is not None:
            _checked_grant(grant)
        seats = _seat_list(seat_ids)
        if len(seats) > self.max_seats_per_user:
            raise TooManySeats(self.max_seats_per_user)
        now = self._now(now_ms)
        mirrors = self.mirrors
        if mirrors is not None:
            if refused := mirrors.refusal(screening_id, user_id, seats, now):
                raise _refused_here(refused)  # Redis would refuse it the same way
            under_way = mirrors.in_flight(screening_id, seats)
            if under_way is not None:
                # A hold of some of these seats from this process is on its way to Redis. Its
                # grant is known the moment it returns, so wait for it rather than race it there
                # (most such races are lost); wait once, so no attempt queues behind many.
                await asyncio.shield(under_way)
                now = self._now(now_ms)
                if refused := mirrors.refusal(screening_id, user_id, seats, now):
                    raise _refused_here(refused)
        return await self._hold(screening_id, user_id, seats, now, grant)

    async def _hold(
        self, screening_id: int, user_id: int, seats: list[int], now: int, grant: str | None
    ) -> list[Hold]:
        """The hold script, announced to the screening's mirror while it is under way."""
        grant = new_grant() if grant is None else grant  # made here: a refusal above needs none
        args: list[int | str] = [user_id, self.hold_ms, self.max_seats_per_user, grant, *seats]
        mirrors = self.mirrors
        sent = mirrors.sending(screening_id, seats) if mirrors is not None else None
        try:
            reply = await self._run_loaded("hold", screening_id, seats, now, args, self.replicas)
            holds = _holds(user_id, reply[2:])
            if mirrors is not None and reply[1]:
                mirrors.granted(screening_id, user_id, holds, int(reply[1]))
            self._note_deadlines(screening_id, holds)
        except ReplicasBehind:
            await self._let_go(screening_id, grant, seats)
            raise
        finally:
            if mirrors is not None and sent is not None:
                mirrors.answered(screening_id, seats, sent)
        return holds

    async def hold_best(
        self,
        screening_id: int,
        user_id: int,
        count: int,
        *,
        seat_type: str | None = None,
        near: tuple[str, int] | None = None,
        now_ms: int | None = None,
        grant: str | None = None,
    ) -> list[Hold]:
        """Hold the best block of ``count`` adjacent free seats of one row (lua/hold_best.lua
        says which is best), chosen and held in one script run, under ``grant``."""
        _check_user(user_id)
        grant = new_grant() if grant is None else _checked_grant(grant)
        if not 0 < count <= self.max_seats_per_user:
            raise TooManySeats(self.max_seats_per_user) if count > 0 else InvalidInput("count")
        if seat_type is not None and seat_type not in SEAT_TYPES:
            raise InvalidInput(f"Unknown seat type {seat_type!r}")
        now = self._now(now_ms)
        try:
            return await self._hold_best(screening_id, user_id, count, seat_type, near, now, grant)
        except StaleRows:  # the room changed since this process read its rows: read them again
            self._rows.pop(screening_id, None)
            return await self._hold_best(screening_id, user_id, count, seat_type, near, now, grant)

    async def _hold_best(
        self,
        screening_id: int,
        user_id: int,
        count: int,
        seat_type: str | None,
        near: tuple[str, int] | None,
        now: int,
        grant: str,
    ) -> list[Hold]:
        geometry = await self.rows(screening_id, now)
        seats, offsets = geometry.candidates(seat_type)
        focal_row, focal_col = geometry.focal(near)
        args: list[int | str] = [user_id, self.hold_ms, self.max_seats_per_user, grant, count]
        args += [seat_type or "", focal_row, focal_col, geometry.stamp, *offsets]
        try:
            reply = await self._run_loaded(
                "hold_best", screening_id, seats, now, args, self.replicas
            )
        except ReplicasBehind:
            await self._let_go(screening_id, grant, seats)
            raise
        holds = _holds(user_id, reply[2:])
        if self.mirrors is not None:
            self.mirrors.granted(screening_id, user_id, holds, int(reply[1]))
        self._note_deadlines(screening_id, holds)
        return holds

    async def rows(self, screening_id: int, now_ms: int | None = None) -> Geometry:
        """The screening's row geometry (seatlock/engine/rows.py), read from Redis once per
        process; a screening Redis lacks, or loaded before rows were kept, is refreshed first."""
        geometry = self._rows.get(screening_id)
        if geometry is None:
            key = keys.screening_rows(screening_id)
            fields = await self.transport.command("HGETALL", key)
            if not fields:
                if not await self.refresh(screening_id, now_ms):
                    raise ScreeningNotFound(screening_id)
                fields = await self.transport.command("HGETALL", key)
            geometry = Geometry.parse(_pairs(fields))
            if len(self._rows) >= MAX_GEOMETRIES:  # the longest kept goes
                del self._rows[next(iter(self._rows))]
            self._rows[screening_id] = geometry
        return geometry

    async def _let_go(self, screening_id: int, grant: str, seats: list[int]) -> None:
        """Drop what a hold's grant took after too few replicas confirmed it: answered 503, the
        hold must not stay (seats the caller held before keep their own grant). Replicas get
        the release after the hold, in order; if the primary fails first, the leases expire."""
        try:
            await self.release_grant(screening_id, grant, seats)
        except SeatLockError as exc:
            logger.warning("unconfirmed hold not let go, its leases will expire: %r", exc)

    async def extend(
        self,
        screening_id: int,
        user_id: int,
        seat_ids: list[int],
        extra_ms: int,
        now_ms: int | None = None,
    ) -> list[Extended]:
        """Push back the caller's live holds by ``extra_ms`` (capped at max_hold_ms of life),
        each told with how much it gained."""
        _check_user(user_id)
        seats = _seat_list(seat_ids)
        if extra_ms <= 0:
            raise InvalidInput("The extension must be positive")
        args = [user_id, extra_ms, self.max_hold_ms, *seats]
        now = self._now(now_ms)
        try:
            # Unconfirmed by the replicas, it stands all the same: more time never hurts a seat.
            reply = await self._run_loaded("extend", screening_id, seats, now, args, self.replicas)
        except ScreeningStarted:
            raise ScreeningStarted("Cannot extend reservations for past screenings") from None
        flat = reply[1:]
        holds = [
            Extended(int(seat), user_id, int(exp), _grant_of(lease), int(added))
            for seat, exp, lease, added in zip(
                flat[::4], flat[1::4], flat[2::4], flat[3::4], strict=True
            )
        ]
        self._note_deadlines(screening_id, holds)
        return holds

    def _note_deadlines(self, screening_id: int, holds: Sequence[Hold]) -> None:
        if self.deadlines is not None and holds:
            self.deadlines.note(screening_id, min(h.expires_at_ms for h in holds))

    async def release(
        self, screening_id: int, user_id: int, seat_ids: list[int] | None, now_ms: int | None = None
    ) -> list[int]:
        """Drop the caller's holds (None: all of them in the screening); returns the seats freed."""
        _check_user(user_id)
        if seat_ids is None:
            seats = await self._seats_held_by(screening_id, user_id)
        else:
            seats = sorted(set(seat_ids))
        if not seats:
            return []
        now = self._now(now_ms)
        reply = await self._run("release", screening_id, seats, now, [user_id, *seats])
        if reply[0] == Status.NOT_LOADED:
            return []  # nothing loaded, so nothing held
        return sorted(int(seat) for seat in reply[1:])

    async def release_grant(
        self, screening_id: int, grant: str, seat_ids: list[int], now_ms: int | None = None
    ) -> list[int]:
        """Drop the holds of ``seat_ids`` that ``grant`` took, and only those (seats kept from an
        earlier grant stay held); returns the seats freed."""
        _checked_grant(grant)
        seats = sorted(set(seat_ids))
        if not seats:
            return []
        now = self._now(now_ms)
        reply = await self._run("release_grant", screening_id, seats, now, [grant, *seats])
        if reply[0] == Status.NOT_LOADED:
            return []  # nothing loaded, so nothing held
        return sorted(int(seat) for seat in reply[1:])

    async def claim(
        self,
        screening_id: int,
        user_id: int,
        seat_ids: list[int],
        now_ms: int | None = None,
        pin_ms: int = 60_000,
    ) -> None:
        """Check the caller holds every seat and pin the leases while PostgreSQL commits."""
        _check_user(user_id)
        seats = _seat_list(seat_ids)
        args = [user_id, pin_ms, *seats]
        try:
            await self._run_loaded("claim", screening_id, seats, self._now(now_ms), args)
        except ScreeningStarted:
            raise ScreeningStarted("Cannot book seats for past screenings") from None

    async def sell(
        self, screening_id: int, sold: dict[int, int], now_ms: int | None = None
    ) -> None:
        """Mark seats sold (seat id -> user id) after PostgreSQL committed; idempotent."""
        if not sold:
            return
        seats = _seat_list(list(sold))
        for user_id in sold.values():
            _check_user(user_id)
        args = [value for seat in seats for value in (seat, sold[seat])]
        # ReplicasBehind (an Unavailable) makes the booking flow sell again until confirmed.
        await self._run_loaded("sell", screening_id, seats, self._now(now_ms), args, self.replicas)

    async def owe(
        self,
        screening_id: int,
        user_id: int,
        seat_ids: list[int],
        due_ms: int,
        now_ms: int | None = None,
    ) -> None:
        """Pending tickets were committed: their seats count toward the user's cap until paid,
        cancelled or ``due_ms``. Call it before ``sell`` (lua/owe.lua says why)."""
        _check_user(user_id)
        seats = _seat_list(seat_ids)
        now = self._now(now_ms)
        with contextlib.suppress(ScreeningNotFound):
            await self._run_loaded("owe", screening_id, [], now, [user_id, due_ms, *seats])

    async def settle(
        self, screening_id: int, user_id: int, seat_ids: list[int], now_ms: int | None = None
    ) -> None:
        """Pending tickets were paid: their seats no longer count toward the user's cap."""
        _check_user(user_id)
        seats = _seat_list(seat_ids)
        # NOT_LOADED needs nothing: a screening loaded later has no markers.
        await self._run("settle", screening_id, [], self._now(now_ms), [user_id, *seats])

    async def unsell(
        self, screening_id: int, seat_ids: list[int], now_ms: int | None = None
    ) -> None:
        """A ticket was cancelled in PostgreSQL: its seat is free again."""
        seats = sorted(set(seat_ids))
        if not seats:
            return
        # Loading when Redis lacks the screening looks useless (the load reads the cancellation
        # from PostgreSQL), but it undoes a concurrent load that read PostgreSQL before it.
        with contextlib.suppress(ScreeningNotFound):
            await self._run_loaded("unsell", screening_id, [], self._now(now_ms), seats)

    async def seat_map(self, screening_id: int, now_ms: int | None = None) -> list[SeatState]:
        """Every seat of the screening with its status, ordered by seat id."""
        now = self._now(now_ms)
        reply = await self._run_loaded("seatmap", screening_id, [], now, [])
        return _seat_states(reply, now)

    async def resume(self, screening_id: int, since: int) -> Resumed:
        """What a watcher that last saw version ``since`` needs to be current: the events after
        it from the screening's log, or None when the log no longer has them all (the caller
        then sends the whole map: ``versioned_map``, or one it has of that very version)."""
        reply = await self._run_loaded("resume", screening_id, [], self.now_ms(), [since])
        events = [_text(event) for event in reply[3:]] if reply[2] else None
        return Resumed(int(reply[1]), events)

    async def watch(self, screening_id: int, ttl_ms: int) -> bool:
        """Keep the screening's event log (what ``resume`` replays) for ``ttl_ms`` more: it is
        kept only while marked so (lua/watch.lua); a screening Redis lacks is loaded first.
        True when the log starts now, empty."""
        reply = await self._run_loaded("watch", screening_id, [], self.now_ms(), [ttl_ms])
        return bool(reply[1])

    async def versioned_map(self, screening_id: int) -> tuple[int, list[SeatState]]:
        """Every seat of the screening (``seat_map``) and the version it is the state of."""
        now = self.now_ms()
        reply = await self._run_loaded("seatmap", screening_id, [], now, [])
        return int(reply[4]), _seat_states(reply, now)

    async def snapshot(self, screening_id: int) -> SeatSnapshot | None:
        """The screening as a mirror starts from; None when Redis does not have it loaded."""
        reply = await self._run("seatmap", screening_id, [], self.now_ms(), [])
        if reply[0] != Status.OK:
            return None
        seats, sold, holds = ([int(v) for v in part] for part in reply[1:4])
        return SeatSnapshot(
            version=int(reply[4]),
            starts_at_ms=int(reply[5]),
            seats=set(seats),
            sold=dict(zip(sold[::2], sold[1::2], strict=True)),
            holds={holds[i]: (holds[i + 1], holds[i + 2]) for i in range(0, len(holds), 4)},
        )

    async def expire_leases(
        self, screening_id: int, seat_ids: Sequence[int], now_ms: int | None = None
    ) -> int:
        """The lease keys of these seats expired (keyspace events): drop each seat's hold whose
        lease is really gone (not held again since), in one event per SWEEP_BATCH seats; returns
        how many were dropped."""
        seats = sorted(set(seat_ids))
        now = self._now(now_ms)
        dropped = 0
        for start in range(0, len(seats), SWEEP_BATCH):
            batch = seats[start : start + SWEEP_BATCH]
            reply = await self._run("expire", screening_id, batch, now, batch)
            if reply[0] == Status.OK:
                dropped += int(reply[1])
        return dropped

    async def sweep(self, now_ms: int | None = None) -> int:
        """Free every expired hold of every loaded screening; returns how many.

        A screening whose Redis node does not answer (one primary of a cluster) is skipped, and
        said so, while the others are swept."""
        now = self._now(now_ms)
        return await self._sweep_all_of(await self._sweepable(now), now)

    async def sweep_some(self, at_most: int = SWEEP_SLICE, now_ms: int | None = None) -> int:
        """``sweep`` of at most ``at_most`` loaded screenings: those after the last one this
        looked at, in id order, wrapping around. Each call costs the same however many are
        loaded, and every loaded screening is looked at within len(loaded) / at_most calls."""
        now = self._now(now_ms)
        loaded = await self._sweepable(now)
        if len(loaded) > at_most:
            start = bisect.bisect_right(loaded, self._swept_up_to)
            turn = loaded[start : start + at_most]
            loaded = turn + loaded[: at_most - len(turn)]  # wrapped around: the first ones
        if loaded:
            self._swept_up_to = loaded[-1]
        return await self._sweep_all_of(loaded, now)

    async def _sweepable(self, now: int) -> list[int]:
        # Screenings started long ago have no holds left: they leave Redis (``_unload``).
        started_by = now - self.max_hold_ms - SWEEP_AFTER_START_MS
        await self._unload(await self.loaded.started_before(started_by, SWEEP_SLICE), now)
        return await self.loaded.read(started_by)

    async def _unload(self, screening_ids: list[int], now: int) -> None:
        """Drop from Redis every key of these screenings, started long ago, and unlist them
        (lua/forget.lua without a tombstone: a read loads one again from PostgreSQL, and a later
        sweep drops it again). Their keys have no TTL: unloaded by nothing else, every screening
        of every release day stayed in Redis, tens of KB each. One whose node does not answer
        stays listed, for the next sweep."""
        for start in range(0, len(screening_ids), SWEEP_BATCH):
            batch = screening_ids[start : start + SWEEP_BATCH]
            await asyncio.gather(*(self._unload_one(sid, now) for sid in batch))

    async def _unload_one(self, screening_id: int, now: int) -> None:
        try:
            async with self._one_at_a_time(screening_id):
                await self._forget(screening_id, now, 0)
        except NODE_DOWN as exc:
            logger.debug("screening %s not unloaded yet: %r", screening_id, exc)
            return
        self._rows.pop(screening_id, None)

    async def _sweep_all_of(self, loaded: list[int], now: int) -> int:
        freed = skipped = 0
        for start in range(0, len(loaded), SWEEP_BATCH):
            batch = loaded[start : start + SWEEP_BATCH]
            batch_freed, batch_skipped = await self._free(batch, await self._due(batch, now), now)
            freed += batch_freed
            skipped += len(batch_skipped)
        if skipped:
            logger.warning(
                "sweep skipped %d of %d screenings: their Redis node did not answer",
                skipped,
                len(loaded),
            )
        return freed

    async def sweep_due(
        self, screening_ids: list[int], now_ms: int | None = None
    ) -> tuple[int, dict[int, int]]:
        """Free the expired holds of these screenings (their deadline timers came); returns how
        many, and when to sweep each again: its next hold deadline, SPACING_MS from now at the
        soonest (none: no hold left). A screening whose node does not answer is left out."""
        now = self._now(now_ms)
        # One round trip: per screening, the seats due and the first deadline after them.
        read, _ = await answered(self._due_and_after(sid, now) for sid in screening_ids)
        due = [None if r is None else r[0] for r in read]
        freed, skipped = await self._free(screening_ids, due, now)
        upcoming: dict[int, int] = {}
        for screening_id, seats, r in zip(screening_ids, due, read, strict=True):
            if screening_id in skipped or r is None:
                continue
            next_ms = now if seats is not None and len(seats) == SWEEP_BATCH else r[1]
            if next_ms is not None:  # SWEEP_BATCH due: more than one sweep takes, again soon
                upcoming[screening_id] = max(next_ms, now + SPACING_MS)
        return freed, upcoming

    async def _due_and_after(self, screening_id: int, now: int) -> tuple[list[int], int | None]:
        return await asyncio.gather(
            self._due_in(screening_id, now), self._deadline_after(screening_id, now)
        )

    async def _deadline_after(self, screening_id: int, now: int) -> int | None:
        """The soonest hold deadline after ``now`` in the screening's index (any process's
        holds); None when there is none."""
        deadlines = keys.screening_deadlines(screening_id)
        first: list[Any] = await self.transport.command(
            "ZRANGEBYSCORE", deadlines, f"({now}", "+inf", "WITHSCORES", "LIMIT", 0, 1
        )
        if not first:
            return None
        pair = first[0] if isinstance(first[0], list | tuple) else first  # RESP3: [[seat, score]]
        return int(float(pair[1]))

    async def _free(
        self, screening_ids: list[int], due: list[list[int] | None], now: int
    ) -> tuple[int, set[int]]:
        """Run the sweep script on each screening with seats ``due`` (``_due``); returns how
        many were freed, and the screenings skipped because their node did not answer."""
        freed, skipped = 0, set()
        for screening_id, seats in zip(screening_ids, due, strict=True):
            if seats is None:
                skipped.add(screening_id)
            elif seats:
                try:
                    freed += await self._sweep_screening(screening_id, seats, now)
                except Unavailable:
                    skipped.add(screening_id)
        return freed, skipped

    async def refresh(self, screening_id: int, now_ms: int | None = None) -> bool:
        """The catalog changed (start, seats of its room): re-read the layout into Redis, keeping
        live holds (see ``lua/refresh.lua``). False when the screening no longer exists
        (forgotten), also when it was deleted after its layout was read here (its tombstone
        refused it)."""
        return await self._refresh(screening_id, self._now(now_ms), False) is not None

    async def move(self, screening_id: int, now_ms: int | None = None) -> list[Hold] | None:
        """The screening moved to another room (call it once PostgreSQL committed that): re-read
        the layout as ``refresh`` does, letting go of every hold (seats belong to rooms: none of
        the old room's stands in the new one). Returns the holds let go that had not expired
        (their grants not told), None when the screening no longer exists."""
        return await self._refresh(screening_id, self._now(now_ms), True)

    async def _refresh(self, screening_id: int, now: int, moved: bool) -> list[Hold] | None:
        async with self._one_at_a_time(screening_id):  # after loads that read the old layout
            try:
                layout = await self._fetch_layout(screening_id)
            except ScreeningNotFound:
                # No tombstone: deleted, its deleter's ``forget`` leaves one; or not created yet.
                await self._forget(screening_id, now, 0)
                return None
            args = [int(moved), *_layout_args(layout, self.event_log_length, self.no_single_gaps)]
            # Moved: the leases of every hold go too (a lease written after this read is left to
            # its TTL, with no index record left to count it).
            held = await self._held_seats(screening_id) if moved else []
            reply = await self._run("refresh", screening_id, held, now, args)
            self._rows.pop(screening_id, None)
            if reply[0] == Status.DELETED:
                return None
            await self.loaded.add(screening_id, layout.starts_at_ms)
        return _holds_let_go(reply[3:])

    async def renumber(self, screening_id: int, since_ms: int, now_ms: int | None = None) -> bool:
        """Redis came back from an older snapshot (it started at ``since_ms``): move the
        screening's version past every one handed out before, and have its watchers sent its map
        (lua/renumber.lua). False when its version is newer than ``since_ms`` already (numbered
        since), or Redis does not have it loaded (a load numbers it anew)."""
        reply = await self._run("renumber", screening_id, [], self._now(now_ms), [since_ms])
        return bool(reply[0] == Status.OK and int(reply[1]) > 0)

    async def refresh_loaded(self, screening_ids: Sequence[int]) -> list[int]:
        """Refresh those of the screenings Redis has loaded (the others load fresh on first use);
        returns them."""
        ids = sorted(set(screening_ids))
        # Asked of each screening's own keys (its node), not of the list of loaded screenings.
        ready = await asyncio.gather(
            *(self.transport.command("HGET", keys.screening_meta(i), "ready") for i in ids)
        )
        loaded = [i for i, is_ready in zip(ids, ready, strict=True) if is_ready]
        await asyncio.gather(*(self.refresh(screening_id) for screening_id in loaded))
        return loaded

    async def loaded_screenings(self) -> list[int]:
        """Every screening Redis lists as loaded (the sweep's list), in id order."""
        return await self.loaded.read()

    async def sold_seats(self, screening_ids: Sequence[int]) -> list[dict[int, int] | None]:
        """Per screening, seat id -> user id of its sold seats in Redis; None when Redis does not
        have it loaded. One round trip for all (the transport sends calls made together at once).
        """
        replies = await asyncio.gather(*(self._sold_in(sid) for sid in screening_ids))
        return list(replies)

    async def _sold_in(self, screening_id: int) -> dict[int, int] | None:
        ready, sold = await asyncio.gather(
            self.transport.command("HGET", keys.screening_meta(screening_id), "ready"),
            self.transport.command("HGETALL", keys.screening_sold(screening_id)),
        )
        if not ready:
            return None
        pairs = sold.items() if isinstance(sold, dict) else zip(sold[::2], sold[1::2], strict=True)
        return {int(seat): int(user) for seat, user in pairs}

    async def forget(self, screening_id: int, now_ms: int | None = None) -> None:
        """The screening was deleted (call it once PostgreSQL committed that): drop every key of
        it (holds included) and leave its tombstone, so a load or refresh anywhere that read
        it before the delete writes nothing (lua/forget.lua); mirrors are reset."""
        async with self._one_at_a_time(screening_id):
            await self._forget(screening_id, self._now(now_ms), TOMBSTONE_MS)
        self._rows.pop(screening_id, None)

    async def _forget(self, screening_id: int, now: int, tombstone_ms: int) -> None:
        seats = await self._held_seats(screening_id)
        await self._run("forget", screening_id, seats, now, [tombstone_ms, *seats])
        await self.loaded.remove(screening_id)

    async def _held_seats(self, screening_id: int) -> list[int]:
        """Every seat in the screening's holds index, live or lapsed."""
        held: list[Any] = await self.transport.command("HKEYS", keys.screening_holds(screening_id))
        return sorted(int(seat) for seat in held)

    async def version(self, screening_id: int) -> int:
        """A number that changes on every seat change of the screening."""
        value = await self.transport.command("GET", keys.screening_version(screening_id))
        return 0 if value is None else int(value)

    def _now(self, now_ms: int | None) -> int:
        return self.clock.now_ms() if now_ms is None else now_ms

    async def _due(self, screening_ids: list[int], now: int) -> list[list[int] | None]:
        """Per screening, the seats whose hold deadline has passed, None where its node did not
        answer (one round trip for all: the transport sends the calls made together in one
        write)."""
        due, _ = await answered(self._due_in(sid, now) for sid in screening_ids)
        return due

    async def _due_in(self, screening_id: int, now: int) -> list[int]:
        deadlines = keys.screening_deadlines(screening_id)
        limit = ("LIMIT", 0, SWEEP_BATCH)
        seats: list[Any] = await self.transport.command(
            "ZRANGEBYSCORE", deadlines, "-inf", now, *limit
        )
        return [int(seat) for seat in seats]

    async def _sweep_screening(self, screening_id: int, seats: list[int], now: int) -> int:
        reply = await self._run("sweep", screening_id, seats, now, seats)
        if reply[0] == Status.NOT_LOADED:
            await self.loaded.remove(screening_id)
            return 0
        return int(reply[1])

    async def _seats_held_by(self, screening_id: int, user_id: int) -> list[int]:
        owners = keys.screening_owners(screening_id)
        seats: list[Any] = await self.transport.command("ZRANGEBYSCORE", owners, user_id, user_id)
        # Members "p:seat:due" are pending tickets' seats (lua/owe.lua), not holds.
        return sorted(int(seat) for seat in seats if _text(seat).isdigit())

    async def _run_loaded(
        self,
        name: str,
        screening_id: int,
        seats: list[int],
        now: int,
        args: Sequence[int | str],
        replicas: Replicas | None = None,
    ) -> list[Any]:
        """Run a script; load the screening first if Redis does not have it (invariant 7)."""
        reply = await self._run(name, screening_id, seats, now, args, replicas)
        if reply[0] == Status.NOT_LOADED:
            await self._load(screening_id, now)
            reply = await self._run(name, screening_id, seats, now, args, replicas)
            if reply[0] == Status.NOT_LOADED and await self.deleted(screening_id):
                raise ScreeningNotFound(screening_id)  # forgotten since the load: 404, not 503
        raise_for(reply)
        return reply

    async def deleted(self, screening_id: int) -> bool:
        """Whether the screening has a tombstone (lua/forget.lua): it was deleted."""
        return bool(await self.transport.command("EXISTS", keys.screening_deleted(screening_id)))

    async def _run(
        self,
        name: str,
        screening_id: int,
        seats: Sequence[int],
        now: int,
        args: Sequence[int | str],
        replicas: Replicas | None = None,
    ) -> list[Any]:
        """Run a script; with ``replicas``, ReplicasBehind when it changed something that too
        few replicas confirmed (a refusal changed nothing: it is answered as it is)."""
        script_keys = keys.script_keys(screening_id, seats)
        if name in TOMBSTONE_SCRIPTS:
            script_keys.append(keys.screening_deleted(screening_id))
        if name in ROWS_SCRIPTS:
            script_keys.append(keys.screening_rows(screening_id))
        behind = False
        try:
            reply: list[Any] = await self.transport.run(
                name, script_keys, [screening_id, now, *args], replicas
            )
        except REDIS_DOWN as exc:
            raise Unavailable("Seat service temporarily unavailable") from exc
        except NotReplicated as exc:
            reply = exc.reply
            behind = reply[0] == Status.OK
        finally:
            for listener in self.change_listeners:
                listener(screening_id)
        if self.mirrors is not None:
            _tell_mirrors(self.mirrors, name, screening_id, reply[0], now)
        if behind:
            raise ReplicasBehind(REPLICAS_BEHIND)
        return reply

    async def _load(self, screening_id: int, now: int) -> None:
        # One loader per screening per process; across processes the load script is idempotent.
        async with self._one_at_a_time(screening_id):
            if await self.transport.command("HGET", keys.screening_meta(screening_id), "ready"):
                return
            layout = await self._fetch_layout(screening_id)
            args = _layout_args(layout, self.event_log_length, self.no_single_gaps)
            # Deleted since it was read (its tombstone): ScreeningNotFound, nothing written.
            raise_for(await self._run("load", screening_id, [], now, args))
            await self.loaded.add(screening_id, layout.starts_at_ms)
            logger.info(
                "loaded screening %s: %d seats, %d sold",
                screening_id,
                len(layout.seat_ids),
                len(layout.sold),
            )

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, screening_id: int) -> AsyncIterator[None]:
        """The screening's load, refresh or forget in this process, one at a time. Its lock is
        dropped once nobody holds or waits for it: every id anyone asks for passes through
        here, and a lock kept per id that never loaded (no such screening) grew without end."""
        turns = self._loading.get(screening_id)
        if turns is None:
            turns = self._loading[screening_id] = _Turns()
        turns.users += 1
        try:
            async with turns.lock:
                yield
        finally:
            turns.users -= 1
            if not turns.users:
                del self._loading[screening_id]

    async def _fetch_layout(self, screening_id: int) -> Layout:
        try:
            layout = await self._source(screening_id)
        except SeatLockError:
            raise
        except Exception as exc:
            # Never guess "available": without PostgreSQL the sold seats are unknown (invariant 7).
            logger.warning("cannot load screening %s: %r", screening_id, exc)
            raise Unavailable("Seat data is being restored, try again shortly") from exc
        if layout is None:
            raise ScreeningNotFound(screening_id)
        return layout


class _Turns:
    """A screening's lock, and how many hold it or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


def _refused_here(reply: list[int]) -> SeatsUnavailable:
    """The error of a refusal the seat mirror answered ({TAKEN | BOOKED, seat...}), marked as
    answered without Redis (``seatlock_holds_refused_locally_total``)."""
    return SeatsUnavailable(reply[1:], booked=reply[0] == Status.BOOKED, locally=True)


def _tell_mirrors(
    mirrors: SeatMirrors, name: str, screening_id: int, status: int, now: int
) -> None:
    """What a script run sent at ``now`` found, as far as the screening's mirror cares."""
    if status == Status.NOT_LOADED or name in ("load", "refresh", "forget"):
        mirrors.drop(screening_id)
    elif name == "hold":
        mirrors.confirmed(screening_id, now)
        if status in (Status.TAKEN, Status.BOOKED):
            mirrors.contended(screening_id, now)


def _layout_args(layout: Layout, log_length: int, no_single_gaps: bool) -> list[int | str]:
    """ARGV of the load and refresh scripts after the screening id and the clock; the single-gap
    rule is the screening's own, else ``no_single_gaps`` (the server's)."""
    pairs = [value for seat, user in sorted(layout.sold.items()) for value in (seat, user)]
    seats = sorted(set(layout.seat_ids))
    rule = no_single_gaps if layout.no_single_gaps is None else layout.no_single_gaps
    rows = rows_fields(layout.places)
    return [
        layout.starts_at_ms,
        log_length,
        len(seats),
        int(rule),
        len(rows),
        *seats,
        *rows,
        *pairs,
    ]


def _seat_list(seat_ids: list[int]) -> list[int]:
    seats = sorted(set(seat_ids))
    if not seats:
        raise InvalidInput("seat_ids must not be empty")
    if not 0 < seats[0] <= seats[-1] < MAX_ID:  # sorted: the ends decide
        raise UnknownSeats([seat for seat in seats if not 0 < seat < MAX_ID])
    return seats


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _check_user(user_id: int) -> None:
    if not 0 < user_id < MAX_ID:
        raise InvalidInput("Invalid user id")


def _checked_grant(grant: str) -> str:
    if not GRANT.fullmatch(grant):
        raise InvalidInput("Invalid grant")
    return grant


def _pairs(reply: Any) -> dict[bytes | str, bytes | str]:
    """A hash reply as a dict, whichever shape the transport gave it (dict or flat list)."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _holds(user_id: int, flat: list[Any]) -> list[Hold]:
    """Holds from a reply's seat, expires_at, lease, ... part."""
    triples = zip(flat[::3], flat[1::3], flat[2::3], strict=True)
    return [Hold(int(seat), user_id, int(exp), _grant_of(lease)) for seat, exp, lease in triples]


def _holds_let_go(flat: list[Any]) -> list[Hold]:
    """Holds from a reply's seat, user, expires_at, ... part (lua/refresh.lua, moved)."""
    triples = zip(flat[::3], flat[1::3], flat[2::3], strict=True)
    return [Hold(int(seat), int(user), int(exp)) for seat, user, exp in triples]


def _grant_of(lease: bytes | str) -> str:
    """The grant of a lease's value "user:grant" ("" for a bare user id: older than grants)."""
    text = lease.decode() if isinstance(lease, bytes) else str(lease)
    return text.partition(":")[2]


def _seat_states(reply: list[Any], now: int) -> list[SeatState]:
    seats, sold_flat, holds_flat = ([int(v) for v in part] for part in reply[1:4])
    sold = dict(zip(sold_flat[::2], sold_flat[1::2], strict=True))
    holds = {
        holds_flat[i]: (holds_flat[i + 1], max(holds_flat[i + 2], holds_flat[i + 3]))
        for i in range(0, len(holds_flat), 4)
    }
    return [_seat_state(seat, sold, holds, now) for seat in sorted(seats)]


def _seat_state(
    seat: int, sold: dict[int, int], holds: dict[int, tuple[int, int]], now: int
) -> SeatState:
    if seat in sold:
        return SeatState(seat, "booked", sold[seat], None)
    hold = holds.get(seat)
    if hold is not None and hold[1] > now:
        return SeatState(seat, "reserved", hold[0], hold[1])
    return SeatState(seat, "available", None, None)
