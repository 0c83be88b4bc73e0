"""Unpaid tickets behave like holds: a pending ticket has a payment deadline, past it the ticket
is cancelled in PostgreSQL once (whatever number of processes try) and its seat freed in Redis,
and it can no longer be confirmed. Time is passed in: PostgreSQL's now plus an hour."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import asyncpg
import pytest

from db.reservations import HistoryWriter
from db.tickets import BookingWriter
from seatlock.engine.seats import SeatEngine
from seatlock.errors import Conflict, InvalidInput
from seatlock.services.bookings import BookingService
from seatlock.services.payments import UnpaidExpiry
from tests import factories as make

PAYMENT_SECONDS = 600


@pytest.fixture
def unpaid(
    engine: SeatEngine,
    booking_writer: BookingWriter,
    history_writer: HistoryWriter,
    pool: asyncpg.Pool,
) -> BookingService:
    return BookingService(
        engine, booking_writer, history_writer, pool, payment_seconds=PAYMENT_SECONDS
    )


async def later(db: asyncpg.Connection, seconds: float) -> datetime:
    """PostgreSQL's clock ``seconds`` from now: the moment a test pretends it is."""
    moment: datetime = await db.fetchval("SELECT now()")
    return moment + timedelta(seconds=seconds)


async def states(engine: SeatEngine, screening_id: int) -> dict[int, str]:
    return {s.seat_id: s.status for s in await engine.seat_map(screening_id)}


async def test_a_pending_ticket_records_its_deadline(
    unpaid: BookingService, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 2)
    tickets = await unpaid.book(user, show.id, show.seat_ids, None)
    rows = await db.fetch(
        "SELECT payment_due - booked_at AS grace FROM tickets WHERE id = ANY($1::bigint[])",
        [t.id for t in tickets],
    )
    assert [r["grace"] for r in rows] == [timedelta(seconds=PAYMENT_SECONDS)] * 2


async def test_past_the_deadline_the_ticket_is_cancelled_and_its_seat_freed(
    unpaid: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 3)
    pending = await unpaid.book(user, show.id, show.seat_ids[:2], None)
    paid = await unpaid.book(user, show.id, show.seat_ids[2:], "pay-2")
    expiry = UnpaidExpiry(engine, unpaid.db, PAYMENT_SECONDS)
    assert await expiry.expire_once(await later(db, PAYMENT_SECONDS - 60)) == 0
    assert set((await states(engine, show.id)).values()) == {"booked"}
    assert await expiry.expire_once(await later(db, PAYMENT_SECONDS + 1)) == 2
    statuses = dict(
        await db.fetch("SELECT id, status FROM tickets WHERE screening_id = $1", show.id)
    )
    assert statuses == {
        pending[0].id: "cancelled",
        pending[1].id: "cancelled",
        paid[0].id: "confirmed",
    }
    assert await states(engine, show.id) == {
        show.seat_ids[0]: "available",
        show.seat_ids[1]: "available",
        show.seat_ids[2]: "booked",
    }
    with pytest.raises(InvalidInput, match="Only pending tickets"):
        await unpaid.confirm_payment(pending[0], "pay-late")
    await engine.hold(show.id, user, show.seat_ids[:1])  # the seat is on sale again


async def test_an_unrecorded_deadline_is_booked_at_plus_the_setting(
    unpaid: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 1)
    [ticket] = await unpaid.book(user, show.id, show.seat_ids, None)
    await db.execute("UPDATE tickets SET payment_due = NULL WHERE id = $1", ticket.id)
    expiry = UnpaidExpiry(engine, unpaid.db, PAYMENT_SECONDS)
    assert await expiry.expire_once(await later(db, PAYMENT_SECONDS - 60)) == 0
    assert await expiry.expire_once(await later(db, PAYMENT_SECONDS + 1)) == 1


async def test_a_ticket_past_its_deadline_cannot_be_confirmed(
    unpaid: BookingService, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 1)
    [ticket] = await unpaid.book(user, show.id, show.seat_ids, None)
    with pytest.raises(Conflict, match="deadline of this ticket has passed"):
        await unpaid.confirm_payment(ticket, "pay-3", await later(db, PAYMENT_SECONDS + 1))
    confirmed = await unpaid.confirm_payment(ticket, "pay-3", await later(db, 60))
    assert confirmed.status == "confirmed"
    expiry = UnpaidExpiry(unpaid.engine, unpaid.db, PAYMENT_SECONDS)
    assert await expiry.expire_once(await later(db, PAYMENT_SECONDS + 1)) == 0  # paid: kept


async def test_racing_processes_expire_each_ticket_once(
    unpaid: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int, other: int
) -> None:
    show = await make.show(db, 20)
    await unpaid.book(user, show.id, show.seat_ids[:10], None)
    await unpaid.book(other, show.id, show.seat_ids[10:], None)
    at = await later(db, PAYMENT_SECONDS + 1)
    expiries = [UnpaidExpiry(engine, unpaid.db, PAYMENT_SECONDS) for _ in range(4)]
    counts = await asyncio.gather(*(e.expire_once(at) for e in expiries))
    assert sum(counts) == 20
    assert set((await states(engine, show.id)).values()) == {"available"}
