"""The pool's helpers: a writer's kept connection survives its backend's end, closing a pool
never waits forever for a connection that is not given back, no query waits for a connection
of the pool longer than the pool's timeout, and a statement that timed out is cancelled."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import pytest

from db.pool import (
    BoundedPool,
    KeptConnection,
    NotAnswering,
    close_pool,
    create_pool,
    create_replica_pool,
)


async def test_a_kept_connection_that_ended_meanwhile_is_replaced(
    backend_urls: tuple[str, str], db: asyncpg.Connection
) -> None:
    """A writer's kept connection whose backend ended between two batches (PostgreSQL restarted,
    an administrator ended it) is not handed out again: the next batch gets a working one, not
    an InterfaceError that would fail the whole batch."""
    pool = await asyncpg.create_pool(backend_urls[1], min_size=1, max_size=2)
    kept = KeptConnection(pool, (Exception,))
    try:
        first = await kept.get()
        await db.execute("SELECT pg_terminate_backend($1, 5000)", first.get_server_pid())
        async with asyncio.timeout(5):  # asyncpg sees the end and takes the connection back
            while True:
                try:
                    if first.is_closed():
                        break
                except asyncpg.InterfaceError:
                    break
                await asyncio.sleep(0.01)
        again = await kept.get()
        assert await again.fetchval("SELECT 1") == 1
        await kept.let_go()
    finally:
        await pool.close()


async def test_closing_a_pool_ends_a_connection_never_given_back(
    backend_urls: tuple[str, str], db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await asyncpg.create_pool(backend_urls[1], min_size=1, max_size=2)
    held = await pool.acquire()  # as by a request that never ends
    pid = held.get_server_pid()
    async with asyncio.timeout(5):  # asyncpg's own close waits as long as it is not given back
        await close_pool(pool, timeout_s=0.3)
    with pytest.raises(asyncpg.InterfaceError):
        await held.fetchval("SELECT 1")
    gone = "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)"
    async with asyncio.timeout(5):  # its backend ends too
        while True:
            if await db.fetchval(gone, pid):
                break
            await asyncio.sleep(0.02)
    assert any("still in use" in r.message for r in caplog.records if r.levelno == logging.WARNING)


async def test_closing_a_pool_waits_for_a_connection_given_back_in_time(
    backend_urls: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    pool = await asyncpg.create_pool(backend_urls[1], min_size=1, max_size=2)
    held = await pool.acquire()

    async def give_back() -> None:
        await asyncio.sleep(0.2)
        assert await held.fetchval("SELECT 1") == 1  # still usable while the close waits
        await pool.release(held)

    await asyncio.gather(close_pool(pool, timeout_s=5), give_back())
    assert not [r for r in caplog.records if "still in use" in r.message]


async def until_answering(pool: BoundedPool) -> float:
    """Seconds until the pool's probe has had its answer (5 at most)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        while True:
            if pool.answering:
                return loop.time() - started
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("replica", [False, True], ids=["primary", "replica"])
async def test_no_query_waits_longer_than_the_timeout_then_the_next_are_refused_at_once(
    backend_urls: tuple[str, str], replica: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Every connection of the pool in use (PostgreSQL stalled, or a burst): a query waits the
    pool's timeout for one, then fails as "PostgreSQL cannot answer" (TimeoutError, a 503), not
    without end; the queries after it are refused at once (NotAnswering, a 503 too) until a probe
    gets an answer, which it does once a connection is free. Fails loudly if asyncpg's Pool stops
    taking our arguments (the fallback was taken) or its methods stop acquiring through
    ``acquire`` (they would wait without end)."""
    url = backend_urls[1]
    if replica:
        pool = await create_replica_pool(url, max_size=1, timeout_s=0.3)
    else:
        pool = await create_pool(url, min_size=1, max_size=1, timeout_s=0.3)
    try:
        assert isinstance(pool, BoundedPool), "asyncpg's Pool constructor changed: see db/pool.py"
        assert not [r for r in caplog.records if "other arguments" in r.message]
        held = await pool.acquire()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):  # unbounded, the test's own limit ends it
                await pool.fetchval("SELECT 1")
        assert 0.25 <= loop.time() - started < 3
        assert not pool.answering
        for query in (
            lambda: pool.fetchval("SELECT 1"),
            lambda: pool.fetch("SELECT 1"),
            lambda: pool.fetchrow("SELECT 1"),
            lambda: pool.execute("SELECT 1"),
            lambda: pool.executemany("SELECT $1::int", [(1,)]),
            lambda: pool.acquire(),
        ):
            started = loop.time()
            with pytest.raises(NotAnswering):
                async with asyncio.timeout(5):
                    await query()
            assert loop.time() - started < 0.1
        await pool.release(held)  # the probe gets it, and an answer
        await until_answering(pool)
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await close_pool(pool)


async def test_a_statement_that_times_out_costs_the_others_only_a_probe(
    backend_urls: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """One slow statement past the timeout while PostgreSQL answers: the pool refuses only
    until its probe's ``SELECT 1`` comes back, a round trip (the probe may be done before the
    statement's connection is back in the pool)."""
    pool = await create_pool(backend_urls[1], min_size=1, max_size=2, timeout_s=0.3)
    assert isinstance(pool, BoundedPool)
    try:
        with pytest.raises(TimeoutError):
            await pool.fetchval("SELECT pg_sleep(5)")
        assert await until_answering(pool) < 1
        said = [r.message for r in caplog.records if r.name == "db.pool"]
        assert len(said) == 2, said
        assert said[0].startswith("PostgreSQL did not answer in time")
        assert said[1].startswith("PostgreSQL answers again")
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await close_pool(pool)


@pytest.mark.parametrize("in_transaction", [False, True], ids=["plain", "transaction"])
async def test_a_statement_that_times_out_is_cancelled_and_its_connection_kept(
    backend_urls: tuple[str, str], db: asyncpg.Connection, in_transaction: bool
) -> None:
    """PostgreSQL answers: a statement past the timeout is cancelled on the server (not left
    running there) and its connection, its cancel acknowledged, goes back to the pool, also
    after the grace in which a connection whose cancel is not acknowledged is dropped (the hung
    case: tests/faults/test_hung_postgres.py)."""
    pool = await create_pool(backend_urls[1], min_size=1, max_size=1, timeout_s=0.3)
    assert isinstance(pool, BoundedPool)
    try:
        with pytest.raises(TimeoutError):
            async with pool.acquire() as conn:
                pid = conn.get_server_pid()
                if in_transaction:
                    async with conn.transaction():
                        await conn.execute("SELECT pg_sleep(5)")
                else:
                    await conn.fetchval("SELECT pg_sleep(5)")
        running = "SELECT state <> 'idle' FROM pg_stat_activity WHERE pid = $1"
        # Cancelled on the server: idle within moments (a ROLLBACK may still be on its way on a
        # busy machine), where a statement left running would sleep its whole 5 s.
        deadline = time.monotonic() + 2
        while await db.fetchval(running, pid):
            assert time.monotonic() < deadline, "the statement was left running on the server"
            await asyncio.sleep(0.02)
        await until_answering(pool)
        await asyncio.sleep(2 * pool.cancel_grace)
        async with pool.acquire() as conn:
            assert conn.get_server_pid() == pid
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await close_pool(pool)


async def test_closing_a_pool_stops_its_probe(
    backend_urls: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(backend_urls[1], min_size=1, max_size=1, timeout_s=0.2)
    assert isinstance(pool, BoundedPool)
    held = await pool.acquire()
    with pytest.raises(TimeoutError):
        await pool.fetchval("SELECT 1")
    assert not pool.answering  # probing: the one connection is held
    await pool.release(held)
    await close_pool(pool, timeout_s=5)
    assert pool.answering
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
