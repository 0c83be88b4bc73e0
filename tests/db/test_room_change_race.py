"""A PUT that moves a screening to another room, racing a booking of that screening.

They once both succeeded (1 in 40 tries): the PUT's check for sold tickets ran in a snapshot
without the booking, the booking read the old room in a snapshot without the move, and neither
waited for the other. Now they take turns on the screening's advisory lock (db/tickets.py): the
booking first and the move is refused (409), or the move first and the booking fails as for seats
that are not in the room, with no ticket written. Each race below is made deterministic by holding
one side in an open transaction (or a paused writer) while the other runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from db import catalog
from db import tickets as repo
from seatlock.errors import Conflict, NotFound
from tests import factories as make

WAIT_S = 5.0  # far longer than either side needs when it does not wait


@dataclass
class Move:
    """A screening of a room A that sold nothing yet, and a free room B to move it to."""

    screening_id: int
    movie_id: int
    room_a: int
    room_b: int
    seats_a: list[int]
    user_id: int


@pytest.fixture
async def pool(backend_urls: tuple[str, str]) -> AsyncIterator[asyncpg.Pool]:
    db = await asyncpg.create_pool(backend_urls[1], min_size=1, max_size=4)
    assert db is not None
    yield db
    await db.close()


@pytest.fixture
async def writer(pool: asyncpg.Pool) -> AsyncIterator[repo.BookingWriter]:
    writer = repo.BookingWriter(pool)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    await asyncio.sleep(0)  # the writer takes bookings once it runs
    yield writer
    stop.set()
    await task


@pytest.fixture
async def move(db: asyncpg.Connection) -> Move:
    show = await make.show(db, 3)
    row = await db.fetchrow(
        "SELECT s.movie_id, r.cinema_id FROM screenings s JOIN rooms r ON r.id = s.room_id"
        " WHERE s.id = $1",
        show.id,
    )
    assert row is not None
    movie_id, cinema_id = row["movie_id"], row["cinema_id"]
    room_b = await make.room(db, cinema_id, "Room 2", rows="B")
    return Move(show.id, movie_id, show.room_id, room_b, show.seat_ids, await make.buyer(db))


async def move_to(pool: asyncpg.Pool, move: Move, room_id: int, price: str = "10.00") -> Any:
    """The PUT of the screening, as api/screenings.py makes it, into ``room_id``."""
    row = await pool.fetchrow(
        "SELECT starts_at, ends_at FROM screenings WHERE id = $1", move.screening_id
    )
    assert row is not None
    return await catalog.replace_screening(
        pool,
        move.screening_id,
        move.movie_id,
        room_id,
        row["starts_at"],
        Decimal(price),
        row["ends_at"],
    )


async def waits_on_a_lock(db: asyncpg.Connection, task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` comes to wait for an advisory lock (rather than finishing)."""
    for _ in range(int(WAIT_S / 0.01)):
        if task.done():
            return False
        if await db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ):
            return True
        await asyncio.sleep(0.01)
    return False


async def outcome(task: asyncio.Task[Any]) -> Any:
    """What the task ended with: its result or its exception."""
    try:
        return await asyncio.wait_for(task, WAIT_S)
    except Exception as exc:
        return exc


async def room_and_tickets(db: asyncpg.Connection, move: Move) -> tuple[int, list[int]]:
    room = await db.fetchval("SELECT room_id FROM screenings WHERE id = $1", move.screening_id)
    seats = await db.fetch(
        "SELECT seat_id FROM tickets WHERE screening_id = $1 ORDER BY seat_id", move.screening_id
    )
    return room, [row["seat_id"] for row in seats]


# -- the booking first: the move waits for it, then is refused --------------------------------


async def test_a_move_waits_for_a_booking_transaction_and_is_refused(
    db: asyncpg.Connection, pool: asyncpg.Pool, backend_urls: tuple[str, str], move: Move
) -> None:
    """The race as the audit found it: a booking has read room A and written its tickets, not yet
    committed; the move must not succeed in a snapshot without them."""
    booker = await asyncpg.connect(backend_urls[1])
    try:
        async with booker.transaction():
            # As the writer books (db/tickets.py): the lock, then what reads the room and writes.
            await booker.execute(repo.SHARE_SCREENINGS_IN_TRANSACTION_SQL, [move.screening_id])
            rows = await booker.fetch(
                repo.BOOK_SQL,
                move.user_id,
                move.screening_id,
                move.seats_a[:1],
                "pay-1",
                "confirmed",
            )
            assert len(rows) == 1
            moving = asyncio.create_task(move_to(pool, move, move.room_b))
            assert await waits_on_a_lock(db, moving), await outcome(moving)
        result = await outcome(moving)
    finally:
        await booker.close()
    assert isinstance(result, Conflict), result
    assert await room_and_tickets(db, move) == (move.room_a, move.seats_a[:1])


async def test_a_move_waits_for_the_writers_batch_and_is_refused(
    db: asyncpg.Connection, pool: asyncpg.Pool, writer: repo.BookingWriter, move: Move
) -> None:
    """The real writer, paused between taking the lock and sending its batch statement."""
    paused, go_on = asyncio.Event(), asyncio.Event()

    async def pause(stage: str, conn: Any) -> None:
        if stage == "commit":
            paused.set()
            await go_on.wait()

    writer.commit_hook = pause
    booking = asyncio.create_task(writer.book(move.user_id, move.screening_id, move.seats_a, "p"))
    await asyncio.wait_for(paused.wait(), WAIT_S)
    moving = asyncio.create_task(move_to(pool, move, move.room_b))
    try:
        assert await waits_on_a_lock(db, moving), await outcome(moving)
    finally:
        go_on.set()
    assert [t["seat_id"] for t in await booking] == move.seats_a
    assert isinstance(await outcome(moving), Conflict)
    assert await room_and_tickets(db, move) == (move.room_a, move.seats_a)


async def test_a_move_that_waited_for_a_booking_that_failed_goes_ahead(
    db: asyncpg.Connection, pool: asyncpg.Pool, backend_urls: tuple[str, str], move: Move
) -> None:
    booker = await asyncpg.connect(backend_urls[1])
    try:
        transaction = booker.transaction()
        await transaction.start()
        await booker.execute(repo.SHARE_SCREENINGS_IN_TRANSACTION_SQL, [move.screening_id])
        moving = asyncio.create_task(move_to(pool, move, move.room_b))
        assert await waits_on_a_lock(db, moving), await outcome(moving)
        await transaction.rollback()
        assert (await outcome(moving))["room_id"] == move.room_b
    finally:
        await booker.close()


# -- the move first: the booking waits for it, then fails, writing nothing -------------------


async def book_with_writer(writer: repo.BookingWriter, pool: asyncpg.Pool, move: Move) -> Any:
    return await writer.book(move.user_id, move.screening_id, move.seats_a, "pay-2")


async def book_in_one_transaction(
    writer: repo.BookingWriter, pool: asyncpg.Pool, move: Move
) -> Any:
    return await repo.create_booking(pool, move.user_id, move.screening_id, move.seats_a, "pay-2")


@pytest.mark.parametrize("book", [book_with_writer, book_in_one_transaction])
async def test_a_booking_waits_for_a_move_and_fails(
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    backend_urls: tuple[str, str],
    writer: repo.BookingWriter,
    move: Move,
    book: Callable[[repo.BookingWriter, asyncpg.Pool, Move], Coroutine[Any, Any, Any]],
) -> None:
    """A move holds the lock and has updated the row, not yet committed: a booking of seats of
    room A must not commit them once the screening is in room B."""
    mover = await asyncpg.connect(backend_urls[1])
    try:
        async with mover.transaction():
            await mover.execute(repo.ROOM_CHANGE_LOCK_SQL, move.screening_id)
            await mover.execute(
                "UPDATE screenings SET room_id = $2 WHERE id = $1", move.screening_id, move.room_b
            )
            booking = asyncio.create_task(book(writer, pool, move))
            assert await waits_on_a_lock(db, booking), await outcome(booking)
        result = await outcome(booking)
    finally:
        await mover.close()
    assert isinstance(result, NotFound), result  # SeatsNotInScreening from the writer
    assert await room_and_tickets(db, move) == (move.room_b, [])
    assert await db.fetchval("SELECT count(*) FROM bookings") == 0


async def test_a_move_through_the_put_keeps_a_later_booking_out(
    db: asyncpg.Connection, pool: asyncpg.Pool, writer: repo.BookingWriter, move: Move
) -> None:
    """The PUT itself, paused after its UPDATE (a trigger makes it wait on a lock the test
    holds): the booking sent meanwhile waits, then fails."""
    await db.execute("CREATE TABLE IF NOT EXISTS room_change_gate (id int)")
    await db.execute(
        "CREATE OR REPLACE FUNCTION room_change_gate() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN LOCK TABLE room_change_gate; RETURN NEW; END $$;"
        " CREATE TRIGGER room_change_gate AFTER UPDATE OF room_id ON screenings"
        " FOR EACH ROW WHEN (OLD.room_id <> NEW.room_id) EXECUTE FUNCTION room_change_gate()"
    )
    try:
        async with db.transaction():
            await db.execute("LOCK TABLE room_change_gate")
            moving = asyncio.create_task(move_to(pool, move, move.room_b))
            for _ in range(int(WAIT_S / 0.01)):  # the PUT updated the row, waits at the gate
                waiting = await db.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE relation = 'room_change_gate'::regclass"
                    " AND NOT granted"
                )
                if waiting or moving.done():
                    break
                await asyncio.sleep(0.01)
            assert not moving.done(), await outcome(moving)
            booking = asyncio.create_task(book_with_writer(writer, pool, move))
            assert await waits_on_a_lock(db, booking), await outcome(booking)
        assert (await outcome(moving))["room_id"] == move.room_b
        assert isinstance(await outcome(booking), repo.SeatsNotInScreening)
    finally:
        await db.execute(
            "DROP TRIGGER room_change_gate ON screenings; DROP FUNCTION room_change_gate();"
            " DROP TABLE room_change_gate"
        )
    assert await room_and_tickets(db, move) == (move.room_b, [])


# -- what does not wait ---------------------------------------------------------------------


async def test_a_price_change_does_not_wait_for_bookings_in_flight(
    db: asyncpg.Connection, pool: asyncpg.Pool, backend_urls: tuple[str, str], move: Move
) -> None:
    booker = await asyncpg.connect(backend_urls[1])
    try:
        async with booker.transaction():
            await booker.execute(repo.SHARE_SCREENINGS_IN_TRANSACTION_SQL, [move.screening_id])
            row = await asyncio.wait_for(move_to(pool, move, move.room_a, "12.00"), WAIT_S)
            assert row["price"] == Decimal("12.00")
    finally:
        await booker.close()


async def test_bookings_do_not_wait_for_one_another(
    pool: asyncpg.Pool, backend_urls: tuple[str, str], writer: repo.BookingWriter, move: Move
) -> None:
    others = [await asyncpg.connect(backend_urls[1]) for _ in range(2)]
    try:
        for other in others:
            await other.execute("BEGIN")
            await other.execute(repo.SHARE_SCREENINGS_IN_TRANSACTION_SQL, [move.screening_id])
        rows = await asyncio.wait_for(book_with_writer(writer, pool, move), WAIT_S)
        assert len(rows) == len(move.seats_a)
    finally:
        for other in others:
            await other.close()
