"""Replicas on Redis Cluster (the 3-primary, 3-replica cluster of tests/cluster): WAIT has no key,
so the cluster transport sends it to the screening's primary by ``target_nodes``, in that node's
share of the pipeline. A paused replica makes holds of its primary's screenings 503 (their seats
free again) while the other primaries' screenings keep working."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.asyncio.cluster import RedisCluster

from seatlock import keys
from seatlock.engine.cluster import ClusterTransport
from seatlock.engine.seats import ReplicasBehind, SeatEngine
from seatlock.engine.transport import Replicas
from seatlock.server.localcluster import LocalCluster
from tests.cluster.conftest import (  # noqa: F401  (the cluster fixtures, shared)
    cluster_redis,
    cluster_transports,
    ctransport,
    empty_cluster,
    local_cluster,
    one_per_primary,
)
from tests.lua.support import DictSource
from tests.replicas.conftest import TIMEOUT_MS

ALICE = 7


@pytest.fixture
def shows(empty_cluster: LocalCluster) -> list[int]:  # noqa: F811
    return one_per_primary(empty_cluster)


@pytest.fixture
def engine(ctransport: ClusterTransport, shows: list[int]) -> SeatEngine:  # noqa: F811
    source = DictSource()
    for screening_id in shows:
        source.add(screening_id, [1, 2, 3, 4])
    return SeatEngine(
        ctransport,
        source,
        hold_ms=300_000,
        max_hold_ms=1_800_000,
        max_seats_per_user=10,
        replicas=Replicas(1, TIMEOUT_MS),
    )


def replica_port(cluster: LocalCluster, primary: int) -> int:
    """The port of the replica of the primary on ``primary`` (seatlock/server/localcluster.py
    pairs the i-th replica with the i-th primary)."""
    return cluster.ports[cluster.primaries + cluster.primary_ports.index(primary)]


@pytest.fixture
def paused_first(empty_cluster: LocalCluster) -> Iterator[int]:  # noqa: F811
    """Pause (SIGSTOP) the replica of the first primary, briefly: well under the node timeout."""
    pid = empty_cluster.procs[empty_cluster.primaries].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield empty_cluster.primary_ports[0]
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_holds_on_every_primary_are_on_its_replica_when_answered(
    engine: SeatEngine,
    shows: list[int],
    empty_cluster: LocalCluster,  # noqa: F811
) -> None:
    for screening_id in shows:
        await engine.hold(screening_id, ALICE, [1, 2])
        port = empty_cluster.port_of_slot(empty_cluster.keyslot(keys.screening_meta(screening_id)))
        with Redis(port=replica_port(empty_cluster, port)) as replica:
            replica.execute_command("READONLY")
            assert replica.get(keys.seat_hold(screening_id, 2)) is not None


async def test_a_paused_replica_fails_only_its_primarys_holds(
    engine: SeatEngine, shows: list[int], paused_first: int
) -> None:
    stalled, *others = shows  # one_per_primary: in the order of the primaries
    with pytest.raises(ReplicasBehind):
        await engine.hold(stalled, ALICE, [1, 2])
    states = {st.seat_id: st.status for st in await engine.seat_map(stalled)}
    assert set(states.values()) == {"available"}
    for screening_id in others:
        assert [h.seat_id for h in await engine.hold(screening_id, ALICE, [1])] == [1]


async def test_the_first_call_of_a_new_transport_gets_its_wait(
    engine: SeatEngine,
    shows: list[int],
    cluster_redis: RedisCluster,  # noqa: F811
    cluster_transports: list[ClusterTransport],  # noqa: F811
) -> None:
    """A call made before the transport has a slot map (a process's first) is sent to the
    primary of its slot once the map is read, and its WAIT with it: not refused as if no
    replica had confirmed it."""
    for screening_id in shows:  # loaded (by another process, as it were)
        await engine.hold(screening_id, ALICE, [1])
    for screening_id in shows:
        fresh = ClusterTransport.like(cluster_redis)
        cluster_transports.append(fresh)
        other = SeatEngine(
            fresh,
            DictSource(),
            hold_ms=300_000,
            max_hold_ms=1_800_000,
            max_seats_per_user=10,
            replicas=Replicas(1, TIMEOUT_MS),
        )
        held = await other.hold(screening_id, ALICE + 1, [3])
        assert [h.seat_id for h in held] == [3]
