"""A local Redis Cluster (3 primaries, 3 replicas) for the cluster tests, started once per session
and only when one of them runs; every test starts from an empty cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from seatlock import keys
from seatlock.engine.cluster import ClusterTransport
from seatlock.server.localcluster import LocalCluster
from seatlock.server.redisnodes import scratch_root


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(scratch_root("seatlock-cluster-")) as cluster:
        yield cluster


@pytest.fixture
def empty_cluster(local_cluster: LocalCluster) -> LocalCluster:
    local_cluster.flush()
    return local_cluster


@pytest.fixture
async def cluster_redis(empty_cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    """A client of the empty cluster, as the app builds one (seatlock/server/wiring.py)."""
    seeds = [ClusterNode("127.0.0.1", port) for port in empty_cluster.primary_ports]
    client = RedisCluster(startup_nodes=seeds)
    yield client
    await client.aclose()


@pytest.fixture
async def cluster_transports(
    cluster_redis: RedisCluster,
) -> AsyncIterator[list[ClusterTransport]]:
    """Cluster transports made with ``make()``: one per engine that stands for a process."""
    made: list[ClusterTransport] = []
    yield made
    for transport in made:
        await transport.aclose()


@pytest.fixture
def ctransport(
    cluster_redis: RedisCluster, cluster_transports: list[ClusterTransport]
) -> ClusterTransport:
    cluster_transports.append(ClusterTransport.like(cluster_redis))
    return cluster_transports[-1]


def one_per_primary(cluster: LocalCluster, first: int = 1000) -> list[int]:
    """Screening ids from ``first`` on whose hash tags land on each primary in turn, checked
    against the node map (CLUSTER KEYSLOT, CLUSTER SLOTS)."""
    found: dict[int, int] = {}
    candidate = first
    while len(found) < cluster.primaries:
        port = cluster.port_of_slot(cluster.keyslot(keys.screening_meta(candidate)))
        found.setdefault(port, candidate)
        candidate += 1
    return [found[port] for port in cluster.primary_ports]
