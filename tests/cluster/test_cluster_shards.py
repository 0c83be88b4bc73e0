"""Shard channels (seatlock/engine/shards.py) on a real cluster with sharded pub/sub (Redis >= 7):
a channel subscribed on a node that is not its slot's primary is moved to the primary once the
slot map says so, and becomes live there again (so its owner resyncs its watchers).

A slot map read a moment before a failover settled can name a replica as a slot's owner; Redis
takes SSUBSCRIBE there (a replica serves its primary's shard channels) and says nothing, so only
comparing the placements with a later slot map finds it.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode
from redis.cluster import PRIMARY

from seatlock import keys
from seatlock.engine.cluster import ClusterTransport
from seatlock.engine.shards import ShardChannels, Slots
from seatlock.server.localcluster import LocalCluster
from tests.cluster.conftest import transport_of
from tests.lua.support import wait_until

SHOW = 1000


class StaleOnce:
    """The transport's slot map, except that the first one asked for names the replica of the
    channel's primary as the owner of its slot (what a node that had not yet heard of a
    failover would answer)."""

    def __init__(self, transport: ClusterTransport, slot: int, replica: ClusterNode) -> None:
        self.transport = transport
        self.slot = slot
        self.replica = replica
        self.stale = True

    async def slot_map(self) -> Slots:
        slots = await self.transport.slot_map()
        if not self.stale:
            return slots
        self.stale = False
        return [(self.slot, self.slot, self.replica)] + [
            (first, last, node) for first, last, node in slots if not first <= self.slot <= last
        ]

    def node_redis(self, node: ClusterNode) -> Redis:
        return self.transport.node_redis(node)


def subscribers(cluster: LocalCluster, port: int, channel: str) -> int:
    with cluster.client(port) as node:
        reply = node.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])


@pytest.mark.parametrize("empty_cluster", ["sharded"], indirect=True)
async def test_a_channel_on_a_node_that_is_not_its_slots_primary_moves_to_the_primary(
    empty_cluster: LocalCluster,
) -> None:
    cluster = empty_cluster
    channel = keys.screening_events(SHOW)
    slot = cluster.keyslot(channel)
    primary = cluster.port_of_slot(slot)
    replica = cluster.replica_of(primary)
    heard: list[bytes] = []
    changes: list[bool] = []
    async with transport_of(cluster) as transport:
        source = StaleOnce(transport, slot, ClusterNode("127.0.0.1", replica, PRIMARY))
        shards = ShardChannels(source, heard.append, lambda _, live: changes.append(live))
        stop = asyncio.Event()
        runner = asyncio.create_task(shards.run(stop))
        try:
            await asyncio.wait_for(shards.confirmed(channel), 5)
            assert subscribers(cluster, replica, channel) == 1  # taken by the replica, live
            assert subscribers(cluster, primary, channel) == 0
            assert changes == [True]

            shards.follow(await transport.slot_map())
            await wait_until(lambda: changes == [True, False, True], 5)
            assert shards.is_live(channel)
            assert subscribers(cluster, primary, channel) == 1
            await wait_until(lambda: subscribers(cluster, replica, channel) == 0, 5)
            with cluster.client(primary) as node:
                node.execute_command("SPUBLISH", channel, "after the move")
            await wait_until(lambda: b"after the move" in heard, 5)

            shards.follow(await transport.slot_map())  # placed right: nothing moves
            await asyncio.sleep(0.3)
            assert changes == [True, False, True]
        finally:
            stop.set()
            await runner


@pytest.mark.parametrize("empty_cluster", ["sharded"], indirect=True)
async def test_a_connection_whose_sunsubscribe_went_unanswered_is_given_up(
    empty_cluster: LocalCluster,
) -> None:
    """Its other channels move to a new connection (live again: their watchers resync), rather
    than stay where a later SUNSUBSCRIBE from Redis (the slot leaving) would pass for ours."""
    cluster = empty_cluster
    leaving, staying = keys.screening_events(SHOW), ""
    primary = cluster.port_of_slot(cluster.keyslot(leaving))
    for show in range(SHOW + 1, SHOW + 1000):  # another screening on the same primary
        channel = keys.screening_events(show)
        if cluster.port_of_slot(cluster.keyslot(channel)) == primary:
            staying = channel
            break
    changes: list[tuple[str, bool]] = []
    async with transport_of(cluster) as transport:
        shards = ShardChannels(transport, lambda _: None, lambda c, live: changes.append((c, live)))
        stop = asyncio.Event()
        runner = asyncio.create_task(shards.run(stop))
        try:
            await asyncio.wait_for(shards.confirmed(leaving), 5)
            await asyncio.wait_for(shards.confirmed(staying), 5)
            feed = shards._placed[staying]

            async def unanswered(*channels: str) -> None:
                raise TimeoutError

            feed._pubsub.sunsubscribe = unanswered  # type: ignore[method-assign]
            shards.release(leaving)
            await wait_until(lambda: changes[-2:] == [(staying, False), (staying, True)], 5)
            assert shards._placed[staying] is not feed
            assert shards.is_live(staying) and not shards.is_live(leaving)
            # The connection given up is closed: its subscriptions went with it.
            await wait_until(lambda: subscribers(cluster, primary, leaving) == 0, 5)
            assert subscribers(cluster, primary, staying) == 1
        finally:
            stop.set()
            await runner
