"""The read replica's lag and where lag-tolerant reads go, as /metrics shows them: caught up and
read from, then behind the limit (replay paused) and read around, then back."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import asyncpg
import httpx
from prometheus_client import REGISTRY

from db.pool import ReplicaReads
from tests import factories as make
from tests.api.test_metrics import scrape, value
from tests.replica.conftest import Replicated, on_replica
from tests.support import LiveServer

LAG = "seatlock_db_replica_lag_seconds"
READS = "seatlock_db_replica_reads"


async def metrics_show(
    client: httpx.AsyncClient, reads: float, within: float = 6.0
) -> tuple[float, float]:
    """Scrape until the reads gauge says ``reads``; the lag and reads gauges then."""
    deadline = time.monotonic() + within
    while True:
        text = await scrape(client)
        if value(text, READS) == reads:
            return value(text, LAG), reads
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.1)


async def test_lag_and_reads_gauges_follow_the_replica(
    start_app: Callable[..., LiveServer],
    primary_db: asyncpg.Connection,
    replica_db: asyncpg.Connection,
) -> None:
    live = start_app(database_read_max_lag_seconds=0.5)
    await on_replica(live, True)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        lag, _ = await metrics_show(client, 1)
        assert 0 <= lag <= 0.5
        await replica_db.execute("SELECT pg_wal_replay_pause()")
        try:
            await make.movie(primary_db, "Heat")
            await on_replica(live, False)
            lag, _ = await metrics_show(client, 0)
            assert 0.5 < lag < math.inf
        finally:
            await replica_db.execute("SELECT pg_wal_replay_resume()")
        await on_replica(live, True)
        lag, _ = await metrics_show(client, 1)
        assert 0 <= lag <= 0.5


async def test_a_replica_that_does_not_answer_shows_an_infinite_lag(
    clean_replicated: Replicated,
) -> None:
    primary = await asyncpg.create_pool(clean_replicated.primary_url, min_size=0, max_size=1)
    gone = await asyncpg.create_pool(clean_replicated.replica_url, min_size=0, max_size=1)
    await gone.close()  # unreachable for whoever uses it
    try:
        reads = ReplicaReads(primary, gone)
        await reads.sample()
    finally:
        await primary.close()
    assert reads.lag_s is None and not reads.on_replica
    assert REGISTRY.get_sample_value(LAG) == math.inf
    assert REGISTRY.get_sample_value(READS) == 0
