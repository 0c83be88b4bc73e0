"""A PostgreSQL primary and a streaming replica of it (pg_basebackup -R, the same binaries),
started once per session and only when a replica test runs, and the app reading from both.

The primary is not the suite's shared database: the replica follows this primary alone. Every
test starts from empty tables, replayed on the replica, and with replay running.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from db.migrate import migrate_database
from db.pool import ReplicaReads
from seatlock.server.embedded import EmbeddedPostgres
from tests.support import LiveServer, empty_tables


@dataclass
class Replicated:
    primary: EmbeddedPostgres
    replica: EmbeddedPostgres

    @property
    def primary_url(self) -> str:
        return self.primary.url

    @property
    def replica_url(self) -> str:
        return self.replica.url


@pytest.fixture(scope="session")
def replicated() -> Iterator[Replicated]:
    root = Path(tempfile.mkdtemp(prefix="seatlock-replica-"))
    primary = EmbeddedPostgres(root / "primary" / "data", persistent=False)
    replica: EmbeddedPostgres | None = None
    try:
        primary.start()
        asyncio.run(migrate_database(primary.url))
        replica = primary.standby(root / "replica" / "data")
        replica.start()
        asyncio.run(caught_up(primary.url, replica.url))
        yield Replicated(primary, replica)
    finally:
        if replica is not None:
            replica.stop()
        primary.stop()
        shutil.rmtree(root, ignore_errors=True)


async def caught_up(primary_url: str, replica_url: str, within: float = 10.0) -> None:
    """Wait until the replica has replayed everything the primary wrote until now."""
    primary = await asyncpg.connect(primary_url)
    try:
        position = await primary.fetchval("SELECT pg_current_wal_lsn()")
    finally:
        await primary.close()
    deadline = time.monotonic() + within
    replica = await asyncpg.connect(replica_url)
    try:
        sql = "SELECT pg_last_wal_replay_lsn() >= $1"
        while not await replica.fetchval(sql, position):
            assert time.monotonic() < deadline, "the replica did not catch up"
            await asyncio.sleep(0.02)
    finally:
        await replica.close()


@pytest.fixture
async def clean_replicated(replicated: Replicated) -> Replicated:
    """Empty tables on the primary, replayed on a running (restarted, resumed) replica."""
    if replicated.replica.proc is None or replicated.replica.proc.poll() is not None:
        replicated.replica.start()
    replica = await asyncpg.connect(replicated.replica_url)
    try:
        await replica.execute("SELECT pg_wal_replay_resume()")
    finally:
        await replica.close()
    primary = await asyncpg.connect(replicated.primary_url)
    try:
        await empty_tables(primary)
    finally:
        await primary.close()
    await caught_up(replicated.primary_url, replicated.replica_url)
    return replicated


@pytest.fixture
async def primary_db(clean_replicated: Replicated) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(clean_replicated.primary_url)
    yield conn
    await conn.close()


@pytest.fixture
async def replica_db(clean_replicated: Replicated) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(clean_replicated.replica_url)
    yield conn
    await conn.close()


@pytest.fixture
def start_app(
    make_server: Callable[..., LiveServer], clean_replicated: Replicated
) -> Callable[..., LiveServer]:
    """Start the app on the replicated pair: ``start_app(database_read_max_lag_seconds=1)``."""

    def start(**changes: object) -> LiveServer:
        return make_server(
            database_url=clean_replicated.primary_url,
            database_read_url=clean_replicated.replica_url,
            **changes,
        )

    return start


@pytest.fixture
async def app_on_replica(start_app: Callable[..., LiveServer]) -> LiveServer:
    """The app on the replicated pair, once it reads from the replica. A generous lag limit: a
    test that pauses replay must not see its reads move to the primary on a loaded machine."""
    live = start_app(database_read_max_lag_seconds=60)
    await on_replica(live, True)
    return live


@pytest.fixture
async def http(app_on_replica: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app_on_replica.url, timeout=15) as client:
        yield client


async def on_replica(live: LiveServer, expected: bool, within: float = 6.0) -> None:
    """Wait until the app's lag loop has sent lag-tolerant reads where ``expected`` says."""
    deadline = time.monotonic() + within
    while reads_of(live).on_replica is not expected:
        assert time.monotonic() < deadline, f"reads did not move (on_replica={not expected})"
        await asyncio.sleep(0.05)


def reads_of(live: LiveServer) -> ReplicaReads:
    """The app's ``Services.read_db`` (the app object uvicorn serves, as LiveServer built it)."""
    reads: ReplicaReads = live._server.config.app.state.services.read_db
    return reads
