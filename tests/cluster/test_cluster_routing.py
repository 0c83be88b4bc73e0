"""How the cluster transport sends a script: to the primary of its screening's slot by name
(seatlock/engine/cluster.py ``_queue_script``), after a MOVED by its keys to the new owner, packed
by hiredis in one call (``PackedConnection``)."""

from __future__ import annotations

import pytest
from redis.asyncio import Connection
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import DataError

from seatlock import keys
from seatlock.engine.cluster import ClusterTransport, PackedConnection
from seatlock.server.localcluster import LocalCluster
from tests.cluster.conftest import one_per_primary
from tests.lua.support import DictSource, make_engine

ALICE = 7


def move_empty_slot(cluster: LocalCluster, slot: int, source: int, target: int) -> None:
    """Give an empty slot to another primary, as a resharding does (IMPORTING, MIGRATING, then
    NODE on both and the other primaries), with no keys to migrate; replicas hear of it."""
    target_id, source_id = cluster.node_id(target), cluster.node_id(source)
    with cluster.client(target) as node:
        node.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
    with cluster.client(source) as node:
        node.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
    for port in [
        target,
        source,
        *(p for p in cluster.current_primaries() if p not in (target, source)),
    ]:
        with cluster.client(port) as node:
            node.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
    cluster._wait(lambda: cluster.primary_of_slot(slot) == target, "the slot to move")


async def test_a_script_follows_its_slot_to_a_new_primary(
    empty_cluster: LocalCluster, ctransport: ClusterTransport
) -> None:
    first, moved, _ = one_per_primary(empty_cluster)
    source = DictSource()
    for screening_id in (first, moved):
        source.add(screening_id, [1, 2, 3, 4])
    engine = make_engine(ctransport, source)
    await engine.hold(first, ALICE, [1])  # the transport has its slot map now
    key = keys.screening_meta(moved)
    slot = empty_cluster.keyslot(key)
    old = empty_cluster.port_of_slot(slot)
    new = empty_cluster.port_of_slot(empty_cluster.keyslot(keys.screening_meta(first)))
    assert ctransport.client.get_node_from_key(key).port == old  # type: ignore[union-attr]
    move_empty_slot(empty_cluster, slot, old, new)
    try:
        # Sent to the old owner by name, answered MOVED, sent again by its keys.
        assert [h.seat_id for h in await engine.hold(moved, ALICE, [2, 3])] == [2, 3]
        assert ctransport.client.get_node_from_key(key).port == new  # type: ignore[union-attr]
        with empty_cluster.client(new) as node:
            assert node.exists(key) == 1
        with empty_cluster.client(old) as node:
            assert node.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0
        assert await engine.release(moved, ALICE, [2]) == [2]  # straight to the new owner
    finally:
        empty_cluster.flush()
        move_empty_slot(empty_cluster, slot, new, old)


@pytest.mark.parametrize("wired", [True, False], ids=["fast", "redis-py"])
async def test_the_fast_transport_sends_scripts_on_connections_of_its_own(
    empty_cluster: LocalCluster, cluster_redis: RedisCluster, wired: bool
) -> None:
    """SEATLOCK_REDIS_TRANSPORT=fast on a cluster: once the slot map is read, a script goes to
    its primary on the transport's own connection to that node, never in a cluster pipeline
    (what redis-py's pipelines cost is what it saves); redis-py's sends them in pipelines."""
    shows = one_per_primary(empty_cluster)
    source = DictSource()
    for show in shows:
        source.add(show, [1, 2])
    transport = ClusterTransport.like(cluster_redis, wired=wired)
    pipelines: list[object] = []
    made = transport.client.pipeline

    def counted(*args: object, **kwargs: object) -> object:
        pipelines.append(args)
        return made(*args, **kwargs)  # type: ignore[arg-type]

    try:
        engine = make_engine(transport, source)
        for show in shows:  # loaded, slot map read, scripts known
            await engine.hold(show, ALICE, [1])
        transport.client.pipeline = counted  # type: ignore[method-assign]
        for show in shows:
            assert [h.seat_id for h in await engine.hold(show, ALICE, [2])] == [2]
            assert await engine.release(show, ALICE, [1, 2]) == [1, 2]
        assert (len(pipelines) == 0) == wired, len(pipelines)
    finally:
        await transport.aclose()
        empty_cluster.flush()


async def test_every_node_connection_packs_with_hiredis(
    empty_cluster: LocalCluster, ctransport: ClusterTransport
) -> None:
    """redis-py 8.x makes node connections from ``connection_kwargs``: when it stops, this fails
    (the transport would still work, at redis-py's packing cost)."""
    engine = make_engine(ctransport, DictSource())
    await engine.loaded_screenings()
    await ctransport.primaries()
    nodes = ctransport.client.get_nodes()
    assert nodes and all(node.connection_class is PackedConnection for node in nodes)
    used = [c for node in nodes for c in node._connections]
    assert used and all(isinstance(c, PackedConnection) for c in used)


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "ab" * 20, 2, "sl:{scr:1}:meta", b"raw", 17, -3, 2**70, "grant-é"),
        ("SET", "k", 1.5),
        ("SET", "k", 1e20),
        ("CLUSTER SLOTS",),
        (b"CLUSTER SLOTS",),
        ("SET", "k", memoryview(b"v")),
    ],
)
def test_hiredis_packs_like_redis_py(args: tuple[object, ...]) -> None:
    packed = b"".join(PackedConnection().pack_command(*args))  # type: ignore[arg-type]
    assert packed == b"".join(Connection().pack_command(*args))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [True, None, object()])
def test_what_hiredis_refuses_redis_py_refuses(bad: object) -> None:
    with pytest.raises(DataError):
        PackedConnection().pack_command("SET", "k", bad)  # type: ignore[arg-type]
