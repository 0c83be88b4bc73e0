"""Payment verification: the hmac verifier takes only ids the provider signed for exactly this
booking or ticket, the booking flows refuse anything else before touching a seat, and the
development verifier takes any id."""

from __future__ import annotations

import asyncpg
import pytest

from db.reservations import HistoryWriter
from db.tickets import BookingWriter
from seatlock.engine.seats import SeatEngine
from seatlock.errors import PaymentRefused
from seatlock.services.bookings import BookingService
from seatlock.services.payments import (
    AcceptAny,
    HmacVerifier,
    booking_scope,
    sign,
    ticket_scope,
    verifier,
)
from seatlock.settings import Settings
from tests import factories as make

SECRET = "s" * 32


@pytest.fixture
def paid_bookings(
    engine: SeatEngine,
    booking_writer: BookingWriter,
    history_writer: HistoryWriter,
    pool: asyncpg.Pool,
) -> BookingService:
    return BookingService(
        engine, booking_writer, history_writer, pool, payments=HmacVerifier(SECRET)
    )


def test_a_signature_pays_only_for_its_own_scope() -> None:
    check = HmacVerifier(SECRET)
    scope = booking_scope(7, 3, [12, 11])
    assert scope == "booking:7:3:11,12"
    paid = sign(SECRET, "pi_3N.x", scope)
    check.verify(paid, scope)
    check.verify(paid, booking_scope(7, 3, [11, 12]))  # seat order does not matter
    for other in (booking_scope(8, 3, [11, 12]), booking_scope(7, 3, [11]), ticket_scope(5)):
        with pytest.raises(PaymentRefused, match="not a valid payment"):
            check.verify(paid, other)
    with pytest.raises(PaymentRefused, match="not a valid payment"):
        check.verify(sign("t" * 32, "pi_3N.x", scope), scope)  # another secret


@pytest.mark.parametrize(
    "payment_id", [None, "made-up", "ref." + "0" * 63, ".", "ref." + "é" * 64, "x\x00." + "a" * 64]
)
def test_unsigned_or_malformed_ids_are_refused(payment_id: str | None) -> None:
    with pytest.raises(PaymentRefused):
        HmacVerifier(SECRET).verify(payment_id, ticket_scope(1))


def test_the_verifier_is_chosen_by_settings_and_keeps_its_secret() -> None:
    assert isinstance(verifier("accept", ""), AcceptAny)
    AcceptAny().verify(None, ticket_scope(1))
    assert SECRET not in repr(verifier("hmac", SECRET))
    with pytest.raises(ValueError, match="PAYMENT_SECRET"):
        Settings(payment_verifier="hmac", payment_secret="short")
    with pytest.raises(ValueError, match="PAYMENT_VERIFIER"):
        Settings(payment_verifier="trust-me")
    hmac_settings = Settings(payment_verifier="hmac", payment_secret=SECRET)
    assert SECRET not in repr(hmac_settings)
    assert Settings(hold_seconds=40).payment_deadline_seconds == 40
    assert Settings(hold_seconds=40, payment_seconds=90).payment_deadline_seconds == 90


async def test_a_made_up_payment_books_nothing(
    paid_bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 2)
    await engine.hold(show.id, user, show.seat_ids)
    with pytest.raises(PaymentRefused):
        await paid_bookings.book_from_reservation(user, show.id, show.seat_ids, "pay-1")
    other_seats = sign(SECRET, "pay-1", booking_scope(user, show.id, show.seat_ids[:1]))
    with pytest.raises(PaymentRefused):
        await paid_bookings.book_from_reservation(user, show.id, show.seat_ids, other_seats)
    assert await db.fetchval("SELECT count(*) FROM tickets") == 0
    paid = sign(SECRET, "pay-1", booking_scope(user, show.id, show.seat_ids))
    tickets = await paid_bookings.book_from_reservation(user, show.id, show.seat_ids, paid)
    assert {t.status for t in tickets} == {"confirmed"}


async def test_quick_book_with_a_made_up_payment_holds_nothing(
    paid_bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 1)
    with pytest.raises(PaymentRefused):
        await paid_bookings.book(user, show.id, show.seat_ids, "pay-2")
    assert {s.status for s in await engine.seat_map(show.id)} == {"available"}
    paid = sign(SECRET, "pay-2", booking_scope(user, show.id, show.seat_ids))
    [ticket] = await paid_bookings.book(user, show.id, show.seat_ids, paid)
    assert ticket.status == "confirmed"


async def test_confirm_payment_needs_a_signature_for_that_ticket(
    paid_bookings: BookingService, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 2)
    first, second = await paid_bookings.book(user, show.id, show.seat_ids, None)
    assert first.status == "pending"
    for refused in (None, "pay-3", sign(SECRET, "pay-3", ticket_scope(second.id))):
        with pytest.raises(PaymentRefused):
            await paid_bookings.confirm_payment(first, refused)
    paid = sign(SECRET, "pay-3", ticket_scope(first.id))
    confirmed = await paid_bookings.confirm_payment(first, paid)
    assert (confirmed.status, confirmed.payment_id) == ("confirmed", paid)
