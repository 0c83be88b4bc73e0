"""The guide's seat reservations: hold, extend, cancel, my-reservations, cleanup.

Holds live in Redis (the engine); their history goes to PostgreSQL through the background writer
of ``db/reservations.py``, so a hold does not wait for PostgreSQL (except once per thousand
reservation ids).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import msgspec

from api.routing import MAX_ID, Call, Router
from api.state import Services
from db import reservations as history
from db.layouts import Layouts
from seatlock import keys
from seatlock.engine import SeatEngine
from seatlock.errors import TooManyRequests, ValidationFailed
from seatlock.events import Hub

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


def engine_of(services: Services) -> SeatEngine:
    engine: SeatEngine = services.extras["engine"]
    return engine


def hub_of(services: Services) -> Hub:
    hub: Hub = services.extras["hub"]
    return hub


def layouts_of(services: Services) -> Layouts:
    layouts: Layouts = services.extras["layouts"]
    return layouts


def history_of(services: Services) -> history.HistoryWriter:
    writer: history.HistoryWriter = services.extras["history"]
    return writer


def unique_seats(seat_ids: list[int]) -> list[int]:
    if len(set(seat_ids)) != len(seat_ids):
        raise ValidationFailed("seat_ids must not contain duplicates")
    return seat_ids


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@router.post("/api/v1/seat-reservations/reserve", access="user", body=SeatsIn, status=201)
async def reserve(call: Call) -> dict[str, Any]:
    """Hold seats for a few minutes (all or nothing)."""
    body: SeatsIn = call.body
    seat_ids = unique_seats(body.seat_ids)
    user_id = call.user.user_id
    # Ids first: a hold is never left without the ids its response names.
    ids = await call.services.extras["reservation_ids"].take(len(seat_ids))
    now_ms = int(time.time() * 1000)
    holds = await engine_of(call.services).hold(body.screening_id, user_id, seat_ids, now_ms)
    reserved_at = utc(now_ms)
    rows = [
        (rid, body.screening_id, h.seat_id, user_id, reserved_at, utc(h.expires_at_ms))
        for rid, h in zip(ids, sorted(holds, key=lambda h: h.seat_id), strict=False)
    ]
    history_of(call.services).submit(history.Inserted(rows))
    minutes = round((max(h.expires_at_ms for h in holds) - now_ms) / 60_000)
    return {
        "reservations": [_reservation(r) for r in rows],
        "expires_in_minutes": minutes,
        "message": f"Reserved {plural(len(rows), 'seat')} for {plural(minutes, 'minute')}",
    }


def _reservation(row: tuple[int, int, int, int, datetime, datetime]) -> dict[str, Any]:
    rid, screening_id, seat_id, user_id, reserved_at, expires_at = row
    return {
        "id": rid,
        "screening_id": screening_id,
        "seat_id": seat_id,
        "user_id": user_id,
        "reserved_at": reserved_at,
        "expires_at": expires_at,
        "status": "active",
    }


@router.post("/api/v1/seat-reservations/extend", access="user", body=SeatsIn, query=ExtendQuery)
async def extend(call: Call) -> dict[str, Any]:
    """Give your held seats more time."""
    body: SeatsIn = call.body
    minutes: int = call.query.additional_minutes
    limit = call.services.settings.max_extend_minutes
    if not 1 <= minutes <= limit:
        raise ValidationFailed(f"additional_minutes must be between 1 and {limit}")
    seat_ids = unique_seats(body.seat_ids)
    user_id = call.user.user_id
    engine = engine_of(call.services)
    holds = await engine.extend(body.screening_id, user_id, seat_ids, minutes * 60_000)
    expires = {h.seat_id: utc(h.expires_at_ms) for h in holds}
    writer = history_of(call.services)
    writer.submit(history.Extended(body.screening_id, user_id, expires))
    ids = await _ids_if_known(call.services, body.screening_id, user_id, list(expires))
    return {
        "reservations": [
            {"id": ids.get(seat_id), "seat_id": seat_id, "expires_at": at, "status": "active"}
            for seat_id, at in sorted(expires.items())
        ],
        "expires_in_minutes": minutes,
        "message": f"Extended reservation for {plural(len(holds), 'seat')}"
        f" by {plural(minutes, 'minute')}",
    }


async def _ids_if_known(
    services: Services, screening_id: int, user_id: int, seat_ids: list[int]
) -> dict[int, int]:
    """Reservation ids from the history; empty when PostgreSQL cannot say (the hold stands)."""
    await history_of(services).flush()
    try:
        return await history.active_ids(services.db, screening_id, user_id, seat_ids)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):  # ids are informative
        return {}


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
    await engine_of(call.services).release(screening_id, user_id, seat_ids)
    history_of(call.services).submit(history.Closed(screening_id, user_id, seat_ids, "cancelled"))


def parse_seat_list(raw: str | None) -> list[int] | None:
    """``"42,43"`` as seat ids; None when absent; 422 when not a list of distinct ids."""
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",")]
    if not parts or len(parts) > MAX_SEATS_PER_REQUEST or not all(p.isdigit() for p in parts):
        raise ValidationFailed("seat_ids must be a comma-separated list of seat ids")
    ids = [int(p) for p in parts]
    if any(not 1 <= i <= MAX_ID for i in ids):
        raise ValidationFailed("seat_ids must be a comma-separated list of seat ids")
    return unique_seats(ids)


@router.get("/api/v1/seat-reservations/my-reservations", access="user", query=MineQuery)
async def my_reservations(call: Call) -> list[dict[str, Any]]:
    """Your holds, newest first (live ones only unless include_expired)."""
    await history_of(call.services).flush()
    rows = await history.for_user(call.services.db, call.user.user_id, call.query.include_expired)
    return [
        {
            "id": r["id"],
            "screening_id": r["screening_id"],
            "seat_id": r["seat_id"],
            "reserved_at": r["reserved_at"],
            "expires_at": r["expires_at"],
            "status": r["status"],
        }
        for r in rows
    ]


@router.post("/api/v1/seat-reservations/cleanup")
async def cleanup(call: Call) -> dict[str, Any]:
    """Free every hold that already expired (the sweeper does this every second anyway)."""
    interval_ms = max(1, int(call.services.settings.cleanup_min_interval_seconds * 1000))
    if not await call.services.redis.set(keys.rate_limit("cleanup"), b"1", px=interval_ms, nx=True):
        raise TooManyRequests("Cleanup ran moments ago; try again shortly", 1)
    started = time.perf_counter()
    count = await engine_of(call.services).sweep()
    return {
        "message": f"Cleaned up {count} expired reservations",
        "timestamp": datetime.now(UTC),
        "duration_seconds": round(time.perf_counter() - started, 3),
    }
