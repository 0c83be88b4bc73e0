"""``/ws/stats`` counts the WebSockets of every server process sharing the Redis: each keeps an
entry there with a short TTL, a dead one's entry expires, a stopped one removes its own."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import websockets
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine.events import STATS_INTERVAL_S, STATS_TTL_MS, Hub
from seatlock.engine.transport import open_transport
from seatlock.server.workers import can_share_port
from seatlock.settings import Settings
from tests import factories as make
from tests.api.test_backends_down import Gate
from tests.support import LiveServer, Served, backends_of, scratch_dir, serving

TTL_S = STATS_TTL_MS / 1000
FOLLOWS_S = STATS_INTERVAL_S + 1.0  # a change shows within one refresh, with slack for a busy box


async def eventually(
    read: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], within: float
) -> Any:
    """The first value of ``read()`` that passes ``check``, polled for ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await read()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r} after {within} s"
        await asyncio.sleep(0.05)


async def ws_stats(url: str) -> dict[str, Any]:
    # A new connection each time: with several workers, any of them may answer.
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        r = await client.get("/ws/stats")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def watching(url: str, screening_id: int) -> int:
    return int((await ws_stats(url))["screening_details"].get(str(screening_id), 0))


async def entries(redis: Redis) -> dict[str, dict[str, int]]:
    """Every published entry: process id -> watchers per screening."""
    members = sorted(_text(m) for m in await redis.smembers(keys.WS_STATS_PROCESSES))
    values = await redis.mget([keys.ws_stats_entry(m) for m in members]) if members else []
    return {m: orjson.loads(v) for m, v in zip(members, values, strict=True) if v is not None}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def pid_of(process_id: str) -> int:
    return int(process_id.split(":")[-2])


async def worker_entries(redis: Redis) -> dict[str, dict[str, int]]:
    """The entries of other processes than this one (the suite's in-process servers)."""
    return {p: e for p, e in (await entries(redis)).items() if pid_of(p) != os.getpid()}


# -- the real CLI with two workers ---------------------------------------------------------------


@pytest.fixture
def two_workers(base_settings: Settings) -> Iterator[Served]:
    """``seatlock serve`` with SEATLOCK_WORKERS=2, in a process group of its own."""
    with (
        scratch_dir("seatlock-ws-stats-") as data_dir,
        serving(
            data_dir, group=True, workers=2, log_level="warning", **backends_of(base_settings)
        ) as served,
    ):
        yield served


@pytest.mark.skipif(not can_share_port(), reason="needs SO_REUSEPORT")
async def test_two_workers_report_every_connection_and_drop_a_dead_one(
    two_workers: Served, db: asyncpg.Connection, redis: Redis
) -> None:
    url, show = two_workers.url, await make.show(db, 1)
    await eventually(lambda: worker_entries(redis), lambda e: len(e) == 2, 30)

    async def listening() -> set[int]:
        return two_workers.listening()

    await eventually(listening, lambda workers: len(workers) == 2, 30)
    sockets = [
        await websockets.connect(f"{two_workers.ws_url}/ws/screenings/{show.id}") for _ in range(40)
    ]
    try:
        for ws in sockets:
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == (
                "connection_confirmed"
            )
        shares = await _shares(redis, show.id, 40)
        assert len(shares) == 2 and min(shares.values()) > 0, shares  # SO_REUSEPORT spread them
        # Whichever worker answers reports all 40: its own live, the other's from Redis.
        for _ in range(8):
            assert await watching(url, show.id) == 40

        for ws in sockets[:10]:
            await ws.close()
        started = time.monotonic()
        await eventually(lambda: watching(url, show.id), lambda n: n == 30, FOLLOWS_S)
        assert time.monotonic() - started < FOLLOWS_S
        shares = await _shares(redis, show.id, 30)

        victim = min(shares, key=shares.__getitem__)
        survivors = 30 - shares[victim]
        os.kill(pid_of(victim), signal.SIGKILL)
        killed = time.monotonic()
        entry = keys.ws_stats_entry(victim)
        await eventually(lambda: redis.exists(entry), lambda n: n == 0, TTL_S + 1)
        assert time.monotonic() - killed <= TTL_S + 0.5
        await eventually(lambda: watching(url, show.id), lambda n: n == survivors, 5)
        assert victim.encode() not in await redis.smembers(keys.WS_STATS_PROCESSES)
        # The supervisor's new worker publishes an entry of its own, with nobody watching.
        fresh = await eventually(
            lambda: worker_entries(redis), lambda e: len(e) == 2 and victim not in e, 30
        )
        assert all(str(show.id) not in e for p, e in fresh.items() if p not in shares)
    finally:
        for ws in sockets:
            await ws.close()

    workers = set(await worker_entries(redis))
    os.killpg(two_workers.proc.pid, signal.SIGINT)  # a clean stop: each removes its entry
    assert await asyncio.to_thread(two_workers.proc.wait, 20) == 0
    assert not workers & set(await entries(redis))
    for process_id in workers:
        assert not await redis.exists(keys.ws_stats_entry(process_id))


async def _shares(redis: Redis, screening_id: int, total: int) -> dict[str, int]:
    """Watchers of the screening per worker, once the workers' entries add up to ``total``."""

    def share(all_entries: dict[str, dict[str, int]]) -> dict[str, int]:
        return {p: e[str(screening_id)] for p, e in all_entries.items() if str(screening_id) in e}

    found = await eventually(
        lambda: worker_entries(redis), lambda e: sum(share(e).values()) == total, FOLLOWS_S
    )
    return share(found)


# -- two servers in this process, and Redis down -------------------------------------------------


async def test_a_server_counts_the_watchers_of_another(
    make_server: Callable[..., LiveServer], db: asyncpg.Connection
) -> None:
    first, second = make_server(), make_server()
    show = await make.show(db, 1)
    sockets = [
        await websockets.connect(f"{s.ws_url}/ws/screenings/{show.id}")
        for s in (first, first, second)
    ]
    try:
        for server in (first, second):
            await eventually(partial(watching, server.url, show.id), lambda n: n == 3, FOLLOWS_S)
        await sockets[0].close()
        for server in (first, second):
            await eventually(partial(watching, server.url, show.id), lambda n: n == 2, FOLLOWS_S)
    finally:
        for ws in sockets:
            await ws.close()


async def test_redis_down_is_503_with_retry_after(
    make_server: Callable[..., LiveServer], base_settings: Settings
) -> None:
    gate = Gate(base_settings.redis_url)
    try:
        live = make_server(redis_url=gate.url)
        assert (await ws_stats(live.url))["total_connections"] >= 0
        gate.shut()
        async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
            r = await client.get("/ws/stats")
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert "detail" in r.json()
    finally:
        gate.stop()


# -- the hub's entry in Redis ---------------------------------------------------------------------


async def test_an_entry_lives_while_its_hub_publishes_and_goes_when_it_stops(redis: Redis) -> None:
    publisher, reader = Hub(open_transport("fast", redis)), Hub(open_transport("fast", redis))
    publisher.join(7, None), publisher.join(7, 3), publisher.join(8, None)
    reader.join(8, None)
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.publish_stats(stop))
    entry = keys.ws_stats_entry(publisher.process_id)
    try:
        await eventually(lambda: redis.exists(entry), lambda n: n == 1, 2)
        assert 0 < await redis.pttl(entry) <= STATS_TTL_MS
        assert await reader.service_stats() == {
            "total_connections": 4,
            "active_screenings": [7, 8],
            "screening_details": {"7": 2, "8": 2},
        }
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert not await redis.exists(entry)
    assert not await redis.sismember(keys.WS_STATS_PROCESSES, publisher.process_id)
    assert (await reader.service_stats())["screening_details"] == {"8": 1}


async def test_a_process_whose_entry_expired_is_pruned_and_a_bad_entry_ignored(
    redis: Redis,
) -> None:
    hub = Hub(open_transport("fast", redis))
    await redis.sadd(keys.WS_STATS_PROCESSES, "dead:1:00", "odd:2:00")
    await redis.set(keys.ws_stats_entry("odd:2:00"), b"[1, 2]", px=STATS_TTL_MS)
    assert (await hub.service_stats())["total_connections"] == 0
    # Another test's live server may register its own entry meanwhile: only these two count.
    members = await redis.smembers(keys.WS_STATS_PROCESSES)
    assert b"dead:1:00" not in members and b"odd:2:00" in members, members
