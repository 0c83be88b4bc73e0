"""The guide's seat reservations: hold, extend, cancel, my-reservations, cleanup.

The flows live in ``seatlock/services/holds.py``; a route here parses, calls the service and
renders the guide's JSON.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal, cast

import msgspec

from api.routing import ID_DIGITS, MAX_ID, Call, Router
from seatlock.errors import ValidationFailed
from seatlock.services.holds import Extension, Held
from seatlock.services.holds import utc as utc  # re-exported: api/seatmaps.py renders with it

router = Router("Seat reservations")

MAX_SEATS_PER_REQUEST = 50
Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]
# Duplicates are refused by the handler (422); the schema says so.
SeatIds = Annotated[
    list[Id],
    msgspec.Meta(
        min_length=1, max_length=MAX_SEATS_PER_REQUEST, extra_json_schema={"uniqueItems": True}
    ),
]


class SeatsIn(msgspec.Struct):
    screening_id: Id
    seat_ids: SeatIds


MAX_BEST_SEATS = 10
SeatType = Literal["standard", "premium", "vip", "wheelchair", "couple"]  # the seats table's


class NearIn(msgspec.Struct):
    """A seat to sit near: the focal point becomes this row and this seat number."""

    row_label: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    seat_number: Annotated[int, msgspec.Meta(ge=1, le=100_000)]


class BestIn(msgspec.Struct):
    """``count`` adjacent seats of one row, the best block by distance to the focal point (the
    room's centre column, two thirds of the way back, unless ``near`` names a seat). Without
    ``seat_type`` a block is of one type, never wheelchair, standard blocks first."""

    screening_id: Id
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_BEST_SEATS)]
    seat_type: SeatType | None = None
    near: NearIn | None = None


class ExtendQuery(msgspec.Struct):
    # Checked by the hold service against SEATLOCK_MAX_EXTEND_MINUTES; documented at its default.
    additional_minutes: Annotated[
        int, msgspec.Meta(extra_json_schema={"minimum": 1, "maximum": 15})
    ] = 5


class CancelQuery(msgspec.Struct):
    seat_ids: (
        Annotated[str, msgspec.Meta(extra_json_schema={"pattern": r"^[0-9]+(,[0-9]+)*$"})] | None
    ) = None  # comma-separated seat ids, parsed by the handler


class MineQuery(msgspec.Struct):
    include_expired: bool = False


def unique_seats(seat_ids: list[int]) -> list[int]:
    if len(set(seat_ids)) != len(seat_ids):
        raise ValidationFailed("seat_ids must not contain duplicates")
    return seat_ids


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def span(ms: int) -> str:
    """A time as a message tells it: in minutes, or in seconds under a minute (not "0 minutes")."""
    seconds = round(ms / 1000)
    return plural(seconds, "second") if seconds < 60 else plural(round(ms / 60_000), "minute")


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
    errors=(404, 409),
    access="user",
    body=SeatsIn,
    status=201,
    response=ReserveOut,
)
async def reserve(call: Call) -> ReserveOut:
    """Hold seats for a few minutes (all or nothing)."""
    body: SeatsIn = call.body
    seat_ids = unique_seats(body.seat_ids)
    return _reserved(await call.services.holds.hold(body.screening_id, call.user.user_id, seat_ids))


@router.post(
    "/api/v1/seat-reservations/reserve-best",
    errors=(404, 409),
    access="user",
    body=BestIn,
    status=201,
    response=ReserveOut,
)
async def reserve_best(call: Call) -> ReserveOut:
    """Hold the best block of adjacent seats in one row (all or nothing)."""
    body: BestIn = call.body
    near = None if body.near is None else (body.near.row_label, body.near.seat_number)
    held = await call.services.holds.hold_best(
        body.screening_id, call.user.user_id, body.count, body.seat_type, near
    )
    return _reserved(held)


def _reserved(held: Held) -> ReserveOut:
    """The answer to a hold. The service's rows are rendered as they are: a Reservation has
    ReservationOut's fields, in its order (tests/api/test_reservations.py), and is a Struct
    too: no copy per seat."""
    rows = cast(list[ReservationOut], held.reservations)
    # Under a minute (SEATLOCK_HOLD_SECONDS below 60, or a seat held again near its end): told
    # in seconds (span).
    return ReserveOut(
        rows, held.minutes, f"Reserved {plural(len(rows), 'seat')} for {span(held.left_ms)}"
    )


@router.post(
    "/api/v1/seat-reservations/extend",
    errors=(404, 409),
    access="user",
    body=SeatsIn,
    query=ExtendQuery,
    response=ExtendOut,
)
async def extend(call: Call) -> ExtendOut:
    """Give your held seats more time."""
    body: SeatsIn = call.body
    minutes: int = call.query.additional_minutes
    holds = call.services.holds
    holds.check_extension(minutes)  # before the seat list: the same 422 when both are wrong
    seat_ids = unique_seats(body.seat_ids)
    extended = await holds.extend(body.screening_id, call.user.user_id, seat_ids, minutes)
    limit_ms = call.services.settings.max_hold_seconds * 1000
    starts_at = None
    if any(e.added_ms < minutes * 60_000 for e in extended):  # capped: by what?
        screening = await call.services.layouts.seats(body.screening_id)
        starts_at = None if screening is None else screening.starts_at
    return ExtendOut(
        [ExtendedOut(e.id, e.seat_id, e.expires_at, "active") for e in extended],
        minutes,
        extended_message(extended, minutes, limit_ms, starts_at),
    )


MILLISECOND = timedelta(milliseconds=1)


def extended_message(
    extended: list[Extension], minutes: int, limit_ms: int, starts_at: datetime | None = None
) -> str:
    """What an extension did: the minutes asked, or less where a hold reached its longest life
    (``SEATLOCK_MAX_HOLD_SECONDS``) or the screening's start (``starts_at``: holds end then,
    lua/extend.lua), which the message then names."""
    seats = plural(len(extended), "seat")
    gains = {e.added_ms for e in extended}
    if gains == {minutes * 60_000}:
        return f"Extended reservation for {seats} by {plural(minutes, 'minute')}"
    limit = f"a hold lasts at most {span(limit_ms)}"
    # Redis keeps the start in whole milliseconds.
    if starts_at is not None and any(e.expires_at >= starts_at - MILLISECOND for e in extended):
        limit = "a hold ends when the screening starts"
    if gains == {0}:
        return f"Reservation for {seats} not extended: {limit}"
    told = {span(gain) for gain in gains}  # holds taken moments apart gain a few ms apart
    by = told.pop() if len(told) == 1 else f"up to {span(max(gains))}"
    return f"Extended reservation for {seats} by {by}: {limit}"


@router.delete(
    "/api/v1/seat-reservations/cancel/{screening_id:int}",
    errors=(409,),
    access="user",
    query=CancelQuery,
    status=204,
)
async def cancel(call: Call) -> None:
    """Release your held seats of a screening (all, or those in ``seat_ids``)."""
    seat_ids = parse_seat_list(call.query.seat_ids)
    await call.services.holds.cancel(call.params["screening_id"], call.user.user_id, seat_ids)


def parse_seat_list(raw: str | None) -> list[int] | None:
    """``"42,43"`` as seat ids; None when absent; 422 when not a list of distinct ids."""
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",")]
    # isdecimal, not isdigit: int() refuses digits such as "²" that isdigit accepts (a 500), and
    # more than 4,300 of them (ID_DIGITS is as many as an id can have).
    if (
        not parts
        or len(parts) > MAX_SEATS_PER_REQUEST
        or not all(p.isdecimal() and len(p) <= ID_DIGITS for p in parts)
    ):
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
    rows = await call.services.holds.mine(call.user.user_id, call.query.include_expired)
    return [
        MyReservationOut(r.id, r.screening_id, r.seat_id, r.reserved_at, r.expires_at, r.status)
        for r in rows
    ]


@router.post("/api/v1/seat-reservations/cleanup", errors=(429,), response=CleanupOut)
async def cleanup(call: Call) -> CleanupOut:
    """Free every hold that already expired (the sweeper does this every second anyway)."""
    done = await call.services.holds.cleanup()
    return CleanupOut(
        f"Cleaned up {done.expired} expired reservations", done.finished_at, done.seconds
    )
