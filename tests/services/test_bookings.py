"""BookingService without HTTP: replays by payment id (also concurrent ones) answer the same
tickets, a reused payment id is refused, a failed commit keeps the holds, and cancelled or
refunded tickets free their seats in Redis (also when Redis refuses for a while, and when a replay
raced the cancellation)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import asyncpg
import pytest
from redis.asyncio import Redis

from db.reservations import HistoryWriter
from db.tickets import BookingWriter
from seatlock.engine.seats import SeatEngine
from seatlock.errors import Conflict, InvalidInput, Unavailable
from seatlock.services.bookings import SELL_WAIT_S, BookingService, Ticket
from tests import factories as make


async def states(engine: SeatEngine, screening_id: int) -> dict[int, str]:
    """seat id -> status, as Redis has it."""
    return {s.seat_id: s.status for s in await engine.seat_map(screening_id)}


async def bookings_count(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM bookings"))


async def test_book_from_reservation_sells_the_held_seats(
    bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 3)
    seats = show.seat_ids[:2]
    await engine.hold(show.id, user, seats)
    tickets = await bookings.book_from_reservation(user, show.id, seats, "pay-1")
    assert [(t.seat_id, t.status, t.payment_id) for t in tickets] == [
        (seat, "confirmed", "pay-1") for seat in seats
    ]
    assert await states(engine, show.id) == {
        seats[0]: "booked",
        seats[1]: "booked",
        show.seat_ids[2]: "available",
    }


async def test_the_same_payment_id_twice_answers_the_same_tickets(
    bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 2)
    await engine.hold(show.id, user, show.seat_ids)
    first = await bookings.book_from_reservation(user, show.id, show.seat_ids, "pay-2")
    again = await bookings.book_from_reservation(user, show.id, show.seat_ids, "pay-2")
    assert again == first
    assert await bookings_count(db) == 1


async def test_concurrent_duplicates_answer_the_same_tickets(
    bookings: BookingService,
    engine: SeatEngine,
    history_writer: HistoryWriter,
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    user: int,
) -> None:
    show = await make.show(db, 4)
    await engine.hold(show.id, user, show.seat_ids)
    # Two calls of one process (they may share a batch) ...
    same = await asyncio.gather(
        *(bookings.book_from_reservation(user, show.id, show.seat_ids[:2], "pay-3") for _ in "ab")
    )
    assert same[0] == same[1] and len(same[0]) == 2
    # ... and two processes, each with its own writer (separate transactions).
    other_writer = BookingWriter(pool)
    stop = asyncio.Event()
    task = asyncio.create_task(other_writer.run(stop))
    await asyncio.sleep(0)
    elsewhere = BookingService(engine, other_writer, history_writer, pool)
    try:
        apart = await asyncio.gather(
            bookings.book_from_reservation(user, show.id, show.seat_ids[2:], "pay-4"),
            elsewhere.book_from_reservation(user, show.id, show.seat_ids[2:], "pay-4"),
        )
    finally:
        stop.set()
        await task
    assert apart[0] == apart[1] and len(apart[0]) == 2
    assert await bookings_count(db) == 2


async def test_a_payment_id_reused_for_other_seats_is_refused(
    bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 3)
    a, b, c = show.seat_ids
    await engine.hold(show.id, user, [a, b])
    await bookings.book_from_reservation(user, show.id, [a], "pay-5")
    with pytest.raises(Conflict, match="already used for another booking"):
        await bookings.book_from_reservation(user, show.id, [b], "pay-5")
    assert (await states(engine, show.id))[b] == "reserved"  # the user may pay again
    with pytest.raises(Conflict, match="already used for another booking"):
        await bookings.book(user, show.id, [c], "pay-5")
    assert (await states(engine, show.id))[c] == "available"  # quick book leaves no hold
    assert await bookings_count(db) == 1


async def test_quick_book_without_payment_is_pending_and_a_paid_replay_is_idempotent(
    bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int, other: int
) -> None:
    show = await make.show(db, 3)
    pending = await bookings.book(user, show.id, show.seat_ids[:1], None)
    assert [t.status for t in pending] == ["pending"]
    paid = await bookings.book(user, show.id, show.seat_ids[1:], "pay-6")
    assert await bookings.book(user, show.id, show.seat_ids[1:], "pay-6") == paid
    with pytest.raises(Conflict):  # sold: a hold of another user is refused
        await bookings.book(other, show.id, show.seat_ids[:1], None)
    assert set((await states(engine, show.id)).values()) == {"booked"}


async def test_a_commit_that_cannot_happen_keeps_the_holds(
    engine: SeatEngine,
    history_writer: HistoryWriter,
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    user: int,
) -> None:
    show = await make.show(db, 2)
    await engine.hold(show.id, user, show.seat_ids)
    stopped = BookingService(engine, BookingWriter(pool), history_writer, pool)  # not running
    with pytest.raises(Unavailable):
        await stopped.book_from_reservation(user, show.id, show.seat_ids, "pay-7")
    assert set((await states(engine, show.id)).values()) == {"reserved"}
    assert await bookings_count(db) == 0


async def test_cancel_ticket_frees_the_seat_in_redis(
    bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int, other: int
) -> None:
    show = await make.show(db, 2)
    [ticket] = await bookings.book(user, show.id, show.seat_ids[:1], "pay-8")
    cancelled = await bookings.cancel_ticket(ticket)
    assert (cancelled.id, cancelled.status) == (ticket.id, "cancelled")
    assert (await states(engine, show.id))[ticket.seat_id] == "available"
    with pytest.raises(InvalidInput, match="Ticket is already cancelled"):
        await bookings.cancel_ticket(cancelled)
    # The seat can be sold again.
    [again] = await bookings.book(other, show.id, show.seat_ids[:1], None)
    assert again.seat_id == ticket.seat_id


async def test_a_ticket_of_a_started_screening_cannot_be_cancelled(
    bookings: BookingService, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 1, starts_in=timedelta(minutes=-5))
    ticket_id = await make.ticket(db, user, show.id)
    ticket = Ticket.of(await db.fetchrow("SELECT * FROM tickets WHERE id = $1", ticket_id))
    with pytest.raises(InvalidInput, match="have started"):
        await bookings.cancel_ticket(ticket)


async def test_change_status_follows_the_transitions_and_frees_refunded_seats(
    bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 2)
    [ticket] = await bookings.book(user, show.id, show.seat_ids[:1], "pay-9")
    with pytest.raises(InvalidInput, match="from confirmed to pending"):
        await bookings.change_status(ticket, "pending")
    refunded = await bookings.change_status(ticket, "refunded")
    assert refunded.status == "refunded"
    assert (await states(engine, show.id))[ticket.seat_id] == "available"
    with pytest.raises(Conflict, match="changed meanwhile"):
        await bookings.change_status(ticket, "cancelled")  # a stale copy: it is refunded now


async def test_confirm_payment_confirms_a_pending_ticket_once(
    bookings: BookingService, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 1)
    [ticket] = await bookings.book(user, show.id, show.seat_ids, None)
    confirmed = await bookings.confirm_payment(ticket, "pay-10")
    assert (confirmed.status, confirmed.payment_id) == ("confirmed", "pay-10")
    assert confirmed.confirmed_at is not None
    with pytest.raises(InvalidInput, match="this one is confirmed"):
        await bookings.confirm_payment(confirmed, None)
    with pytest.raises(InvalidInput, match="Only pending tickets can be confirmed"):
        await bookings.confirm_payment(ticket, None)  # a stale copy: confirmed meanwhile


async def test_a_replay_marks_the_seats_sold_again(
    bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 2)
    await engine.hold(show.id, user, show.seat_ids)
    first = await bookings.book_from_reservation(user, show.id, show.seat_ids, "pay-11")
    # Redis lost the sale (say the first call's marking failed): the seats look available.
    await engine.unsell(show.id, show.seat_ids)
    again = await bookings.book_from_reservation(user, show.id, show.seat_ids, "pay-11")
    assert again == first
    assert set((await states(engine, show.id)).values()) == {"booked"}
    # The quick-book replay: its hold now succeeds, the commit finds the payment id taken.
    await engine.unsell(show.id, show.seat_ids)
    assert await bookings.book(user, show.id, show.seat_ids, "pay-11") == first
    assert set((await states(engine, show.id)).values()) == {"booked"}
    assert await bookings_count(db) == 1


async def test_marking_sold_goes_on_in_the_background_until_redis_takes_it(
    bookings: BookingService,
    booking_writer: BookingWriter,
    engine: SeatEngine,
    db: asyncpg.Connection,
    redis: Redis,
    user: int,
) -> None:
    show = await make.show(db, 2)
    await engine.hold(show.id, user, show.seat_ids)

    async def refuse_writes(stage: str, conn: object) -> None:
        # Right after the COMMIT, Redis starts refusing every write (NOREPLICAS), for real.
        if stage == "committed":
            await redis.config_set("min-replicas-to-write", 1)

    booking_writer.commit_hook = refuse_writes
    try:
        started = time.monotonic()
        tickets = await bookings.book_from_reservation(user, show.id, show.seat_ids, "pay-12")
        # Not held up by Redis, which refuses for as long as the test lets it (a busy machine
        # took 1.3 s to answer in all).
        assert time.monotonic() - started < SELL_WAIT_S + 2.5
        assert [t.seat_id for t in tickets] == show.seat_ids
        assert set((await states(engine, show.id)).values()) == {"reserved"}
        await asyncio.sleep(0.3)
        assert bookings.sell_retries >= 2
    finally:
        await redis.config_set("min-replicas-to-write", 0)
    for _ in range(300):
        if set((await states(engine, show.id)).values()) == {"booked"}:
            break
        await asyncio.sleep(0.01)
    assert set((await states(engine, show.id)).values()) == {"booked"}
    await bookings.aclose()


async def test_a_retry_does_not_sell_a_seat_cancelled_meanwhile(
    bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 2)
    a, b = show.seat_ids
    await engine.seat_map(show.id)
    ticket = await make.ticket(db, user, show.id, a)
    await make.ticket(db, user, show.id, b)
    await db.execute("UPDATE tickets SET status = 'cancelled' WHERE id = $1", ticket)
    assert await bookings._still_sold(show.id, {a: user, b: user}) == {b: user}


async def test_a_quick_book_replayed_after_its_ticket_was_cancelled_holds_nothing(
    bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, user: int, other: int
) -> None:
    """The replay answers the cancelled tickets; it used to leave a hold of the seat that the
    user could not see (my-reservations) and that counted toward their cap for a hold's time."""
    show = await make.show(db, 2)
    seat = show.seat_ids[0]
    [first] = await bookings.book(user, show.id, [seat], "pay-q1")
    await bookings.cancel_ticket(first)
    [again] = await bookings.book(user, show.id, [seat], "pay-q1")
    assert (again.id, again.status) == (first.id, "cancelled")
    assert (await states(engine, show.id))[seat] == "available"
    await engine.hold(show.id, other, [seat])  # on sale to anyone
    assert await bookings_count(db) == 1


async def test_a_replay_whose_tickets_are_cancelled_meanwhile_leaves_the_seat_free(
    bookings: BookingService,
    engine: SeatEngine,
    db: asyncpg.Connection,
    user: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race: a replay reads the tickets (active), their cancellation commits and frees
    the seat, then the replay's marking lands. The seat showed booked with no ticket until the
    reconciler came by (the first pass after its settle time: tens of seconds)."""
    show = await make.show(db, 2)
    await engine.hold(show.id, user, show.seat_ids)
    first = await bookings.book_from_reservation(user, show.id, show.seat_ids, "pay-r1")
    sell = engine.sell

    async def cancelled_first(screening_id: int, sold: dict[int, int]) -> None:
        monkeypatch.setattr(engine, "sell", sell)
        for ticket in first:
            await bookings.cancel_ticket(ticket)
        await sell(screening_id, sold)

    monkeypatch.setattr(engine, "sell", cancelled_first)
    again = await bookings.book_from_reservation(user, show.id, show.seat_ids, "pay-r1")
    assert [t.id for t in again] == [t.id for t in first]
    for _ in range(100):
        if set((await states(engine, show.id)).values()) == {"available"}:
            break
        await asyncio.sleep(0.01)
    assert set((await states(engine, show.id)).values()) == {"available"}


async def test_a_cancellation_while_redis_refuses_writes_stands_and_frees_the_seat_later(
    bookings: BookingService, engine: SeatEngine, db: asyncpg.Connection, redis: Redis, user: int
) -> None:
    """Cancelled in PostgreSQL: the answer is the cancelled ticket, not a 503 whose retry then
    hears "already cancelled"; the seat is freed in Redis once it takes writes again."""
    show = await make.show(db, 2)
    [ticket] = await bookings.book(user, show.id, show.seat_ids[:1], "pay-c1")
    await redis.config_set("min-replicas-to-write", 1)  # every write refused (NOREPLICAS)
    try:
        started = time.monotonic()
        cancelled = await bookings.cancel_ticket(ticket)
        assert time.monotonic() - started < SELL_WAIT_S + 0.5
        assert cancelled.status == "cancelled"
        assert (await states(engine, show.id))[ticket.seat_id] == "booked"  # safe meanwhile
        await asyncio.sleep(0.3)
        assert bookings.sell_retries >= 2 and bookings.unmarked == 1
    finally:
        await redis.config_set("min-replicas-to-write", 0)
    for _ in range(300):
        if (await states(engine, show.id))[ticket.seat_id] == "available":
            break
        await asyncio.sleep(0.01)
    assert (await states(engine, show.id))[ticket.seat_id] == "available"
    assert bookings.unmarked == 0
