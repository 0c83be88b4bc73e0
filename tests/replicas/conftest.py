"""A Redis primary with one replica for the tests of ``SEATLOCK_HOLD_REPLICAS``, started once per
session and only when one of them runs; every test starts from an empty pair, replica running."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from seatlock.server.redisnodes import scratch_root
from seatlock.settings import Settings
from tests.replicas.local import ReplicatedRedis
from tests.support import LiveServer

TIMEOUT_MS = 200  # SEATLOCK_HOLD_REPLICAS_TIMEOUT_MS of the servers here


@pytest.fixture(scope="session")
def replicated() -> Iterator[ReplicatedRedis]:
    with ReplicatedRedis(scratch_root("seatlock-replicas-")) as pair:
        yield pair


@pytest.fixture
def pair(replicated: ReplicatedRedis) -> Iterator[ReplicatedRedis]:
    replicated.flush()
    try:
        yield replicated
    finally:
        if replicated.paused:
            replicated.resume()


@pytest.fixture(scope="session", params=["fast", "redis-py"])
def replica_server(
    request: pytest.FixtureRequest, base_settings: Settings, replicated: ReplicatedRedis
) -> Iterator[LiveServer]:
    """The app on the primary, waiting for one replica, with either single-node transport."""
    settings = base_settings.replace(
        redis_url=replicated.url,
        redis_transport=request.param,
        hold_replicas=1,
        hold_replicas_timeout_ms=TIMEOUT_MS,
    )
    live = LiveServer(settings)
    live.start()
    yield live
    live.stop()


@pytest.fixture
async def rclient(
    replica_server: LiveServer, pair: ReplicatedRedis
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=replica_server.url, timeout=15) as c:
        yield c
