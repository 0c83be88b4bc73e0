"""BookingService, audited: a refused booking changes no hold of its caller and marks again the
sales Redis lost, and a ticket an admin confirms stops counting toward its buyer's cap."""

from __future__ import annotations

import asyncpg
import pytest

from db.tickets import SeatAlreadySold
from seatlock.engine.seats import SeatEngine
from seatlock.services.bookings import BookingService
from tests import factories as make


async def seats_of(engine: SeatEngine, screening_id: int) -> dict[int, tuple[str, int | None]]:
    """seat id -> (status, user id), as Redis has it."""
    return {s.seat_id: (s.status, s.user_id) for s in await engine.seat_map(screening_id)}


async def test_a_new_payment_for_seats_bought_before_keeps_the_other_holds(
    bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 3)
    bought, held, free = show.seat_ids
    await engine.hold(show.id, user, [bought])
    await bookings.book_from_reservation(user, show.id, [bought], "pay-first")
    await engine.hold(show.id, user, [held])
    # The claim passes (one seat is the user's already, the other held): PostgreSQL refuses.
    with pytest.raises(SeatAlreadySold):
        await bookings.book_from_reservation(user, show.id, [bought, held], "pay-second")
    assert await seats_of(engine, show.id) == {
        bought: ("booked", user),
        held: ("reserved", user),  # still the user's to buy
        free: ("available", None),
    }
    assert await db.fetchval("SELECT count(*) FROM bookings") == 1


async def test_a_sale_redis_lost_is_marked_again_by_the_booking_it_refuses(
    bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int, other: int
) -> None:
    show = await make.show(db, 3)
    sold, wanted, free = show.seat_ids
    await engine.hold(show.id, user, [sold])
    await bookings.book_from_reservation(user, show.id, [sold], "pay-first")
    await engine.unsell(show.id, [sold])  # Redis lost the mark (a failover before it replicated)
    await engine.hold(show.id, other, [sold, wanted])
    with pytest.raises(SeatAlreadySold):
        await bookings.book_from_reservation(other, show.id, [sold, wanted], "pay-other")
    # The sold seat shows booked again at once (not available, to be held and refused again);
    # the other user keeps the seat it may still buy.
    assert await seats_of(engine, show.id) == {
        sold: ("booked", user),
        wanted: ("reserved", other),
        free: ("available", None),
    }
    assert await bookings.book_from_reservation(other, show.id, [wanted], "pay-other")


async def test_a_ticket_an_admin_confirms_no_longer_counts_toward_the_cap(
    bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 11)
    cap = engine.max_seats_per_user
    pending = await bookings.book(user, show.id, show.seat_ids[:cap], None)  # unpaid: at the cap
    await bookings.change_status(pending[0], "confirmed")  # paid, as an admin records it
    # The confirmed seat counts no more: one seat more may be held (as after confirm-payment).
    await engine.hold(show.id, user, show.seat_ids[cap:])
