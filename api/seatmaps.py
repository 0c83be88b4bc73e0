"""Seat maps: live status from Redis joined with seat details cached per process.

``reserved_by`` is shown only to the holder (invariant 9); ``expires_at`` to everyone.
"""

from __future__ import annotations

from typing import Any

from api.reservations import engine_of, layouts_of, utc
from api.routing import Call, Router
from db.layouts import SeatInfo
from seatlock.engine import ScreeningNotFound, SeatState

router = Router("Seat availability")


async def seat_map(call: Call, screening_id: int) -> list[dict[str, Any]]:
    states = await engine_of(call.services).seat_map(screening_id)
    details = await layouts_of(call.services).seats(screening_id, [s.seat_id for s in states])
    if details is None:
        raise ScreeningNotFound(screening_id)
    viewer = call.principal.user_id if call.principal is not None else None
    by_id = {s.seat_id: s for s in states}
    return [
        _entry(info, by_id[seat_id], viewer)
        for seat_id, info in details.seats.items()
        if seat_id in by_id
    ]


def _entry(info: SeatInfo, state: SeatState, viewer: int | None) -> dict[str, Any]:
    reserved = state.status == "reserved"
    return {
        "seat": {
            "id": info.id,
            "room_id": info.room_id,
            "row_label": info.row_label,
            "seat_number": info.seat_number,
            "seat_type": info.seat_type,
        },
        "status": state.status,
        "reserved_by": state.user_id if reserved and state.user_id == viewer else None,
        "expires_at": utc(state.expires_at_ms) if reserved and state.expires_at_ms else None,
    }


@router.get(
    "/api/v1/seat-reservations/screening/{screening_id:int}/availability", access="optional"
)
async def availability(call: Call) -> list[dict[str, Any]]:
    """Every seat of a screening with its live status."""
    return await seat_map(call, call.params["screening_id"])


@router.get("/api/v1/screenings/{screening_id:int}/available-seats", access="optional")
async def available_seats(call: Call) -> list[dict[str, Any]]:
    """The seats of a screening that are free right now."""
    seats = await seat_map(call, call.params["screening_id"])
    return [s for s in seats if s["status"] == "available"]


@router.get("/api/v1/showtimes/{showtime_id:int}/seats", access="optional")
async def showtime_seats(call: Call) -> list[dict[str, Any]]:
    """Every seat of a showtime (a screening) with its live status."""
    return await seat_map(call, call.params["showtime_id"])
