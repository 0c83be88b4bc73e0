"""The hold flow: seats held in Redis (the engine), their history rows in PostgreSQL.

A hold never waits for PostgreSQL (except once per thousand reservation ids): its history goes
through the background writer of ``db/reservations.py``. Re-holding a seat the user already holds
keeps its row (``LiveRows`` of this process, else PostgreSQL's active rows), so the history has no
duplicates. Reservation ids are taken after the hold, so a refused attempt (most of them on
release day) costs none; when none can be had, what this request's grant took is let go again
(``_release_grant``), and only that: no hold stays without the row its answer names, and no hold
of an earlier request is lost. The same holds when too few Redis replicas confirmed a hold in time
(``SEATLOCK_HOLD_REPLICAS``): the engine lets its grant go before the 503 (``ReplicasBehind``), so
the history gets no row for it. An extension they did not confirm is a 503 as well, but stands on
the primary (it only gives more time): its history row keeps the expiry it had.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from db import reservations as history
from db.pool import DATABASE_DOWN, DATABASE_FAILED
from db.reservations import HistoryWriter, ReservationIds
from seatlock import keys
from seatlock.engine.errors import (
    NoAdjacentSeats,
    ScreeningNotFound,
    ScreeningStarted,
    SeatsUnavailable,
    SingleSeatGap,
    TooManySeats,
    UnknownSeats,
)
from seatlock.engine.model import Hold
from seatlock.engine.seats import SeatEngine
from seatlock.errors import SeatLockError, TooManyRequests, Unavailable, ValidationFailed
from seatlock.metrics import HOLDS, HOLDS_REFUSED_LOCALLY, Tally

logger = logging.getLogger(__name__)

NO_IDS = "Service temporarily unavailable"
# The labels of seatlock_holds_total: granted, or the reason of the refusal (``refusal``).
HOLD_OUTCOMES = (
    "granted",
    "taken",
    "booked",
    "too_many",
    "started",
    "unknown_seats",
    "not_found",
    "unavailable",
    "invalid",
    "single_gap",  # the single-gap rule refused it
    "no_block",  # best available: no block of that many adjacent seats left
)


# Grants of this process's holds: a random prefix (48 bits, drawn again in a forked child), then
# a counter. As unique across processes and restarts as new_grant()'s random tokens, which a
# grant only needs to be (no client ever sends one), without a system call per hold attempt
# (os.urandom, ~1 µs): refused attempts take one too.
_GRANTS: list[tuple[str, itertools.count[int]]] = []


def _seed_grants() -> None:
    _GRANTS[:] = [(os.urandom(6).hex(), itertools.count(1))]


_seed_grants()
os.register_at_fork(after_in_child=_seed_grants)


def next_grant() -> str:
    """A grant no other hold request of any process has: 12 hex digits, then a hex counter."""
    prefix, counter = _GRANTS[0]
    return f"{prefix}{next(counter):x}"


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# Reservation and Held are frozen msgspec Structs rather than frozen dataclasses: made on every
# won hold (one per seat), a Struct costs ~0.1 µs where a frozen dataclass's __init__ cost ~2 µs.
class Reservation(msgspec.Struct, frozen=True):
    """One hold with its history row."""

    id: int
    screening_id: int
    seat_id: int
    user_id: int
    reserved_at: datetime
    expires_at: datetime
    status: str = "active"


class Held(msgspec.Struct, frozen=True):
    reservations: list[Reservation]  # in seat order
    left_ms: int  # until the latest of them expires

    @property
    def minutes(self) -> int:
        return round(self.left_ms / 60_000)


@dataclass(frozen=True, slots=True)
class Extension:
    id: int | None  # None when the history cannot say right now (the hold stands)
    seat_id: int
    expires_at: datetime
    added_ms: int  # how much later it ends now: less than asked at the cap, 0 when it was there


@dataclass(frozen=True, slots=True)
class Cleanup:
    expired: int  # holds freed
    seconds: float  # how long the sweep took
    finished_at: datetime


class HoldService:
    """Hold, extend, cancel and list a user's seat holds; one instance per process."""

    def __init__(
        self,
        engine: SeatEngine,
        writer: HistoryWriter,
        ids: ReservationIds,
        db: asyncpg.Pool,
        redis: Redis | RedisCluster,
        *,
        max_extend_minutes: int,
        cleanup_interval_s: float,
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.ids = ids
        self.db = db
        self.redis = redis
        self.max_extend_minutes = max_extend_minutes
        self.cleanup_interval_s = cleanup_interval_s
        # Every hold attempt counts: a Tally, not the counter itself (seatlock/metrics.py).
        self.outcomes = Tally(HOLDS, HOLD_OUTCOMES)
        # Of those refusals, the ones the seat mirror answered without Redis.
        self.local = Tally(HOLDS_REFUSED_LOCALLY, ("taken", "booked"))

    def flush_counts(self) -> None:
        """Add the hold counts kept since the last flush to their counters."""
        self.outcomes.flush()
        self.local.flush()

    async def hold(
        self, screening_id: int, user_id: int, seat_ids: list[int], now_ms: int | None = None
    ) -> Held:
        """Hold every seat or none (seats the user holds already are kept, with their rows)."""
        # Redis's clock (the engine's), like the deadlines the script returns: the fresh rows'
        # expiry below (new_ms) is the script's, on a host whose own clock is off too.
        now_ms = self.engine.now_ms() if now_ms is None else now_ms
        grant = next_grant()
        try:
            holds = await self.engine.hold(screening_id, user_id, seat_ids, now_ms, grant=grant)
        except SeatLockError as exc:  # a refusal: no seat changed (invariant 2)
            self._refused(exc, screening_id, user_id, "seats", seat_ids)
            if isinstance(exc, SeatsUnavailable) and exc.locally:  # the mirror answered it
                self.local.counts["booked" if exc.booked else "taken"] += 1
            raise
        self.outcomes.counts["granted"] += 1
        holds.sort(key=_seat_of)
        new_ms = now_ms + self.engine.hold_ms
        # A seat the user already held keeps its hold, and the grant that took it. Told by the
        # grant, not by the deadline: a kept hold can end exactly at now + hold time (held in the
        # same millisecond from another tab, or extended by E and held again E later), and taken
        # for fresh it got a second active history row.
        kept = [h for h in holds if h.grant != grant]
        reused = await self._live_rows(screening_id, user_id, kept) if kept else {}
        fresh_seats = [h.seat_id for h in holds if h.seat_id not in reused]
        ids = await self._ids_for(screening_id, grant, fresh_seats) if fresh_seats else []
        rows, new_rows = _rows(screening_id, user_id, holds, reused, ids, now_ms, new_ms)
        if new_rows:
            self.writer.submit(history.Inserted(new_rows))
        return Held(rows, max(h.expires_at_ms for h in holds) - now_ms)

    async def hold_best(
        self,
        screening_id: int,
        user_id: int,
        count: int,
        seat_type: str | None = None,
        near: tuple[str, int] | None = None,
    ) -> Held:
        """Hold the best block of ``count`` adjacent seats in one row (the engine's hold_best),
        with history rows exactly as ``hold`` writes them: every seat of the block is fresh."""
        now_ms = self.engine.now_ms()
        grant = next_grant()
        try:
            holds = await self.engine.hold_best(
                screening_id,
                user_id,
                count,
                seat_type=seat_type,
                near=near,
                now_ms=now_ms,
                grant=grant,
            )
        except SeatLockError as exc:  # a refusal: no seat changed (invariant 2)
            self._refused(exc, screening_id, user_id, "best block of", count)
            raise
        self.outcomes.counts["granted"] += 1
        seats = [h.seat_id for h in holds]
        ids = await self._ids_for(screening_id, grant, seats)
        new_ms = now_ms + self.engine.hold_ms
        rows, new_rows = _rows(screening_id, user_id, holds, {}, ids, now_ms, new_ms)
        self.writer.submit(history.Inserted(new_rows))
        return Held(rows, self.engine.hold_ms)

    def _refused(
        self, exc: SeatLockError, screening_id: int, user_id: int, asked: str, what: object
    ) -> None:
        """Count a refused hold (``seatlock_holds_total``) and log it at DEBUG: ``asked`` and
        ``what`` say what was asked for (``seats [4, 5]``, ``best block of 3``)."""
        self.outcomes.counts[refusal(exc)] += 1
        logger.debug(
            "hold refused (%s): screening %s, user %s, %s %s: %s",
            type(exc).__name__,
            screening_id,
            user_id,
            asked,
            what,
            exc.detail,
        )

    async def _ids_for(self, screening_id: int, grant: str, seat_ids: list[int]) -> list[int]:
        """Reservation ids for the seats without a row; when none can be had (PostgreSQL down
        while a new block is due) this request's holds are let go and the caller is told to
        retry (503)."""
        try:
            return await self.ids.take(len(seat_ids))
        except BaseException as exc:
            await self._release_grant(screening_id, grant, seat_ids)
            if isinstance(exc, DATABASE_DOWN):
                logger.warning("no reservation ids, new holds let go: %r", exc)
                raise Unavailable(NO_IDS) from exc
            raise

    async def _release_grant(self, screening_id: int, grant: str, seat_ids: list[int]) -> None:
        """Undo what this request's grant took (the compensation when its seats get no ids).

        Only seats the grant holds are freed: a seat among ``seat_ids`` that the user held from
        an earlier request (kept, under that request's grant, but with no row found now) stays
        held. Best effort: if Redis fails too, the leases expire on their own.
        """
        with contextlib.suppress(Exception):
            await self.engine.release_grant(screening_id, grant, seat_ids)

    async def _live_rows(
        self, screening_id: int, user_id: int, kept: list[Hold]
    ) -> dict[int, Reservation]:
        """The active history rows of holds the user already had: this process's, else
        PostgreSQL's."""
        found: dict[int, Reservation] = {}
        missing: list[Hold] = []
        for h in kept:
            expires_at = utc(h.expires_at_ms)
            row = self.writer.live.find(screening_id, h.seat_id, user_id, expires_at)
            if row is None:
                missing.append(h)
            else:
                found[h.seat_id] = _reservation(screening_id, h.seat_id, row, expires_at)
        if missing:
            rows = await self._rows_if_known(screening_id, user_id, [h.seat_id for h in missing])
            for h in missing:
                if h.seat_id in rows:
                    found[h.seat_id] = _reservation(
                        screening_id, h.seat_id, rows[h.seat_id], utc(h.expires_at_ms)
                    )
        return found

    async def _rows_if_known(
        self, screening_id: int, user_id: int, seat_ids: list[int]
    ) -> dict[int, history.LiveRow]:
        """Active history rows; empty when PostgreSQL cannot say (a hold then gets a new row, an
        extension answers without ids: the hold stands either way)."""
        await self.writer.flush()
        try:
            return await history.active_rows(self.db, screening_id, user_id, seat_ids)
        except DATABASE_FAILED:  # ids are informative
            return {}

    async def extend(
        self, screening_id: int, user_id: int, seat_ids: list[int], minutes: int
    ) -> list[Extension]:
        """Give the user's held seats ``minutes`` more (1 to max_extend_minutes), in seat order."""
        self.check_extension(minutes)
        holds = await self.engine.extend(screening_id, user_id, seat_ids, minutes * 60_000)
        expires = {h.seat_id: utc(h.expires_at_ms) for h in holds}
        self.writer.submit(history.Extended(screening_id, user_id, expires))
        rows = await self._rows_if_known(screening_id, user_id, list(expires))
        ids = {seat_id: row.id for seat_id, row in rows.items()}
        return [
            Extension(ids.get(h.seat_id), h.seat_id, expires[h.seat_id], h.added_ms)
            for h in sorted(holds, key=_seat_of)
        ]

    def check_extension(self, minutes: int) -> None:
        """Refuse an extension outside 1 to max_extend_minutes (422)."""
        limit = self.max_extend_minutes
        if not 1 <= minutes <= limit:
            raise ValidationFailed(f"additional_minutes must be between 1 and {limit}")

    async def cancel(self, screening_id: int, user_id: int, seat_ids: list[int] | None) -> None:
        """Release the user's holds of a screening (None: all of them)."""
        await self.engine.release(screening_id, user_id, seat_ids)
        self.writer.submit(history.Closed(screening_id, user_id, seat_ids, "cancelled"))

    async def moved(self, screening_id: int) -> bool:
        """The screening moved to another room (PostgreSQL committed it): every hold of it goes
        (the engine's ``move``) and their history rows are closed as cancelled, as if each holder
        had cancelled them: they end before their time, which "expired" would contradict. False
        when the screening no longer exists."""
        let_go = await self.engine.move(screening_id)
        if let_go is None:
            return False
        seats_of: dict[int, list[int]] = {}
        for hold in let_go:
            seats_of.setdefault(hold.user_id, []).append(hold.seat_id)
        for user_id, seats in seats_of.items():
            self.writer.submit(history.Closed(screening_id, user_id, sorted(seats), "cancelled"))
        return True

    async def mine(self, user_id: int, include_expired: bool) -> list[Reservation]:
        """The user's holds, newest first (live ones only unless include_expired)."""
        await self.writer.flush()  # this process's holds are in PostgreSQL before we look
        now = utc(self.engine.now_ms())  # holds end on Redis's clock, not PostgreSQL's
        rows = await history.for_user(self.db, user_id, include_expired, now)
        return [
            Reservation(
                r["id"],
                r["screening_id"],
                r["seat_id"],
                r["user_id"],
                r["reserved_at"],
                r["expires_at"],
                r["status"],
            )
            for r in rows
        ]

    async def cleanup(self) -> Cleanup:
        """Free every hold that already expired; at most once per interval across processes."""
        interval_ms = max(1, int(self.cleanup_interval_s * 1000))
        if not await self.redis.set(keys.rate_limit("cleanup"), b"1", px=interval_ms, nx=True):
            raise TooManyRequests("Cleanup ran moments ago; try again shortly", 1)
        started = time.perf_counter()
        count = await self.engine.sweep()
        # Redis's clock, as every other time of a hold answer (not this host's own).
        finished_at = utc(self.engine.now_ms())
        return Cleanup(count, round(time.perf_counter() - started, 3), finished_at)


REFUSAL_KINDS: tuple[tuple[type[SeatLockError], str], ...] = (
    (SingleSeatGap, "single_gap"),
    (NoAdjacentSeats, "no_block"),
    (TooManySeats, "too_many"),
    (ScreeningStarted, "started"),
    (UnknownSeats, "unknown_seats"),
    (ScreeningNotFound, "not_found"),
    (Unavailable, "unavailable"),
)


def refusal(exc: SeatLockError) -> str:
    """The reason label of a refused hold (``seatlock_holds_total``): a few fixed values."""
    if isinstance(exc, SeatsUnavailable):  # nearly every refusal on release day
        return "booked" if exc.booked else "taken"
    for kind, name in REFUSAL_KINDS:
        if isinstance(exc, kind):
            return name
    return "invalid"


def _seat_of(hold: Hold) -> int:
    return hold.seat_id


def _rows(
    screening_id: int,
    user_id: int,
    holds: list[Hold],
    reused: dict[int, Reservation],
    ids: list[int],
    now_ms: int,
    new_ms: int,
) -> tuple[list[Reservation], list[history.Row]]:
    """The holds' rows in seat order, and the history rows of those without one yet (taking
    ``ids`` in turn). New holds all end at ``new_ms``: their expiry is converted once."""
    reserved_at, new_at = utc(now_ms), utc(new_ms)
    next_id = iter(ids).__next__
    rows: list[Reservation] = []
    new_rows: list[history.Row] = []
    for h in holds:
        row = reused.get(h.seat_id)
        if row is None:
            expires_at = new_at if h.expires_at_ms == new_ms else utc(h.expires_at_ms)
            row = Reservation(next_id(), screening_id, h.seat_id, user_id, reserved_at, expires_at)
            new_rows.append((row.id, screening_id, h.seat_id, user_id, reserved_at, expires_at))
        rows.append(row)
    return rows, new_rows


def _reservation(
    screening_id: int, seat_id: int, row: history.LiveRow, expires_at: datetime
) -> Reservation:
    return Reservation(row.id, screening_id, seat_id, row.user_id, row.reserved_at, expires_at)
