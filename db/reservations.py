"""Hold history in PostgreSQL: reservation ids handed out in blocks, rows written in the background.

Redis is the truth about live holds; this table only remembers them for my-reservations. So a hold
never waits for PostgreSQL: the hold service (seatlock/services/holds.py) puts a history change
on a bounded in-process queue and a writer task applies the changes in order, batched (a batch
nets out in memory and is written in a constant number of statements, however its changes
interleave). Under load the writer starts a
batch at most every BATCH_INTERVAL_S, so a busy server writes ten large batches a second
instead of hundreds of small ones; an idle writer writes a change at once. When PostgreSQL is down
or a lock is contended the writer retries with backoff; only when the queue is full are changes
dropped, counted and logged (the hold itself stands). A reader in the same process flushes the
queue first, so a user sees their own holds right away there; another process's reader sees them
once the batch is written (under load up to BATCH_INTERVAL_S later). Re-holding a held seat reuses
its active row (``LiveRows``, else ``active_rows``), so the history has no duplicates (except when
another process re-holds it before the row is written: it then writes a new row that supersedes
the first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from db.pool import DATABASE_DOWN, Conn, Executor, KeptConnection
from seatlock.heartbeats import Beat, no_beat
from seatlock.metrics import HISTORY_DROPPED, HISTORY_REJECTED

logger = logging.getLogger(__name__)

ID_BLOCK = 1000  # reservations_id_seq increments by this much
QUEUE_SIZE = 10_000
BATCH_SIZE = 500
# The least time between the starts of two batches. A change that finds the writer idle for longer
# is written at once; under load the changes of an interval share one transaction, and a hold
# cancelled within it is inserted as cancelled (one row written, no UPDATE). The wait ends early
# when BATCH_SIZE changes wait, a reader flushes or the writer stops: it delays no change longer.
# 100 ms rather than less: on the bench's hot screening it took PostgreSQL CPU per hold attempt
# from 5.1 to 3.5 us and the server's from 56 to 53 us against 40 ms (nearly every hold cancelled
# within seconds is written once), while another process's reader sees a hold at most ~0.1 s late.
BATCH_INTERVAL_S = 0.1
DROP_LOG_INTERVAL_S = 10.0
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 5.0
RETRIES_AT_SHUTDOWN = 3
# Writers of several processes touch the same hot rows (a new hold supersedes older active rows of
# its seat) in whatever order their batches hold them: two such transactions deadlock. History is
# background work written in large batches, so writers simply take turns on this lock.
WRITER_LOCK_KEY = 0x5EA7_4157
LIVE_ROWS = 100_000
# Worth retrying: PostgreSQL unreachable or restarting (DATABASE_DOWN: also a connection whose
# backend ended between statements, taken before asyncpg saw it close), a lock wait cancelled, a
# deadlock victim.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    *DATABASE_DOWN,
    asyncpg.TransactionRollbackError,
    asyncpg.LockNotAvailableError,
)


class ReservationIds:
    """Reservation ids: one nextval per block of ID_BLOCK ids, then handed out in process.

    The next block is fetched in the background once half of the current one is gone, so under
    load no taker waits for PostgreSQL (at ~3.5 ids per hold, a block lasts a few hundred holds,
    and every caller arriving while a block was fetched used to wait for that round trip).
    """

    def __init__(self, db: Executor) -> None:
        self._db = db
        self._next = 0
        self._end = 0
        self._lock = asyncio.Lock()
        self._spare: asyncio.Task[int | None] | None = None  # the next block's start, fetched early

    async def take(self, count: int) -> list[int]:
        start = self._next
        if self._end - start >= count:  # no await before the ids are taken: no taker interleaves
            self._next = start + count
            self._prefetch()
            return list(range(start, start + count))
        ids: list[int] = []
        async with self._lock:
            while len(ids) < count:
                if self._next >= self._end:
                    start = await self._next_block()
                    self._next, self._end = start, start + ID_BLOCK
                take = min(count - len(ids), self._end - self._next)
                ids.extend(range(self._next, self._next + take))
                self._next += take
        self._prefetch()
        return ids

    def _prefetch(self) -> None:
        if self._spare is None and self._end - self._next < ID_BLOCK // 2:
            self._spare = asyncio.get_running_loop().create_task(self._fetch_spare())

    async def _next_block(self) -> int:
        spare, self._spare = self._spare, None
        start = await spare if spare is not None else None
        if start is None:  # no block fetched ahead, or fetching it failed: ask now
            start = await self._fetch()
        return start

    async def _fetch(self) -> int:
        return int(await self._db.fetchval("SELECT nextval('reservations_id_seq')"))

    async def _fetch_spare(self) -> int | None:
        try:
            return await self._fetch()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            return None  # the taker that needs it asks again, and sees the error if it lasts


Row = tuple[int, int, int, int, datetime, datetime]  # id, screening, seat, user, reserved, expires


# The changes are frozen msgspec Structs, not frozen dataclasses: one is made on every won hold
# and every cancel, and a Struct costs ~0.1 µs where a frozen dataclass's __init__ cost ~1.5 µs.
class Inserted(msgspec.Struct, frozen=True):
    """New holds: (id, screening_id, seat_id, user_id, reserved_at, expires_at) rows."""

    rows: list[Row]


class Extended(msgspec.Struct, frozen=True):
    screening_id: int
    user_id: int
    expires: dict[int, datetime]  # seat id -> new expiry


class Closed(msgspec.Struct, frozen=True):
    """Holds ended by the user (cancelled) or by a sale (booked); seat_ids None: all of them."""

    screening_id: int
    user_id: int
    seat_ids: list[int] | None
    status: str


Change = Inserted | Extended | Closed


@dataclass(frozen=True, slots=True)
class LiveRow:
    id: int
    user_id: int
    reserved_at: datetime
    expires_at: datetime


class LiveRows:
    """The active rows this process wrote, by (screening, seat): re-holds reuse their ids.

    Only a hint: a row matches a hold when its user and expiry equal the engine's, so a hold that
    another process changed (cancelled, re-held, extended) misses and is looked up instead. For
    the same reason a cancel of all seats need not find its rows here. Rows are kept as the
    ``Inserted`` tuples they came in (every won hold passes here; a ``LiveRow`` is made on a hit).
    """

    def __init__(self, size: int = LIVE_ROWS) -> None:
        self._size = size
        self._rows: dict[tuple[int, int], Row] = {}  # oldest first

    def find(
        self, screening_id: int, seat_id: int, user_id: int, expires_at: datetime
    ) -> LiveRow | None:
        row = self._rows.get((screening_id, seat_id))
        if row is None or row[3] != user_id or row[5] != expires_at:
            return None
        return LiveRow(row[0], row[3], row[4], row[5])

    def apply(self, change: Change) -> None:
        rows = self._rows
        if isinstance(change, Inserted):
            for row in change.rows:
                key = (row[1], row[2])
                rows.pop(key, None)  # re-inserted: now the newest
                rows[key] = row
            while len(rows) > self._size:
                del rows[next(iter(rows))]
        elif isinstance(change, Extended):
            for seat_id, expires_at in change.expires.items():
                key = (change.screening_id, seat_id)
                held = rows.get(key)
                if held is not None and held[3] == change.user_id:
                    del rows[key]  # extended: now the newest
                    rows[key] = (*held[:5], expires_at)
        elif change.seat_ids is not None:
            for seat_id in change.seat_ids:
                key = (change.screening_id, seat_id)
                held = rows.get(key)
                if held is not None and held[3] == change.user_id:
                    del rows[key]


class HistoryWriter:
    """The bounded queue of history changes, the task that writes them, and the live rows.

    A transient PostgreSQL error (down, lock wait, deadlock victim) is retried with backoff, never
    dropped: changes are dropped only when the queue is full (counted in ``dropped``, logged at
    most once per DROP_LOG_INTERVAL_S) or when PostgreSQL refuses one for good (counted in
    ``rejected``). A hold whose screening, seat or user was deleted is not refused: its row is
    just not written. The writer sets no lock timeout: a test that truncates the tables makes its
    own session the deadlock victim's survivor (tests/conftest.py).
    """

    def __init__(
        self,
        db: asyncpg.Pool,
        queue_size: int = QUEUE_SIZE,
        interval_s: float = BATCH_INTERVAL_S,
    ) -> None:
        self._db = db
        # A deque and counters rather than an asyncio.Queue: every won hold and every cancel
        # passes here, and the Queue's put, get and task_done cost ~2 µs a change between them.
        self._queue: deque[Change] = deque()
        self._queue_size = queue_size
        self._submitted = 0  # changes queued so far
        self._done = 0  # of those, changes written (or given up): always a prefix of them
        self._ready = asyncio.Event()  # set while changes wait: wakes an idle writer
        self._batch_done: asyncio.Future[None] | None = None  # awaited by flush(), if any
        self._interval_s = interval_s
        self._last_batch = float("-inf")  # time.monotonic() when the last batch began
        self._wake = asyncio.Event()  # ends the wait for the interval: flush, full batch, stop
        self._flushing = 0  # readers waiting in flush(): no batch waits while there are any
        self.dropped = 0
        self.rejected = 0
        self._logged_drops = 0
        self._next_drop_log = 0.0
        self.live = LiveRows()
        # Kept from one batch to the next while changes keep coming: returning a connection to
        # the pool costs a round trip (its reset) and PostgreSQL's work, once per batch.
        self._conn = KeptConnection(db, TRANSIENT_ERRORS)
        self._beat: Beat = no_beat

    @property
    def backlog(self) -> int:
        """Changes queued, not yet written."""
        return len(self._queue)

    def submit(self, change: Change) -> None:
        self.live.apply(change)
        queue = self._queue
        if len(queue) >= self._queue_size:
            self.dropped += 1
            HISTORY_DROPPED.inc()
            self._log_drops()
            return
        queue.append(change)
        self._submitted += 1
        ready = self._ready
        if not ready.is_set():
            ready.set()
        if len(queue) >= BATCH_SIZE:  # a full batch
            self._wake.set()

    def _log_drops(self) -> None:
        now = time.monotonic()
        if self.dropped == self._logged_drops or now < self._next_drop_log:
            return
        logger.warning(
            "reservation history queue full: dropped %d changes (%d in all)",
            self.dropped - self._logged_drops,
            self.dropped,
        )
        self._logged_drops, self._next_drop_log = self.dropped, now + DROP_LOG_INTERVAL_S

    async def flush(self, timeout_s: float = 2.0) -> None:
        """Wait until every change submitted so far is written (or the timeout passes).

        The writer does not wait out BATCH_INTERVAL_S while a flush is waiting.
        """
        target = self._submitted
        self._flushing += 1
        self._wake.set()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    while self._done < target:
                        await asyncio.shield(self._next_batch())
        finally:
            self._flushing -= 1

    def _next_batch(self) -> asyncio.Future[None]:
        """Done when the writer finishes its next batch (or the one under way)."""
        if self._batch_done is None:
            self._batch_done = asyncio.get_running_loop().create_future()
        return self._batch_done

    def _batch_written(self, count: int) -> None:
        self._done += count
        done, self._batch_done = self._batch_done, None
        if done is not None and not done.done():
            done.set_result(None)

    async def run(self, stop: asyncio.Event, beat: Beat = no_beat) -> None:
        """Write changes until ``stop`` is set and the queue is empty."""
        self._beat = beat
        waker = asyncio.create_task(self._wake_on(stop))
        try:
            await self._write_until(stop)
        finally:
            waker.cancel()
            await self._conn.let_go()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()
        self._ready.set()

    async def _write_until(self, stop: asyncio.Event) -> None:
        queue = self._queue
        while not (stop.is_set() and not queue):
            self._beat()
            self._log_drops()
            if not queue:
                self._ready.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self._ready.wait()
                continue
            await self._pace(stop)
            self._last_batch = time.monotonic()
            batch = [queue.popleft() for _ in range(min(len(queue), BATCH_SIZE))]
            await self._write(batch, stop)
            self._batch_written(len(batch))
            if not queue:
                await self._conn.let_go()

    async def _pace(self, stop: asyncio.Event) -> None:
        """Let changes gather until BATCH_INTERVAL_S after the last batch began, unless a flush
        waits, BATCH_SIZE changes wait or the writer is stopping."""
        delay = self._last_batch + self._interval_s - time.monotonic()
        full = len(self._queue) >= BATCH_SIZE
        if delay <= 0 or self._flushing or stop.is_set() or full:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _write(self, batch: list[Change], stop: asyncio.Event) -> None:
        if await self._apply_with_retry(batch, stop):
            return
        # A change PostgreSQL refuses for good (a bug, e.g. a status the table does not allow)
        # must not block the rest.
        for change in batch:
            if not await self._apply_with_retry([change], stop):
                self.rejected += 1
                HISTORY_REJECTED.inc()
                logger.warning("reservation history change refused: %r", change)

    async def _apply_with_retry(self, batch: list[Change], stop: asyncio.Event) -> bool:
        """Apply ``batch`` in one transaction; False if PostgreSQL refuses it for good."""
        delay, attempts_after_stop = RETRY_FIRST_S, 0
        while True:
            try:
                conn = await self._conn.get()
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITER_LOCK_KEY)
                    await apply_changes(conn, batch)
                return True
            except TRANSIENT_ERRORS as exc:
                await self._conn.let_go()  # the pool replaces a connection that broke
                if stop.is_set():
                    attempts_after_stop += 1
                    if attempts_after_stop >= RETRIES_AT_SHUTDOWN:
                        self.dropped += len(batch)
                        HISTORY_DROPPED.inc(len(batch))
                        logger.error("reservation history: shutting down, lost %d", len(batch))
                        return True
                logger.warning("reservation history write failed, retrying: %r", exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
                self._beat()  # retrying while PostgreSQL is away is not a stalled loop
                delay = min(delay * 2, RETRY_MAX_S)
            except asyncpg.PostgresError:
                return False


@dataclass(slots=True)
class _Fresh:
    """A row inserted by this batch, with its status and expiry as the batch leaves them."""

    row: Row
    expires_at: datetime
    status: str = "active"


class _Batch:
    """A batch's net effect, gathered in memory so it is written in a constant number of statements.

    A seat's rows inserted by the batch are settled here: a new hold supersedes the seat's other
    rows, so a later close or extension of the seat can only mean its newest row of the batch, and
    is applied to that row before it is written. Changes to seats the batch has not inserted into
    concern rows already in PostgreSQL; those happen before any insert of the batch into their seat
    and are written first: extensions, then closes, then the superseding of older rows and the
    INSERT, which keeps the order of changes per seat.
    """

    def __init__(self) -> None:
        self.fresh: dict[int, _Fresh] = {}  # reservation id -> row
        self.newest: dict[tuple[int, int], int] = {}  # (screening, seat) -> id of its newest row
        self.extends: dict[tuple[int, int, int], datetime] = {}  # (screening, user, seat)
        self.closes: dict[tuple[int, int, int], str] = {}  # (screening, user, seat) -> status

    def insert(self, change: Inserted) -> None:
        for row in change.rows:
            if row[0] in self.fresh:  # the same change replayed: its row is written once
                continue
            previous = self.newest.get((row[1], row[2]))
            if previous is not None and self.fresh[previous].status == "active":
                self.fresh[previous].status = "expired"
            self.fresh[row[0]] = _Fresh(row, row[5])
            self.newest[(row[1], row[2])] = row[0]

    def extend(self, change: Extended) -> None:
        for seat_id, expires_at in change.expires.items():
            row = self._own_fresh(change.screening_id, change.user_id, seat_id)
            key = (change.screening_id, change.user_id, seat_id)
            if row is not None:
                row.expires_at = expires_at
            elif (change.screening_id, seat_id) not in self.newest and key not in self.closes:
                self.extends[key] = expires_at

    def close(self, change: Closed, seat_ids: list[int]) -> None:
        for seat_id in seat_ids:
            row = self._own_fresh(change.screening_id, change.user_id, seat_id)
            key = (change.screening_id, change.user_id, seat_id)
            if row is not None:
                row.status = change.status
            elif (change.screening_id, seat_id) not in self.newest:
                self.closes.setdefault(key, change.status)

    def _own_fresh(self, screening_id: int, user_id: int, seat_id: int) -> _Fresh | None:
        rid = self.newest.get((screening_id, seat_id))
        if rid is None:
            return None
        row = self.fresh[rid]
        return row if row.status == "active" and row.row[3] == user_id else None

    async def write(self, conn: Conn) -> None:
        await _extend_seats(conn, self.extends)
        await _close_and_insert(conn, self.closes, list(self.fresh.values()))


async def apply_changes(conn: Conn, batch: list[Change]) -> None:
    """Write a batch in a constant number of statements, whatever the order of its changes.

    Only a close of "all my seats" writes the changes gathered so far first (it is rare: the
    guide's cancel of a whole screening).
    """
    gathered = _Batch()
    for change in batch:
        if isinstance(change, Inserted):
            gathered.insert(change)
        elif isinstance(change, Extended):
            gathered.extend(change)
        elif change.seat_ids is not None:
            gathered.close(change, change.seat_ids)
        else:
            await gathered.write(conn)
            await _close(conn, change)
            gathered = _Batch()
    await gathered.write(conn)


# One statement, one round trip: the closes of rows already written, the superseding of older
# active rows of the seats the batch inserts into, and the INSERT. (The writers' lock stays a
# statement of its own before it: a statement sees the rows committed when it began, so one that
# waited for the lock inside itself would miss the rows of the writer it waited for.) The parts of
# the statement all see the rows as they were before it, so what the closes have just changed is
# left out of the superseding (in two statements the close made those rows inactive first): a row
# belongs to one part only. The rows to change are looked up seat by seat in the partial index of
# active rows (LATERAL ... OFFSET 0 keeps the lookups per seat): planned as a join, the statement
# would scan that whole index, whose entries of closed rows pile up until a vacuum. Only writers
# change these rows, one at a time (the lock), so the UPDATEs need not test the status again.
# No foreign keys (their checks lock each parent row and cost more than the insert): the INSERT
# skips a hold whose screening, seat or user was deleted while it waited in the queue (a probe per
# row, no lock; OFFSET 0 again: as joins they would hash whole tables), and a parent deleted later
# takes the writers' lock and deletes its rows (the triggers of migration 0006).
# Times travel as epoch seconds: asyncpg encodes a float several times faster than a datetime,
# and to_timestamp() gives back the same microsecond. Ids and statuses travel as comma-separated
# text (``_joined``), split by string_to_array: asyncpg spent ~200 ns on each element of a
# bigint[] (a type check through collections.abc, then the codec) and ~330 ns on a text[]'s,
# where joining them costs ~60 ns. The new ids are split in a subquery (a hashed subplan, made
# once), not for each row compared with them.
CLOSE_AND_INSERT = """
WITH closing AS (
    SELECT t.id, c.status
    FROM unnest(string_to_array($1, ',')::bigint[], string_to_array($2, ',')::bigint[],
        string_to_array($3, ',')::bigint[], string_to_array($4, ','))
        AS c(screening_id, user_id, seat_id, status),
        LATERAL (
            SELECT r.id FROM reservations r
            WHERE r.status = 'active' AND r.screening_id = c.screening_id
                AND r.seat_id = c.seat_id AND r.user_id = c.user_id
            OFFSET 0
        ) AS t
), closed AS (
    UPDATE reservations r SET status = closing.status, updated_at = now()
    FROM closing
    WHERE r.id = closing.id
    RETURNING r.id
), older AS (
    SELECT t.id
    FROM (
        SELECT DISTINCT *
        FROM unnest(string_to_array($6, ',')::bigint[], string_to_array($7, ',')::bigint[])
    ) AS n(screening_id, seat_id),
        LATERAL (
            SELECT r.id FROM reservations r
            WHERE r.status = 'active' AND r.screening_id = n.screening_id
                AND r.seat_id = n.seat_id
                AND r.id NOT IN (SELECT unnest(string_to_array($5, ',')::bigint[]))
            OFFSET 0
        ) AS t
), superseded AS (
    UPDATE reservations r SET status = 'expired', updated_at = now()
    FROM older
    WHERE r.id = older.id AND r.id NOT IN (SELECT id FROM closed)
)
INSERT INTO reservations (id, screening_id, seat_id, user_id, reserved_at, expires_at, status)
SELECT id, screening_id, seat_id, user_id, to_timestamp(reserved), to_timestamp(expires), status
FROM unnest(string_to_array($5, ',')::bigint[], string_to_array($6, ',')::bigint[],
    string_to_array($7, ',')::bigint[], string_to_array($8, ',')::bigint[], $9::float8[],
    $10::float8[], string_to_array($11, ',')) AS n(id, screening_id, seat_id, user_id, reserved,
    expires, status)
WHERE EXISTS (SELECT 1 FROM screenings s WHERE s.id = n.screening_id OFFSET 0)
    AND EXISTS (SELECT 1 FROM seats s WHERE s.id = n.seat_id OFFSET 0)
    AND EXISTS (SELECT 1 FROM users u WHERE u.id = n.user_id OFFSET 0)
ON CONFLICT (id) DO NOTHING
"""


async def _close_and_insert(
    conn: Conn, closes: dict[tuple[int, int, int], str], fresh: list[_Fresh]
) -> None:
    """Close rows already written, then insert the batch's rows; a new hold on a seat supersedes
    any other row still marked active for it (replaying the same insert after a retry leaves its
    own row alone)."""
    if not closes and not fresh:
        return
    keys = list(closes)
    await conn.execute(
        CLOSE_AND_INSERT,
        _joined(k[0] for k in keys),
        _joined(k[1] for k in keys),
        _joined(k[2] for k in keys),
        ",".join(closes.values()),
        _joined(f.row[0] for f in fresh),
        _joined(f.row[1] for f in fresh),
        _joined(f.row[2] for f in fresh),
        _joined(f.row[3] for f in fresh),
        [f.row[4].timestamp() for f in fresh],
        [f.expires_at.timestamp() for f in fresh],
        ",".join(f.status for f in fresh),
    )


def _joined(ids: Iterable[int]) -> str:
    """Ids as CLOSE_AND_INSERT takes them: comma-separated ("" for none: an empty array)."""
    return ",".join(map(str, ids))


async def _extend_seats(conn: Conn, extends: dict[tuple[int, int, int], datetime]) -> None:
    if not extends:
        return
    keys = list(extends)
    await conn.execute(
        "UPDATE reservations r SET expires_at = n.expires_at, updated_at = now()"
        " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[])"
        " AS n(screening_id, user_id, seat_id, expires_at)"
        " WHERE r.status = 'active' AND r.screening_id = n.screening_id"
        " AND r.user_id = n.user_id AND r.seat_id = n.seat_id",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        list(extends.values()),
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


# expires_at is on Redis's clock (seatlock/engine/clock.py), so whether a hold is still live is
# judged by Redis's time passed in ($2), never PostgreSQL's now(): on another host the two differ.
RESERVATION_COLUMNS = (
    "id, screening_id, seat_id, user_id, reserved_at, expires_at,"
    " CASE WHEN status = 'active' AND expires_at <= $2 THEN 'expired' ELSE status END"
    " AS status"
)


async def for_user(db: Executor, user_id: int, include_expired: bool, now: datetime) -> list[Any]:
    """The user's holds, newest first; without include_expired only those live at ``now``
    (Redis's clock)."""
    live = "" if include_expired else " AND status = 'active' AND expires_at > $2"
    return list(
        await db.fetch(
            f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE user_id = $1{live}"
            " ORDER BY reserved_at DESC, id LIMIT 1000",
            user_id,
            now,
        )
    )


async def active_rows(
    db: Executor, screening_id: int, user_id: int, seat_ids: list[int]
) -> dict[int, LiveRow]:
    """seat id -> the user's active reservation row for it."""
    rows = await db.fetch(
        "SELECT seat_id, id, reserved_at, expires_at FROM reservations WHERE status = 'active'"
        " AND screening_id = $1 AND user_id = $2 AND seat_id = ANY($3::bigint[])",
        screening_id,
        user_id,
        seat_ids,
    )
    return {
        r["seat_id"]: LiveRow(r["id"], user_id, r["reserved_at"], r["expires_at"]) for r in rows
    }
