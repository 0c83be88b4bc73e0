"""The hold history has no foreign keys, yet keeps their guarantees: deleting a screening, seat or
user (directly or by a cascade) deletes its history rows, a change that arrives after its parent
is gone writes nothing, and a parent's delete takes turns with the history writers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from db.reservations import WRITER_LOCK_KEY, Change, HistoryWriter, Inserted, apply_changes
from tests import factories as make

NOW = datetime.now(UTC)
LATER = NOW + timedelta(minutes=5)


async def new_user(db: asyncpg.Connection, email: str) -> int:
    return int(
        await db.fetchval(
            "INSERT INTO users (email, password_hash, full_name) VALUES ($1, 'x', 'U')"
            " RETURNING id",
            email,
        )
    )


def held(*rows: tuple[int, int, int, int]) -> list[Change]:
    """(id, screening, seat, user) -> one new hold each."""
    return [Inserted([(i, screening, seat, user, NOW, LATER)]) for i, screening, seat, user in rows]


async def write(db: asyncpg.Connection, batch: list[Change]) -> None:
    """One batch in the writer's own transaction shape."""
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock($1)", WRITER_LOCK_KEY)
        await apply_changes(db, batch)


async def history(db: asyncpg.Connection) -> set[int]:
    return {r["id"] for r in await db.fetch("SELECT id FROM reservations")}


@pytest.fixture
async def other(backend_urls: tuple[str, str]) -> AsyncIterator[asyncpg.Connection]:
    """A second session, for the one that deletes while a writer's batch is open."""
    conn = await asyncpg.connect(backend_urls[1])
    yield conn
    await conn.close()


@pytest.fixture
async def writer(backend_urls: tuple[str, str]) -> AsyncIterator[HistoryWriter]:
    pool = await asyncpg.create_pool(backend_urls[1], min_size=1, max_size=2)
    writer = HistoryWriter(pool)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        yield writer
    finally:
        stop.set()
        await task
        await pool.close()


async def test_the_history_has_no_foreign_keys(db: asyncpg.Connection) -> None:
    # Each one would lock its parent row for every history row written.
    keys = await db.fetch(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'reservations'::regclass"
        " AND contype = 'f'"
    )
    assert keys == []


async def test_deleting_a_screening_deletes_its_history_rows(db: asyncpg.Connection) -> None:
    show = await make.show(db, 2)
    a, b = show.seat_ids
    later_show = await make.screening(
        db, await make.movie(db), show.room_id, NOW + timedelta(days=3)
    )
    user = await new_user(db, "s@x.io")
    await write(db, held((1, show.id, a, user), (2, show.id, b, user), (3, later_show, a, user)))
    await db.execute("DELETE FROM screenings WHERE id = $1", show.id)
    assert await history(db) == {3}


async def test_deleting_a_seat_deletes_its_history_rows(db: asyncpg.Connection) -> None:
    show = await make.show(db, 2)
    a, b = show.seat_ids
    user = await new_user(db, "s@x.io")
    await write(db, held((1, show.id, a, user), (2, show.id, b, user)))
    await db.execute("DELETE FROM seats WHERE id = $1", a)
    assert await history(db) == {2}


@pytest.mark.parametrize("parent", ["rooms", "cinemas", "movies"])
async def test_a_cascaded_delete_deletes_the_history_rows_too(
    db: asyncpg.Connection, parent: str
) -> None:
    # Deleting a room cascades to its seats and screenings, a cinema to its rooms and so on: the
    # cascades are statements of their own, and fire the statement triggers too.
    gone, kept = await make.show(db, 2), await make.show(db, 1)
    user = await new_user(db, "c@x.io")
    await write(
        db,
        held(
            (1, gone.id, gone.seat_ids[0], user),
            (2, gone.id, gone.seat_ids[1], user),
            (3, kept.id, kept.seat_ids[0], user),
        ),
    )
    parent_id = await db.fetchval(
        "SELECT CASE $2 WHEN 'rooms' THEN r.id WHEN 'cinemas' THEN r.cinema_id ELSE s.movie_id END"
        " FROM screenings s JOIN rooms r ON r.id = s.room_id WHERE s.id = $1",
        gone.id,
        parent,
    )
    assert await db.execute(f"DELETE FROM {parent} WHERE id = $1", parent_id) == "DELETE 1"
    assert await history(db) == {3}


async def test_deleting_a_user_deletes_their_history_rows(db: asyncpg.Connection) -> None:
    show = await make.show(db, 2)
    a, b = show.seat_ids
    gone, kept = await new_user(db, "gone@x.io"), await new_user(db, "kept@x.io")
    await write(db, held((1, show.id, a, gone), (2, show.id, b, kept)))
    await db.execute("DELETE FROM users WHERE id = $1", gone)
    assert await history(db) == {2}


async def test_holds_whose_screening_seat_or_user_is_gone_are_written_as_nothing(
    db: asyncpg.Connection,
) -> None:
    show, gone = await make.show(db, 3), await make.show(db, 1)
    a, b, c = show.seat_ids
    user, gone_user = await new_user(db, "k@x.io"), await new_user(db, "g@x.io")
    await db.execute("DELETE FROM screenings WHERE id = $1", gone.id)
    await db.execute("DELETE FROM seats WHERE id = $1", b)
    await db.execute("DELETE FROM users WHERE id = $1", gone_user)
    batch = held(
        (1, gone.id, gone.seat_ids[0], user),
        (2, show.id, b, user),
        (3, show.id, c, gone_user),
        (4, show.id, a, user),
    )
    await write(db, batch)
    assert await history(db) == {4}


async def test_the_writer_skips_a_change_of_a_deleted_screening_and_goes_on(
    writer: HistoryWriter, db: asyncpg.Connection
) -> None:
    show, gone = await make.show(db, 2), await make.show(db, 1)
    user = await new_user(db, "w@x.io")
    await db.execute("DELETE FROM screenings WHERE id = $1", gone.id)
    # Submitted together, so they share a batch.
    for change in held((1, gone.id, gone.seat_ids[0], user), (2, show.id, show.seat_ids[0], user)):
        writer.submit(change)
    await writer.flush(timeout_s=5)
    assert await history(db) == {2}
    for change in held((3, show.id, show.seat_ids[1], user)):
        writer.submit(change)
    await writer.flush(timeout_s=5)
    assert await history(db) == {2, 3}
    assert (writer.rejected, writer.dropped) == (0, 0)  # nothing refused or lost


async def test_a_delete_waits_for_the_writers_open_batch(
    db: asyncpg.Connection, other: asyncpg.Connection
) -> None:
    show = await make.show(db, 2)
    user = await new_user(db, "o@x.io")
    rows = held((1, show.id, show.seat_ids[0], user), (2, show.id, show.seat_ids[1], user))
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock($1)", WRITER_LOCK_KEY)
        await apply_changes(db, rows)
        delete = asyncio.create_task(other.execute("DELETE FROM screenings WHERE id = $1", show.id))
        await asyncio.sleep(0.2)
        assert not delete.done()  # it would miss the rows the batch is about to commit
    assert await asyncio.wait_for(delete, 5) == "DELETE 1"
    assert await history(db) == set()


async def test_a_writers_batch_waits_for_an_open_delete(
    db: asyncpg.Connection, other: asyncpg.Connection
) -> None:
    show = await make.show(db, 2)
    user = await new_user(db, "d@x.io")
    await write(db, held((1, show.id, show.seat_ids[0], user)))
    async with other.transaction():
        await other.execute("DELETE FROM screenings WHERE id = $1", show.id)
        batch = asyncio.create_task(write(db, held((2, show.id, show.seat_ids[1], user))))
        await asyncio.sleep(0.2)
        assert not batch.done()  # it would still see the screening, and insert an orphan
    await asyncio.wait_for(batch, 5)
    assert await history(db) == set()


async def test_a_delete_of_nothing_does_not_wait_for_the_writers(
    db: asyncpg.Connection, other: asyncpg.Connection
) -> None:
    movie = await make.movie(db)  # no screenings: its cascade deletes none
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock($1)", WRITER_LOCK_KEY)
        assert (
            await asyncio.wait_for(other.execute("DELETE FROM movies WHERE id = $1", movie), 2)
            == "DELETE 1"
        )
