"""History writers of several processes share hot rows; they must never deadlock each other."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from db.reservations import Closed, HistoryWriter, Inserted, apply_changes
from tests.api.test_reservations import make_screening


async def test_writers_of_two_processes_on_the_same_seats_do_not_deadlock(
    backend_urls: tuple[str, str], db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="db.reservations")
    show = await make_screening(db, 120)
    user = await db.fetchval(
        "INSERT INTO users (email, password_hash, full_name) VALUES ('w@x.io', 'x', 'W')"
        " RETURNING id"
    )
    pools = [await asyncpg.create_pool(backend_urls[1], min_size=1, max_size=2) for _ in "ab"]
    now = datetime.now(UTC)
    expires = now + timedelta(minutes=5)
    next_id = iter(range(10_000_000, 20_000_000))

    def batch(seats: list[int]) -> list[Inserted]:
        return [Inserted([(next(next_id), show.id, s, user, now, expires)]) for s in seats]

    async def write(pool: asyncpg.Pool, seats: list[int]) -> None:
        # The writer's own transaction shape, on the seats in this process's order.
        for _ in range(40):
            await HistoryWriter(pool)._apply_with_retry(batch(seats), asyncio.Event())

    try:
        forward, backward = show.seat_ids, show.seat_ids[::-1]
        async with asyncio.timeout(30):
            await asyncio.gather(write(pools[0], forward), write(pools[1], backward))
    finally:
        for pool in pools:
            await pool.close()
    active = await db.fetchval(
        "SELECT count(*) FROM reservations WHERE status = 'active' AND screening_id = $1", show.id
    )
    assert active == len(show.seat_ids)  # each seat: exactly one active row, the newest
    assert [r.message for r in caplog.records if "deadlock" in r.message] == []


async def test_a_batch_keeps_the_order_of_changes_to_one_seat(db: asyncpg.Connection) -> None:
    show = await make_screening(db, 3)
    a, b, c = show.seat_ids
    users = [
        await db.fetchval(
            "INSERT INTO users (email, password_hash, full_name) VALUES ($1, 'x', 'U')"
            " RETURNING id",
            f"u{n}@x.io",
        )
        for n in range(2)
    ]
    now = datetime.now(UTC)
    later = now + timedelta(minutes=5)
    batch = [
        Inserted([(1, show.id, a, users[0], now, later), (2, show.id, b, users[0], now, later)]),
        Closed(show.id, users[0], [a], "cancelled"),  # must follow the insert of row 1
        Inserted([(3, show.id, a, users[1], now, later)]),  # a new hold on the freed seat
        Inserted([(4, show.id, c, users[1], now, later)]),
        Closed(show.id, users[0], [b], "booked"),
    ]
    async with db.transaction():
        await apply_changes(db, batch)
    rows = {r["id"]: r["status"] for r in await db.fetch("SELECT id, status FROM reservations")}
    assert rows == {1: "cancelled", 2: "booked", 3: "active", 4: "active"}
