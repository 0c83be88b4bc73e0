"""The guide's seat reservations: hold, extend, cancel, my-reservations, cleanup.

Holds live in Redis (the engine); their history goes to PostgreSQL through the background writer
of ``db/reservations.py``, so a hold does not wait for PostgreSQL (except once per thousand
reservation ids).
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
import msgspec

from api.routing import MAX_ID, Call, Router
from db import reservations as history
from seatlock import keys
from seatlock.engine.model import Hold
from seatlock.errors import TooManyRequests, ValidationFailed
from seatlock.services.container import Services

router = Router("Seat reservations")

MAX_SEATS_PER_REQUEST = 50
Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]
SeatIds = Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_SEATS_PER_REQUEST)]


class SeatsIn(msgspec.Struct):
    screening_id: Id
    seat_ids: SeatIds


class ExtendQuery(msgspec.Struct):
    additional_minutes: int = 5


class CancelQuery(msgspec.Struct):
    seat_ids: str | None = None


class MineQuery(msgspec.Struct):
    include_expired: bool = False


def unique_seats(seat_ids: list[int]) -> list[int]:
    if len(set(seat_ids)) != len(seat_ids):
        raise ValidationFailed("seat_ids must not contain duplicates")
    return seat_ids


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class ReservationOut(msgspec.Struct):
    id: int
    screening_id: int
    seat_id: int
    user_id: int
    reserved_at: datetime
    expires_at: datetime
    status: str


class ReserveOut(msgspec.Struct):
    reservations: list[ReservationOut]
    expires_in_minutes: int
    message: str


class ExtendedOut(msgspec.Struct):
    id: int | None  # None when the history cannot say right now (the hold stands)
    seat_id: int
    expires_at: datetime
    status: str


class ExtendOut(msgspec.Struct):
    reservations: list[ExtendedOut]
    expires_in_minutes: int
    message: str


class MyReservationOut(msgspec.Struct):
    id: int
    screening_id: int
    seat_id: int
    reserved_at: datetime
    expires_at: datetime
    status: str


class CleanupOut(msgspec.Struct):
    message: str
    timestamp: datetime
    duration_seconds: float


@router.post(
    "/api/v1/seat-reservations/reserve",
    access="user",
    body=SeatsIn,
    status=201,
    response=ReserveOut,
)
async def reserve(call: Call) -> ReserveOut:
    """Hold seats for a few minutes (all or nothing)."""
    body: SeatsIn = call.body
    seat_ids = unique_seats(body.seat_ids)
    screening_id, user_id = body.screening_id, call.user.user_id
    now_ms = int(time.time() * 1000)
    engine = call.services.engine
    holds = await engine.hold(screening_id, user_id, seat_ids, now_ms)
    holds.sort(key=_seat_of)
    new_ms = now_ms + engine.hold_ms
    # A seat the user already held keeps its hold, so its expiry is not now + hold time.
    kept = [h for h in holds if h.expires_at_ms != new_ms]
    reused = await _live_rows(call.services, screening_id, user_id, kept) if kept else {}
    fresh_seats = [h.seat_id for h in holds if h.seat_id not in reused]
    ids = await _ids_for(call.services, screening_id, user_id, fresh_seats) if fresh_seats else []
    rows, new_rows = _rows(screening_id, user_id, holds, reused, ids, now_ms, new_ms)
    if new_rows:
        call.services.history.submit(history.Inserted(new_rows))
    minutes = round((max(h.expires_at_ms for h in holds) - now_ms) / 60_000)
    return ReserveOut(
        rows, minutes, f"Reserved {plural(len(rows), 'seat')} for {plural(minutes, 'minute')}"
    )


def _seat_of(hold: Hold) -> int:
    return hold.seat_id


def _rows(
    screening_id: int,
    user_id: int,
    holds: list[Hold],
    reused: dict[int, ReservationOut],
    ids: list[int],
    now_ms: int,
    new_ms: int,
) -> tuple[list[ReservationOut], list[history.Row]]:
    """The response's rows in seat order, and the history rows of those without one yet (taking
    ``ids`` in turn). New holds all end at ``new_ms``: their expiry is converted once."""
    reserved_at, new_at = utc(now_ms), utc(new_ms)
    next_id = iter(ids).__next__
    rows: list[ReservationOut] = []
    new_rows: list[history.Row] = []
    for h in holds:
        row = reused.get(h.seat_id)
        if row is None:
            expires_at = new_at if h.expires_at_ms == new_ms else utc(h.expires_at_ms)
            row = ReservationOut(
                next_id(), screening_id, h.seat_id, user_id, reserved_at, expires_at, "active"
            )
            new_rows.append((row.id, screening_id, h.seat_id, user_id, reserved_at, expires_at))
        rows.append(row)
    return rows, new_rows


async def _ids_for(
    services: Services, screening_id: int, user_id: int, seat_ids: list[int]
) -> list[int]:
    """Reservation ids for the seats just held. Taken after the hold, so a refused attempt (most
    of them on release day) costs no id; when no id can be had (PostgreSQL down while a new block
    is due) the new holds are let go again: no hold stays without the row its response names."""
    try:
        return await services.reservation_ids.take(len(seat_ids))
    except BaseException:
        with contextlib.suppress(Exception):
            await services.engine.release(screening_id, user_id, seat_ids)
        raise


async def _live_rows(
    services: Services, screening_id: int, user_id: int, kept: list[Hold]
) -> dict[int, ReservationOut]:
    """The active history rows of holds the user already had: this process's, else PostgreSQL's."""
    writer = services.history
    found: dict[int, ReservationOut] = {}
    missing: list[Hold] = []
    for h in kept:
        expires_at = utc(h.expires_at_ms)
        row = writer.live.find(screening_id, h.seat_id, user_id, expires_at)
        if row is None:
            missing.append(h)
        else:
            found[h.seat_id] = _out(screening_id, h.seat_id, row, expires_at)
    if missing:
        rows = await _rows_if_known(services, screening_id, user_id, [h.seat_id for h in missing])
        for h in missing:
            if h.seat_id in rows:
                found[h.seat_id] = _out(
                    screening_id, h.seat_id, rows[h.seat_id], utc(h.expires_at_ms)
                )
    return found


def _out(
    screening_id: int, seat_id: int, row: history.LiveRow, expires_at: datetime
) -> ReservationOut:
    return ReservationOut(
        row.id, screening_id, seat_id, row.user_id, row.reserved_at, expires_at, "active"
    )


async def _rows_if_known(
    services: Services, screening_id: int, user_id: int, seat_ids: list[int]
) -> dict[int, history.LiveRow]:
    """Active history rows; empty when PostgreSQL cannot say (a hold then gets a new row, an
    extension answers without ids: the hold stands either way)."""
    await services.history.flush()
    try:
        return await history.active_rows(services.db, screening_id, user_id, seat_ids)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):  # ids are informative
        return {}


@router.post(
    "/api/v1/seat-reservations/extend",
    access="user",
    body=SeatsIn,
    query=ExtendQuery,
    response=ExtendOut,
)
async def extend(call: Call) -> ExtendOut:
    """Give your held seats more time."""
    body: SeatsIn = call.body
    minutes: int = call.query.additional_minutes
    limit = call.services.settings.max_extend_minutes
    if not 1 <= minutes <= limit:
        raise ValidationFailed(f"additional_minutes must be between 1 and {limit}")
    seat_ids = unique_seats(body.seat_ids)
    user_id = call.user.user_id
    engine = call.services.engine
    holds = await engine.extend(body.screening_id, user_id, seat_ids, minutes * 60_000)
    expires = {h.seat_id: utc(h.expires_at_ms) for h in holds}
    writer = call.services.history
    writer.submit(history.Extended(body.screening_id, user_id, expires))
    rows = await _rows_if_known(call.services, body.screening_id, user_id, list(expires))
    ids = {seat_id: row.id for seat_id, row in rows.items()}
    return ExtendOut(
        [
            ExtendedOut(ids.get(seat_id), seat_id, at, "active")
            for seat_id, at in sorted(expires.items())
        ],
        minutes,
        f"Extended reservation for {plural(len(holds), 'seat')} by {plural(minutes, 'minute')}",
    )


@router.delete(
    "/api/v1/seat-reservations/cancel/{screening_id:int}",
    access="user",
    query=CancelQuery,
    status=204,
)
async def cancel(call: Call) -> None:
    """Release your held seats of a screening (all, or those in ``seat_ids``)."""
    screening_id: int = call.params["screening_id"]
    seat_ids = parse_seat_list(call.query.seat_ids)
    user_id = call.user.user_id
    await call.services.engine.release(screening_id, user_id, seat_ids)
    call.services.history.submit(history.Closed(screening_id, user_id, seat_ids, "cancelled"))


def parse_seat_list(raw: str | None) -> list[int] | None:
    """``"42,43"`` as seat ids; None when absent; 422 when not a list of distinct ids."""
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",")]
    # isdecimal, not isdigit: int() refuses digits such as "²" that isdigit accepts (a 500).
    if not parts or len(parts) > MAX_SEATS_PER_REQUEST or not all(p.isdecimal() for p in parts):
        raise ValidationFailed("seat_ids must be a comma-separated list of seat ids")
    ids = [int(p) for p in parts]
    if any(not 1 <= i <= MAX_ID for i in ids):
        raise ValidationFailed("seat_ids must be a comma-separated list of seat ids")
    return unique_seats(ids)


@router.get(
    "/api/v1/seat-reservations/my-reservations",
    access="user",
    query=MineQuery,
    response=list[MyReservationOut],
)
async def my_reservations(call: Call) -> list[MyReservationOut]:
    """Your holds, newest first (live ones only unless include_expired)."""
    await call.services.history.flush()
    rows = await history.for_user(call.services.db, call.user.user_id, call.query.include_expired)
    return [
        MyReservationOut(
            r["id"], r["screening_id"], r["seat_id"], r["reserved_at"], r["expires_at"], r["status"]
        )
        for r in rows
    ]


@router.post("/api/v1/seat-reservations/cleanup", response=CleanupOut)
async def cleanup(call: Call) -> CleanupOut:
    """Free every hold that already expired (the sweeper does this every second anyway)."""
    interval_ms = max(1, int(call.services.settings.cleanup_min_interval_seconds * 1000))
    if not await call.services.redis.set(keys.rate_limit("cleanup"), b"1", px=interval_ms, nx=True):
        raise TooManyRequests("Cleanup ran moments ago; try again shortly", 1)
    started = time.perf_counter()
    count = await call.services.engine.sweep()
    return CleanupOut(
        f"Cleaned up {count} expired reservations",
        datetime.now(UTC),
        round(time.perf_counter() - started, 3),
    )
