"""ReplicaReads on its own, on the real primary and replica: where a read goes, what moves it to the
primary, and the settings that turn it on."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest

from db.pool import ReplicaReads, create_pool, create_replica_pool
from seatlock.settings import Settings
from tests.replica.conftest import Replicated


@pytest.fixture
async def pools(clean_replicated: Replicated) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    primary = await create_pool(clean_replicated.primary_url, min_size=1, max_size=2)
    replica = await create_replica_pool(clean_replicated.replica_url, max_size=2)
    yield primary, replica
    await replica.close()
    await primary.close()


async def server_role(pool: asyncpg.Pool) -> str:
    standby: bool = await pool.fetchval("SELECT pg_is_in_recovery()")
    return "replica" if standby else "primary"


async def test_reads_stay_on_the_primary_until_a_sample_clears_the_replica(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    primary, replica = pools
    reads = ReplicaReads(primary, replica, max_lag_s=10)
    assert await reads.read(server_role) == "primary"
    await reads.sample()
    assert reads.on_replica and reads.lag_s == 0
    assert await reads.read(server_role) == "replica"
    assert await ReplicaReads(primary, None).read(server_role) == "primary"  # no read URL


async def test_a_read_cancelled_by_replay_runs_again_on_the_primary(
    pools: tuple[asyncpg.Pool, asyncpg.Pool], caplog: pytest.LogCaptureFixture
) -> None:
    primary, replica = pools
    reads = ReplicaReads(primary, replica)
    await reads.sample()
    asked: list[str] = []

    async def conflicting(pool: asyncpg.Pool) -> str:
        role = await server_role(pool)
        asked.append(role)
        if role == "replica":  # as PostgreSQL cancels a standby's query that blocks replay
            raise asyncpg.exceptions.SerializationError("conflict with recovery")
        return role

    caplog.set_level(logging.WARNING, logger="db.pool")
    assert await reads.read(conflicting) == "primary"
    assert asked == ["replica", "primary"]
    assert reads.on_replica  # a conflict says nothing against the replica
    assert not caplog.records


async def test_a_replica_that_is_unreachable_at_start_delays_nothing() -> None:
    # Nothing listens on port 9 (discard) of the loopback: the pool opens no connection yet.
    replica = await create_replica_pool("postgresql://postgres@127.0.0.1:9/seatlock")
    try:
        reads = ReplicaReads(replica, replica)
        await reads.sample()
        assert not reads.on_replica and reads.lag_s is None
    finally:
        await replica.close()


def test_settings_of_the_read_replica() -> None:
    env = {
        "SEATLOCK_DATABASE_READ_URL": "postgresql://reader:Pa55-w0rd@replica/seatlock",
        "SEATLOCK_DATABASE_READ_MAX_LAG_SECONDS": "2.5",
    }
    settings = Settings.from_env(env)
    assert settings.database_read_url.endswith("@replica/seatlock")
    assert settings.database_read_max_lag_seconds == 2.5
    assert "Pa55-w0rd" not in repr(settings)
    assert Settings().database_read_url == "" and Settings().database_read_max_lag_seconds == 10
    with pytest.raises(ValueError, match="DATABASE_READ_MAX_LAG_SECONDS"):
        Settings(database_read_max_lag_seconds=0)
