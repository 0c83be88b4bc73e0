"""The session revocation feed on a Redis Cluster: revocations published through any node arrive,
and a flush of the flush canary's node empties the confirmed sessions."""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster

from seatlock.accounts.sessions import CHANNEL, FLUSH_CANARY, SessionTrust, listening
from seatlock.server.localcluster import LocalCluster
from tests.lua.support import wait_until


async def test_revocations_and_the_canary_flush_cross_the_cluster(
    cluster_redis: RedisCluster, empty_cluster: LocalCluster
) -> None:
    trust = SessionTrust(keep_revoked_seconds=60)
    async with listening(cluster_redis, trust):
        await wait_until(lambda: trust.live)
        trust.confirm("s-1", trust.epoch)
        # Published on every primary: each reaches the feed, wherever it listens.
        for port in empty_cluster.primary_ports:
            with empty_cluster.client(port) as node:
                node.publish(CHANNEL, f"r-{port}")
        await wait_until(lambda: len(trust.revoked) == empty_cluster.primaries)
        assert trust.trusts("s-1")
        await cluster_redis.publish(CHANNEL, "s-1")
        await wait_until(lambda: not trust.trusts("s-1"))
        trust.confirm("s-2", trust.epoch)
        canary = empty_cluster.port_of_slot(empty_cluster.keyslot(FLUSH_CANARY))
        with empty_cluster.client(canary) as node:
            node.flushall()
        await wait_until(lambda: not trust.trusts("s-2"))
