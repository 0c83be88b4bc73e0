"""SEATLOCK_REDIS_URL in cluster form: parsed in one place, refused at start-up when wrong."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from seatlock.server.wiring import redis_client
from seatlock.settings import ClusterURL, Settings, is_cluster_url, redis_cluster_nodes


def test_cluster_urls_name_their_seed_nodes() -> None:
    assert redis_cluster_nodes("redis+cluster://10.0.0.1:7000,10.0.0.2:7001") == ClusterURL(
        nodes=(("10.0.0.1", 7000), ("10.0.0.2", 7001))
    )
    tls = redis_cluster_nodes("rediss+cluster://app:p%40ss@[::1]:7000/0")
    assert tls == ClusterURL(nodes=(("::1", 7000),), username="app", password="p@ss", tls=True)
    assert "p@ss" not in repr(tls)  # never in a log line
    assert redis_cluster_nodes("redis://127.0.0.1:6379/0") is None
    assert redis_cluster_nodes("") is None
    assert is_cluster_url("REDIS+CLUSTER://h:1") and not is_cluster_url("redis://h:1")


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("redis+cluster://h1", "is not a cluster seed host:port"),
        ("redis+cluster://h1:7000,", "is not a cluster seed host:port"),
        ("redis+cluster://h1:99999", "is not a cluster seed host:port"),
        ("redis+cluster://h1:7000/2", "database 0 only"),
        ("http://h1:7000", "the scheme must be one of"),
        ("localhost:6379", "the scheme must be one of"),
    ],
)
def test_bad_urls_are_refused_at_start_up(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Settings(redis_url=url)
    with pytest.raises(ValueError, match=error):
        Settings.from_env({"SEATLOCK_REDIS_URL": url})


async def test_the_app_client_follows_the_scheme() -> None:
    cluster = redis_client(Settings(redis_url="redis+cluster://127.0.0.1:7000,127.0.0.1:7001"))
    single = redis_client(Settings(redis_url="redis://127.0.0.1:6379/0"))
    try:
        assert isinstance(cluster, RedisCluster)
        seeds = {(n.host, int(n.port)) for n in cluster.nodes_manager.startup_nodes.values()}
        assert seeds == {("127.0.0.1", 7000), ("127.0.0.1", 7001)}
        assert isinstance(single, Redis)
    finally:
        await cluster.aclose()
        await single.aclose()
