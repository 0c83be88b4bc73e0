"""History writers of several processes share hot rows; they must never deadlock each other. A
busy writer gathers its changes into few transactions, yet a flush never waits for them."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery

from db.migrate import migrate
from db.reservations import (
    BATCH_SIZE,
    CLOSE_AND_INSERT,
    ID_BLOCK,
    Change,
    Closed,
    Extended,
    HistoryWriter,
    Inserted,
    ReservationIds,
    apply_changes,
)
from tests import factories as make

CONNECT_S = 10.0
WRITE_S = 20.0  # 40 batches take ~0.2 s here: far more means a writer waits on something

SESSIONS_SQL = (
    "SELECT a.pid, a.application_name, a.client_port, a.backend_start, a.state,"
    " a.wait_event_type, a.wait_event, pg_blocking_pids(a.pid) AS blocked_by,"
    " now() - a.xact_start AS in_transaction, now() - a.state_change AS in_state,"
    " left(a.query, 100) AS query,"
    " (SELECT array_agg(l.locktype || ' ' || l.mode || coalesce(' ' || l.objid, '')"
    "  || CASE WHEN l.granted THEN '' ELSE ' (waiting)' END) FROM pg_locks l"
    "  WHERE l.pid = a.pid AND l.locktype <> 'virtualxid') AS locks"
    " FROM pg_stat_activity a"
    " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
)

# One writer process: 40 batches of new holds of every seat, in the order given, with the
# writer's own transaction shape; if it is still writing after WRITE_S it says where it waits.
WRITE_IN_A_PROCESS = """
import asyncio, logging, sys
from datetime import UTC, datetime, timedelta
import asyncpg
from db.reservations import HistoryWriter, Inserted

url, name, show, user, first_id, connect_s, limit, sessions_sql = sys.argv[1:9]
seats = [int(s) for s in sys.argv[9].split(",")]
ids = iter(range(int(first_id), int(first_id) + 1_000_000))

async def write(pool):
    writer = HistoryWriter(pool)
    now = datetime.now(UTC)
    expires = now + timedelta(minutes=5)
    for _ in range(40):
        batch = [Inserted([(next(ids), int(show), s, int(user), now, expires)]) for s in seats]
        await writer._apply_with_retry(batch, asyncio.Event())
    await writer._conn.let_go()  # as when its queue runs empty

def awaiting(task):
    where, awaited = [], task.get_coro()
    while awaited is not None and hasattr(awaited, "cr_frame"):
        if awaited.cr_frame is not None:
            where.append(f"{awaited.cr_frame.f_code.co_name}:{awaited.cr_frame.f_lineno}")
        awaited = awaited.cr_await
    return where + [repr(awaited)]

async def main():
    logging.basicConfig(level=logging.WARNING)  # a retried deadlock is logged to stderr
    pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=2,
        timeout=float(connect_s),
        server_settings={"application_name": name},
    )
    async with pool.acquire():  # connected: ready, and start when the other one is too
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
    task = asyncio.create_task(write(pool))
    done, _ = await asyncio.wait([task], timeout=float(limit))
    if not done:
        conn = await asyncpg.connect(url, timeout=float(connect_s))
        sessions = [dict(r) for r in await conn.fetch(sessions_sql)]
        sys.exit(f"{name} still writing after {limit} s, waiting at {awaiting(task)};"
                 f" the sessions then: {sessions}")
    task.result()
    await pool.close()

asyncio.run(main())
"""


async def _sessions(db: asyncpg.Connection) -> list[dict[str, Any]]:
    """What the database's other sessions are doing and the locks they hold or wait for."""
    return [dict(r) for r in await db.fetch(SESSIONS_SQL)]


@pytest.fixture
async def own_db(fresh_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A database of the test's own: the suite's other sessions (the session's live server,
    leftovers of earlier tests) cannot hold the writers' lock there. In the shared database the
    writers below once waited 20 s on that lock (2 full runs of 11); who held it, not found."""
    conn = await asyncpg.connect(fresh_url)
    try:
        await migrate(conn)
        yield conn
    finally:
        await conn.close()


async def test_writers_of_two_processes_on_the_same_seats_do_not_deadlock(
    fresh_url: str, own_db: asyncpg.Connection
) -> None:
    show = await make.show(own_db, 120)
    user = await own_db.fetchval(
        "INSERT INTO users (email, password_hash, full_name) VALUES ('w@x.io', 'x', 'W')"
        " RETURNING id"
    )
    orders = {"a": show.seat_ids, "b": show.seat_ids[::-1]}  # the same seats, opposite orders
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WRITE_IN_A_PROCESS,
            fresh_url,
            f"history writer {name}",
            str(show.id),
            str(user),
            str(10_000_000 * (n + 1)),  # ids of its own, as a process's blocks are
            str(CONNECT_S),
            str(WRITE_S),
            SESSIONS_SQL,
            ",".join(map(str, seats)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n, (name, seats) in enumerate(orders.items())
    ]
    try:
        # A writer connects within CONNECT_S, writes for WRITE_S at most, then says where it waits.
        async with asyncio.timeout(WRITE_S + 2 * CONNECT_S):
            for w in writers:  # both connected, then both start at once
                assert w.stdin is not None and w.stdout is not None
                await w.stdout.readline()
            for w in writers:
                w.stdin.write(b"go\n")  # type: ignore[union-attr]
            ended = await asyncio.gather(*(w.communicate() for w in writers))
    except TimeoutError:
        pytest.fail(f"the writers did not end; sessions: {await _sessions(own_db)}")
    finally:
        for w in writers:
            if w.returncode is None:
                w.kill()
                await w.wait()
    # A deadlock PostgreSQL broke would be retried and logged ("deadlock detected").
    errors = [err.decode() for _, err in ended]
    outcomes = [(w.returncode, "deadlock" in e) for w, e in zip(writers, errors, strict=True)]
    if outcomes != [(0, False), (0, False)]:
        pytest.fail(f"writers ended {outcomes}: {errors}; sessions now: {await _sessions(own_db)}")
    active = await own_db.fetchval(
        "SELECT count(*) FROM reservations WHERE status = 'active' AND screening_id = $1", show.id
    )
    assert active == len(show.seat_ids)  # each seat: exactly one active row, the newest
    total = await own_db.fetchval(
        "SELECT count(*) FROM reservations WHERE screening_id = $1", show.id
    )
    assert total == 2 * 40 * len(show.seat_ids)  # every batch of both written


async def test_a_batch_keeps_the_order_of_changes_to_one_seat(db: asyncpg.Connection) -> None:
    show = await make.show(db, 3)
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
    batch: list[Change] = [
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


async def test_alternating_holds_and_cancels_of_one_seat_take_a_constant_number_of_statements(
    db: asyncpg.Connection,
) -> None:
    show = await make.show(db, 2)
    seat, other_seat = show.seat_ids
    users = [
        await db.fetchval(
            "INSERT INTO users (email, password_hash, full_name) VALUES ($1, 'x', 'U')"
            " RETURNING id",
            f"a{n}@x.io",
        )
        for n in range(2)
    ]
    now = datetime.now(UTC)
    later, longer = now + timedelta(minutes=5), now + timedelta(minutes=9)
    # An older active row of the seat, and one of another seat, both already in PostgreSQL.
    async with db.transaction():
        await apply_changes(
            db,
            [
                Inserted([(1, show.id, seat, users[1], now, later)]),
                Inserted([(2, show.id, other_seat, users[0], now, later)]),
            ],
        )
    batch: list[Change] = [Closed(show.id, users[0], [other_seat], "cancelled")]
    for n in range(100):
        user = users[n % 2]
        batch.append(Inserted([(10 + n, show.id, seat, user, now, later)]))
        if n % 3 == 2:  # left active, so the next hold supersedes it
            continue
        batch.append(Closed(show.id, user, [seat], "booked" if n % 3 else "cancelled"))
    batch.append(Inserted([(200, show.id, seat, users[0], now, later)]))
    batch.append(Extended(show.id, users[0], {seat: longer}))
    statements: list[str] = []

    def log(record: LoggedQuery) -> None:
        statements.append(record.query)

    db.add_query_logger(log)
    try:
        async with db.transaction():
            await apply_changes(db, batch)
    finally:
        db.remove_query_logger(log)
    writes = [q for q in statements if q.lstrip().startswith(("INSERT", "UPDATE", "WITH"))]
    # the extension, then closes, superseding and inserts in one: however long the batch
    assert len(writes) <= 2
    rows = {r["id"]: r for r in await db.fetch("SELECT * FROM reservations")}
    assert rows[1]["status"] == "expired"  # superseded by the batch's first hold
    assert rows[2]["status"] == "cancelled"
    for n in range(100):
        expected = "expired" if n % 3 == 2 else "booked" if n % 3 else "cancelled"
        assert rows[10 + n]["status"] == expected, n
    assert (rows[200]["status"], rows[200]["expires_at"]) == ("active", longer)


async def test_changes_to_rows_already_written_keep_their_order(db: asyncpg.Connection) -> None:
    show = await make.show(db, 3)
    a, b, c = show.seat_ids
    user = await db.fetchval(
        "INSERT INTO users (email, password_hash, full_name) VALUES ('o@x.io', 'x', 'O')"
        " RETURNING id"
    )
    now = datetime.now(UTC)
    later, longer = now + timedelta(minutes=5), now + timedelta(minutes=9)
    async with db.transaction():
        await apply_changes(
            db, [Inserted([(n, show.id, s, user, now, later) for n, s in enumerate([a, b, c], 1)])]
        )
    batch: list[Change] = [
        Extended(show.id, user, {a: longer}),
        Closed(show.id, user, [a], "booked"),  # extended, then booked
        Closed(show.id, user, [b], "cancelled"),
        Extended(show.id, user, {b: longer}),  # too late: b was cancelled
        Closed(show.id, user, [b], "booked"),  # too late as well
        Inserted([(4, show.id, b, user, now, later)]),  # b held again
        Closed(show.id, user, None, "cancelled"),  # all of them: c and the new row of b
        Inserted([(5, show.id, c, user, now, later)]),
    ]
    async with db.transaction():
        await apply_changes(db, batch)
    rows = {r["id"]: r for r in await db.fetch("SELECT * FROM reservations")}
    assert {i: r["status"] for i, r in rows.items()} == {
        1: "booked",
        2: "cancelled",
        3: "cancelled",
        4: "cancelled",
        5: "active",
    }
    assert (rows[1]["expires_at"], rows[2]["expires_at"]) == (longer, later)


class Running:
    """A HistoryWriter writing in the background, and the statements its pool ran."""

    def __init__(
        self, pool: asyncpg.Pool, writer: HistoryWriter, logged: list[LoggedQuery]
    ) -> None:
        self.pool, self.writer, self.logged = pool, writer, logged

    @property
    def statements(self) -> list[str]:
        return [record.query for record in self.logged]

    def transactions(self) -> int:
        return sum("pg_advisory_xact_lock" in q for q in self.statements)

    def closes_of_written_rows(self) -> int:
        """Closes sent to PostgreSQL as UPDATEs of rows already written."""
        # The closes' screening ids, comma-separated ("" for none).
        closes = [r.args[0] for r in self.logged if r.query == CLOSE_AND_INSERT]
        return sum(len(ids.split(",")) for ids in closes if ids)


async def running_writer(url: str, interval_s: float) -> AsyncIterator[Running]:
    logged: list[LoggedQuery] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(logged.append)

    pool = await asyncpg.create_pool(url, min_size=1, max_size=2, init=log_queries)
    writer = HistoryWriter(pool, interval_s=interval_s)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        yield Running(pool, writer, logged)
    finally:
        stop.set()
        await task
        await pool.close()


@pytest.fixture
async def busy(backend_urls: tuple[str, str]) -> AsyncIterator[Running]:
    """A writer that starts a batch at most every 0.2 s."""
    async for running in running_writer(backend_urls[1], 0.2):
        yield running


@pytest.fixture
async def slow(backend_urls: tuple[str, str]) -> AsyncIterator[Running]:
    """A writer whose interval between batches is far longer than any test."""
    async for running in running_writer(backend_urls[1], 600.0):
        yield running


async def holder(db: asyncpg.Connection, seats: int) -> tuple[make.Show, int]:
    show = await make.show(db, seats)
    user = await db.fetchval(
        "INSERT INTO users (email, password_hash, full_name) VALUES ('b@x.io', 'x', 'B')"
        " RETURNING id"
    )
    return show, user


async def statuses(db: asyncpg.Connection) -> dict[int, str]:
    return {r["id"]: r["status"] for r in await db.fetch("SELECT id, status FROM reservations")}


async def written(db: asyncpg.Connection, count: int) -> None:
    """Returns once ``count`` rows are written; fails after 5 s."""
    async with asyncio.timeout(5):
        while True:
            if await db.fetchval("SELECT count(*) FROM reservations") >= count:
                return
            await asyncio.sleep(0.01)


async def test_a_busy_writer_gathers_many_changes_into_few_transactions(
    busy: Running, db: asyncpg.Connection
) -> None:
    show, user = await holder(db, 20)
    now = datetime.now(UTC)
    later = now + timedelta(minutes=5)
    started = time.monotonic()
    for n in range(40):  # a hold every 10 ms, cancelled 5 ms later, for 0.4 s
        seat = show.seat_ids[n % 20]
        busy.writer.submit(Inserted([(n + 1, show.id, seat, user, now, later)]))
        await asyncio.sleep(0.005)
        busy.writer.submit(Closed(show.id, user, [seat], "cancelled"))
        await asyncio.sleep(0.005)
    await busy.writer.flush()
    elapsed = time.monotonic() - started
    # One batch at once, then at most one per 0.2 s; writing each change at once would take 80.
    assert busy.transactions() <= 2 + elapsed / 0.2, busy.statements
    assert await statuses(db) == {n + 1: "cancelled" for n in range(40)}
    # A hold cancelled within its batch is inserted as cancelled: only a cancel that fell into
    # the batch after its hold's is an UPDATE.
    assert busy.closes_of_written_rows() < busy.transactions()


async def test_a_connection_that_broke_under_asyncpg_is_retried(
    busy: Running, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a writer's BEGIN raised on a pooled connection whose backend had just died with its
    # postmaster (kill -9): asyncpg had the FATAL but had not yet seen the connection close.
    failures = [asyncpg.exceptions.InternalClientError("cannot switch to state 15")]

    async def once_broken(conn: Any, batch: list[Change]) -> None:
        if failures:
            raise failures.pop()
        await apply_changes(conn, batch)

    monkeypatch.setattr("db.reservations.apply_changes", once_broken)
    show, user = await holder(db, 1)
    now = datetime.now(UTC)
    busy.writer.submit(Inserted([(1, show.id, show.seat_ids[0], user, now, now)]))
    await written(db, 1)  # after the retry: the batch is not lost, the writer goes on
    assert not failures
    assert busy.writer.rejected == 0 and busy.writer.dropped == 0


async def test_a_writer_keeps_no_connection_once_its_queue_is_empty(
    busy: Running, db: asyncpg.Connection
) -> None:
    show, user = await holder(db, 1)
    now = datetime.now(UTC)
    busy.writer.submit(Inserted([(1, show.id, show.seat_ids[0], user, now, now)]))
    await busy.writer.flush()
    async with asyncio.timeout(2):  # back in the pool right after the batch
        while True:
            if busy.pool.get_idle_size() == busy.pool.get_size():
                return
            await asyncio.sleep(0.01)


async def test_a_lone_change_is_written_at_once(slow: Running, db: asyncpg.Connection) -> None:
    show, user = await holder(db, 1)
    now = datetime.now(UTC)
    slow.writer.submit(Inserted([(1, show.id, show.seat_ids[0], user, now, now)]))
    await written(db, 1)


async def test_flush_does_not_wait_out_the_interval(slow: Running, db: asyncpg.Connection) -> None:
    show, user = await holder(db, 2)
    now = datetime.now(UTC)
    later = now + timedelta(minutes=5)
    slow.writer.submit(Inserted([(1, show.id, show.seat_ids[0], user, now, later)]))
    await slow.writer.flush()  # written at once: the writer was idle
    slow.writer.submit(Inserted([(2, show.id, show.seat_ids[1], user, now, later)]))
    await asyncio.sleep(0.05)  # the writer now waits out its interval
    started = time.monotonic()
    await slow.writer.flush(timeout_s=5)
    assert time.monotonic() - started < 1
    assert await statuses(db) == {1: "active", 2: "active"}


async def test_stopping_writes_what_waits_at_once(
    backend_urls: tuple[str, str], db: asyncpg.Connection
) -> None:
    show, user = await holder(db, 2)
    now = datetime.now(UTC)
    started = time.monotonic()
    async for slow in running_writer(backend_urls[1], 600.0):
        slow.writer.submit(Inserted([(1, show.id, show.seat_ids[0], user, now, now)]))
        await asyncio.sleep(0.05)  # written at once: the writer was idle
        slow.writer.submit(Inserted([(2, show.id, show.seat_ids[1], user, now, now)]))
        await asyncio.sleep(0.05)  # the writer now waits out its interval; then it is stopped
    assert time.monotonic() - started < 2
    assert await statuses(db) == {1: "active", 2: "active"}


async def test_a_full_batch_does_not_wait_out_the_interval(
    slow: Running, db: asyncpg.Connection
) -> None:
    show, user = await holder(db, 1)
    now = datetime.now(UTC)
    seat = show.seat_ids[0]
    slow.writer.submit(Closed(show.id, user, [seat], "cancelled"))
    await slow.writer.flush()
    for n in range(BATCH_SIZE):
        slow.writer.submit(Inserted([(n + 1, show.id, seat, user, now, now)]))
    await written(db, BATCH_SIZE)
    assert slow.transactions() == 2


async def test_reservation_ids_taken_at_once_are_unique_across_blocks(
    backend_urls: tuple[str, str],
) -> None:
    pool = await asyncpg.create_pool(backend_urls[1], min_size=1, max_size=4)
    try:
        ids = ReservationIds(pool)
        counts = [1 + n % 6 for n in range(ID_BLOCK)]  # 3.5 blocks of ids, taken at once
        taken = await asyncio.gather(*(ids.take(count) for count in counts))
    finally:
        await pool.close()
    assert [len(t) for t in taken] == counts
    every = [i for t in taken for i in t]
    assert len(set(every)) == len(every)
    assert len({i // ID_BLOCK for i in every}) == 4  # blocks from the sequence, none wasted
    assert min(every) >= ID_BLOCK  # the sequence starts at its first block


async def test_times_are_written_to_the_microsecond(db: asyncpg.Connection) -> None:
    show, user = await holder(db, 1)
    now = datetime.now(UTC)
    times = [now + timedelta(microseconds=random.randrange(-(10**14), 10**15)) for _ in range(400)]
    seat = show.seat_ids[0]
    rows = [
        (n + 1, show.id, seat, user, t, t + timedelta(microseconds=n)) for n, t in enumerate(times)
    ]
    async with db.transaction():
        await apply_changes(db, [Inserted(rows)])
    written = await db.fetch("SELECT id, reserved_at, expires_at FROM reservations ORDER BY id")
    assert [(r["id"], r["reserved_at"], r["expires_at"]) for r in written] == [
        (r[0], r[4], r[5]) for r in rows
    ]


async def test_the_next_block_of_ids_is_fetched_before_it_is_needed(
    backend_urls: tuple[str, str],
) -> None:
    statements: list[str] = []
    two_asked = asyncio.Event()

    def logged(record: Any) -> None:
        if "nextval" in record.query:
            statements.append(record.query)
        if len(statements) >= 2:
            two_asked.set()

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(logged)

    pool = await asyncpg.create_pool(backend_urls[1], min_size=1, max_size=2, init=log_queries)
    try:
        ids = ReservationIds(pool)
        first = await ids.take(ID_BLOCK // 2 + 100)  # past half of the block: the next is asked
        await asyncio.wait_for(two_asked.wait(), 5)
        second = await ids.take(ID_BLOCK // 2)  # crosses into the next block without a query
        assert len(statements) == 2
    finally:
        await pool.close()
    every = first + second
    assert len(set(every)) == len(every)
    assert second[-1] // ID_BLOCK == first[0] // ID_BLOCK + 1
