"""Hold history in PostgreSQL: reservation ids handed out in blocks, rows written in the background.

Redis is the truth about live holds; this table only remembers them for my-reservations. So a hold
never waits for PostgreSQL: the route puts a history change on a bounded in-process queue and a
writer task applies the changes in order, batched (consecutive inserts become one statement). When
PostgreSQL is down the writer retries with backoff; when the queue is full, changes are dropped and
logged (the hold itself stands). A reader in the same process flushes the queue first, so a user
sees their own holds right away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from db.pool import Conn, Executor

logger = logging.getLogger(__name__)

ID_BLOCK = 1000  # reservations_id_seq increments by this much
QUEUE_SIZE = 10_000
BATCH_SIZE = 500
# History is best effort: never wait long for a lock (nor win a deadlock against DDL/TRUNCATE).
LOCK_TIMEOUT = "SET LOCAL lock_timeout = '300ms'"
BACKEND_ERRORS = (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)


class ReservationIds:
    """Reservation ids: one nextval per block of ID_BLOCK ids, then handed out in process."""

    def __init__(self, db: Executor) -> None:
        self._db = db
        self._next = 0
        self._end = 0
        self._lock = asyncio.Lock()

    async def take(self, count: int) -> list[int]:
        ids: list[int] = []
        async with self._lock:
            while len(ids) < count:
                if self._next >= self._end:
                    start = int(await self._db.fetchval("SELECT nextval('reservations_id_seq')"))
                    self._next, self._end = start, start + ID_BLOCK
                take = min(count - len(ids), self._end - self._next)
                ids.extend(range(self._next, self._next + take))
                self._next += take
        return ids


@dataclass(frozen=True, slots=True)
class Inserted:
    """New holds: (id, screening_id, seat_id, user_id, reserved_at, expires_at) rows."""

    rows: list[tuple[int, int, int, int, datetime, datetime]]


@dataclass(frozen=True, slots=True)
class Extended:
    screening_id: int
    user_id: int
    expires: dict[int, datetime]  # seat id -> new expiry


@dataclass(frozen=True, slots=True)
class Closed:
    """Holds ended by the user (cancelled) or by a sale (booked); seat_ids None: all of them."""

    screening_id: int
    user_id: int
    seat_ids: list[int] | None
    status: str


Change = Inserted | Extended | Closed


class HistoryWriter:
    """The bounded queue of history changes and the task that writes them."""

    def __init__(self, db: asyncpg.Pool, queue_size: int = QUEUE_SIZE) -> None:
        self._db = db
        self._queue: asyncio.Queue[Change] = asyncio.Queue(queue_size)
        self.dropped = 0

    def submit(self, change: Change) -> None:
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            self.dropped += 1
            logger.warning("reservation history queue full; dropped %r", type(change).__name__)

    async def flush(self, timeout_s: float = 2.0) -> None:
        """Wait until every change submitted so far is written (or the timeout passes)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Write changes until ``stop`` is set and the queue is empty."""
        while not (stop.is_set() and self._queue.empty()):
            try:
                first = await asyncio.wait_for(self._queue.get(), 0.5)
            except TimeoutError:
                continue
            batch = [first]
            while len(batch) < BATCH_SIZE and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write_with_retry(batch, stop)
            for _ in batch:
                self._queue.task_done()

    async def _write_with_retry(self, batch: list[Change], stop: asyncio.Event) -> None:
        delay = 0.1
        for _ in range(8):
            try:
                await self._write(batch)
                return
            except BACKEND_ERRORS as exc:
                logger.warning("reservation history write failed, retrying: %r", exc)
                if stop.is_set():
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        logger.error("reservation history: gave up on %d changes", len(batch))

    async def _write(self, batch: list[Change]) -> None:
        async with self._db.acquire() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(LOCK_TIMEOUT)
                    await apply_changes(conn, batch)
            except asyncpg.PostgresError:
                # One bad change (its user or screening was deleted) must not block the rest.
                for change in batch:
                    await _apply_alone(conn, change)


async def _apply_alone(conn: Conn, change: Change) -> None:
    try:
        async with conn.transaction():
            await conn.execute(LOCK_TIMEOUT)
            await apply_changes(conn, [change])
    except asyncpg.PostgresError as exc:
        logger.warning("reservation history change dropped: %r", exc)


async def apply_changes(conn: Conn, batch: list[Change]) -> None:
    pending: list[tuple[int, int, int, int, datetime, datetime]] = []
    for change in batch:
        if isinstance(change, Inserted):
            pending.extend(change.rows)
            continue
        await _insert(conn, pending)
        pending = []
        if isinstance(change, Extended):
            await _extend(conn, change)
        else:
            await _close(conn, change)
    await _insert(conn, pending)


async def _insert(conn: Conn, rows: list[tuple[int, int, int, int, datetime, datetime]]) -> None:
    if not rows:
        return
    columns = list(zip(*rows, strict=True))
    # A new hold on a seat supersedes any older row still marked active for it.
    await conn.execute(
        "UPDATE reservations r SET status = 'expired', updated_at = now()"
        " FROM unnest($1::bigint[], $2::bigint[]) AS n(screening_id, seat_id)"
        " WHERE r.status = 'active' AND r.screening_id = n.screening_id"
        " AND r.seat_id = n.seat_id",
        columns[1],
        columns[2],
    )
    await conn.execute(
        "INSERT INTO reservations (id, screening_id, seat_id, user_id, reserved_at, expires_at)"
        " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[],"
        " $5::timestamptz[], $6::timestamptz[]) ON CONFLICT (id) DO NOTHING",
        *columns,
    )


async def _extend(conn: Conn, change: Extended) -> None:
    await conn.execute(
        "UPDATE reservations r SET expires_at = n.expires_at, updated_at = now()"
        " FROM unnest($3::bigint[], $4::timestamptz[]) AS n(seat_id, expires_at)"
        " WHERE r.status = 'active' AND r.screening_id = $1 AND r.user_id = $2"
        " AND r.seat_id = n.seat_id",
        change.screening_id,
        change.user_id,
        list(change.expires),
        list(change.expires.values()),
    )


async def _close(conn: Conn, change: Closed) -> None:
    await conn.execute(
        "UPDATE reservations SET status = $4, updated_at = now()"
        " WHERE status = 'active' AND screening_id = $1 AND user_id = $2"
        " AND ($3::bigint[] IS NULL OR seat_id = ANY($3))",
        change.screening_id,
        change.user_id,
        change.seat_ids,
        change.status,
    )


RESERVATION_COLUMNS = (
    "id, screening_id, seat_id, user_id, reserved_at, expires_at,"
    " CASE WHEN status = 'active' AND expires_at <= now() THEN 'expired' ELSE status END"
    " AS status"
)


async def for_user(db: Executor, user_id: int, include_expired: bool) -> list[Any]:
    """The user's holds, newest first; without include_expired only the live ones."""
    live = "" if include_expired else " AND status = 'active' AND expires_at > now()"
    return list(
        await db.fetch(
            f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE user_id = $1{live}"
            " ORDER BY reserved_at DESC, id LIMIT 1000",
            user_id,
        )
    )


async def active_ids(
    db: Executor, screening_id: int, user_id: int, seat_ids: list[int]
) -> dict[int, int]:
    """seat id -> id of the user's active reservation row for it."""
    rows = await db.fetch(
        "SELECT seat_id, id FROM reservations WHERE status = 'active' AND screening_id = $1"
        " AND user_id = $2 AND seat_id = ANY($3::bigint[])",
        screening_id,
        user_id,
        seat_ids,
    )
    return {r["seat_id"]: r["id"] for r in rows}
