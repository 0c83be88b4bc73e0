"""Hold times on Redis's clock through the cluster transport: engines standing for hosts 5 s ahead
and 5 s behind sync against the cluster's TIME and write the same deadlines on every primary."""

from __future__ import annotations

import time

from redis.asyncio.cluster import RedisCluster

from seatlock import keys
from seatlock.engine.clock import RedisClock
from seatlock.engine.cluster import ClusterTransport
from seatlock.engine.seats import SeatEngine
from seatlock.server.localcluster import LocalCluster
from tests.cluster.conftest import one_per_primary
from tests.lua.support import DictSource, make_engine

ALICE, BOB = 7, 8
SKEW_MS = 5_000
SLACK_MS = 5


async def cluster_ms(cluster: RedisCluster, key: str) -> int:
    """TIME of the node that holds ``key`` (all nodes run on this machine's clock)."""
    await cluster.initialize()
    node = cluster.get_node_from_key(key)
    seconds, micros = await cluster.time(target_nodes=node)
    return int(seconds) * 1000 + int(micros) // 1000


async def host(
    cluster_redis: RedisCluster, made: list[ClusterTransport], source: DictSource, skew_ms: int
) -> SeatEngine:
    made.append(ClusterTransport.like(cluster_redis))
    engine = make_engine(made[-1], source)
    engine.clock = RedisClock(made[-1].command, skew_ms=skew_ms)
    await engine.clock.sync()
    return engine


async def test_skewed_hosts_hold_by_the_cluster_clock(
    empty_cluster: LocalCluster,
    cluster_redis: RedisCluster,
    cluster_transports: list[ClusterTransport],
) -> None:
    shows = one_per_primary(empty_cluster)
    source = DictSource()
    for screening_id in shows:
        source.add(screening_id, [1, 2])
    ahead = await host(cluster_redis, cluster_transports, source, SKEW_MS)
    behind = await host(cluster_redis, cluster_transports, source, -SKEW_MS)
    for engine in (ahead, behind):
        assert abs(engine.clock.local_ms() - time.time() * 1000) > SKEW_MS - SLACK_MS
    for screening_id in shows:
        lease = keys.seat_hold(screening_id, 1)
        for engine, user, seat in ((ahead, ALICE, 1), (behind, BOB, 2)):
            before = await cluster_ms(cluster_redis, lease)
            [held] = await engine.hold(screening_id, user, [seat])
            after = await cluster_ms(cluster_redis, lease)
            hold_ms = engine.hold_ms
            assert before + hold_ms - SLACK_MS <= held.expires_at_ms <= after + hold_ms + SLACK_MS
        [extended] = await behind.extend(screening_id, ALICE, [1], 60_000)
        [first] = [s for s in await ahead.seat_map(screening_id) if s.seat_id == 1]
        assert first.expires_at_ms == extended.expires_at_ms
        assert await ahead.sweep() == 0
        assert await ahead.seat_map(screening_id) == await behind.seat_map(screening_id)
