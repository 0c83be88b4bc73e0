"""PostgreSQL hung: its postmaster and every backend stopped (SIGSTOP), as when its host or its
storage freezes; no connection is cut, nothing answers, not even a cancel request.

A statement in flight then costs its caller one SEATLOCK_DB_TIMEOUT_SECONDS, not two: asyncpg
waited one more for PostgreSQL to acknowledge the statement's cancel, in the ROLLBACK of its
transaction and again in its return to the pool (db/pool.py _GivenUp). The connections it hung
on are dropped, and once PostgreSQL goes on, the pool and the server answer again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path

import asyncpg
import httpx
import pytest

from db.pool import DATABASE_DOWN, BoundedPool, NotAnswering, close_pool, create_pool
from tests import factories as make
from tests.faults.harness import Backends
from tests.support import LiveServer, make_account

pytestmark = pytest.mark.faults

TIMEOUT = 2.0  # SEATLOCK_DB_TIMEOUT_SECONDS of these tests
# A caller's longest wait: TIMEOUT and the cancel's grace (a quarter of it), with room for a busy
# test machine; it was 2 x TIMEOUT.
WITHIN = 1.75 * TIMEOUT


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # pid (comm) state ppid ...: comm may hold spaces and parentheses
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


@contextlib.contextmanager
def hung(proc: subprocess.Popen[bytes] | None) -> Iterator[None]:
    """PostgreSQL stopped until the block ends: the postmaster first (it forks no more), then
    its children, each of which is a session of its own (no process group reaches them)."""
    assert proc is not None and proc.poll() is None
    stopped = [proc.pid]
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        for pid in children_of(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield
    finally:
        for pid in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def timed(call: Callable[[], Awaitable[object]]) -> tuple[BaseException | None, float]:
    """What ``call()`` raised (None: nothing) and how long it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await call()
    except Exception as exc:
        return exc, loop.time() - started
    return None, loop.time() - started


async def test_a_statement_in_flight_costs_one_timeout_and_its_connection(
    backends: Backends,
) -> None:
    """Statements running when PostgreSQL stops: a plain query, one in a transaction (whose
    ROLLBACK waited too) and one its caller gives up on first (asyncio.timeout, as the readiness
    check's wait_for) all end within about their timeout; the next query is refused at once; the
    backends they hung on end once PostgreSQL goes on (their connections were dropped, not kept
    waiting), and the pool answers again."""
    pool = await create_pool(backends.postgres.url, min_size=3, max_size=3, timeout_s=TIMEOUT)
    assert isinstance(pool, BoundedPool), "asyncpg's Pool constructor changed: see db/pool.py"
    admin = await asyncpg.connect(backends.postgres.url)
    pids: list[int] = []

    async def in_transaction() -> None:
        async with pool.acquire() as conn, conn.transaction():
            pids.append(conn.get_server_pid())
            await conn.execute("SELECT pg_sleep(1)")

    async def given_up() -> None:
        async with asyncio.timeout(0.5), pool.acquire() as conn:
            pids.append(conn.get_server_pid())
            await conn.execute("SELECT pg_sleep(1)")

    try:
        calls = [lambda: pool.fetchval("SELECT pg_sleep(1)"), in_transaction, given_up]
        in_flight = [asyncio.create_task(timed(call)) for call in calls]
        await asyncio.sleep(0.2)  # each in its pg_sleep, the transaction begun
        with hung(backends.postgres.proc):
            outcomes = await asyncio.gather(*in_flight)
            for exc, took in outcomes:
                assert isinstance(exc, DATABASE_DOWN), exc
                assert took < WITHIN, outcomes
            # Its own deadline (0.5 s) and the grace: it was 0.5 s and TIMEOUT.
            assert outcomes[2][1] < 0.5 + WITHIN - TIMEOUT, outcomes
            exc, took = await timed(lambda: pool.fetchval("SELECT 1"))
            assert isinstance(exc, NotAnswering) and took < 0.1, (exc, took)
        gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = any($1::int[])"
        async with asyncio.timeout(10):
            while True:
                if pool.answering and await admin.fetchval(gone, pids):
                    break
                await asyncio.sleep(0.05)
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await admin.close()
        await close_pool(pool, timeout_s=5)


async def test_requests_in_flight_are_503_after_one_timeout(
    backends: Backends, tmp_path: Path
) -> None:
    """As in the audit: requests that need PostgreSQL while it hangs each get a 503 with
    Retry-After and a JSON detail after about SEATLOCK_DB_TIMEOUT_SECONDS (they took twice
    that); the server answers again once PostgreSQL goes on."""
    url = backends.postgres.url
    conn = await asyncpg.connect(url)
    try:
        movie = await make.movie(conn, "Frozen")
    finally:
        await conn.close()
    settings = backends.settings(
        tmp_path / "data",
        db_timeout_seconds=TIMEOUT,
        db_pool_min=4,
        db_pool_max=4,
        catalog_cache_seconds=0,
    )
    live = LiveServer(settings)
    live.start()
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            user = await make_account(client, "hung-pg@example.com", "Hung")
            routes = [
                ("/api/v1/auth/me", user.headers, 200),
                ("/api/v1/tickets/my-tickets", user.headers, 200),
                ("/api/v1/tickets/987654", user.headers, 404),
                (f"/api/v1/movies/{movie}", {}, 200),
            ]
            for path, headers, status in routes:
                assert (await client.get(path, headers=headers)).status_code == status, path
            replies: list[httpx.Response] = []

            async def get(path: str, headers: dict[str, str]) -> None:
                replies.append(await client.get(path, headers=headers))

            with hung(backends.postgres.proc):
                outcomes = await asyncio.gather(*(timed(partial(get, p, h)) for p, h, _ in routes))
                assert all(exc is None for exc, _ in outcomes), outcomes
                for r in replies:
                    assert r.status_code == 503, (r.request.url.path, r.status_code, r.text)
                    assert r.headers["retry-after"]
                    assert "detail" in r.json()
                assert max(took for _, took in outcomes) < WITHIN, outcomes
            async with asyncio.timeout(15):  # 503 until the server's probe has an answer
                while True:
                    if (await client.get(routes[0][0], headers=user.headers)).status_code == 200:
                        break
                    await asyncio.sleep(0.2)
    finally:
        live.stop()
