"""Two API hosts whose clocks are 5 s ahead and 5 s behind (SEATLOCK_CLOCK_OFFSET_MS) against one
Redis and PostgreSQL behave as one: holds end at the same Redis time through either, an extension
through the other gives the same deadline, watchers on both see the same expires_at, and the
sweep of the host ahead frees nothing early (seatlock/engine/clock.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from redis.asyncio import Redis

from seatlock import keys
from seatlock.services.container import Services
from tests import factories as make
from tests.support import RESERVE, LiveServer, availability, held_in_redis, wait_for_status, watch

SKEW_MS = 5_000
SLACK_MS = 5  # the offsets' error on loopback, and rounding to whole ms
EXTEND = "/api/v1/seat-reservations/extend"


async def redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def at_ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def services_of(server: LiveServer) -> Services:
    """The running app's services (the test looks at the host's clock itself)."""
    services: Services = server._server.config.app.state.services
    return services


@pytest.fixture
def hosts(make_server: Any) -> tuple[LiveServer, LiveServer]:
    ahead = make_server(clock_offset_ms=SKEW_MS, sweep_interval_seconds=0.2)
    behind = make_server(clock_offset_ms=-SKEW_MS, sweep_interval_seconds=0.2)
    return ahead, behind


@pytest.fixture
async def clients(hosts: tuple[LiveServer, LiveServer]) -> AsyncIterator[list[httpx.AsyncClient]]:
    made = [httpx.AsyncClient(base_url=server.url) for server in hosts]
    yield made
    for client in made:
        await client.aclose()


def test_each_host_runs_on_its_skewed_clock(hosts: tuple[LiveServer, LiveServer]) -> None:
    for server, skew in zip(hosts, (SKEW_MS, -SKEW_MS), strict=True):
        clock = services_of(server).engine.clock
        assert clock.synced
        assert abs(clock.local_ms() - time.time() * 1000 - skew) < SLACK_MS
        assert abs(clock.offset_ms + skew) < SLACK_MS  # Redis runs on this machine's clock


async def test_holds_end_extend_and_show_at_the_same_redis_time(
    hosts: tuple[LiveServer, LiveServer],
    clients: list[httpx.AsyncClient],
    db: asyncpg.Connection,
    redis: Redis,
) -> None:
    show = await make.show(db, 3)
    seats = show.seat_ids[:2]
    users = await make.sessions(db, hosts[0].settings.jwt_secret, 2)
    hold_ms = hosts[0].settings.hold_seconds * 1000
    watchers = [await watch(server, show.id) for server in hosts]
    try:
        deadlines = []
        for client, headers, seat in zip(clients, users, seats, strict=True):
            before = await redis_ms(redis)
            body = {"screening_id": show.id, "seat_ids": [seat]}
            r = await client.post(RESERVE, json=body, headers=headers)
            after = await redis_ms(redis)
            assert r.status_code == 201, r.text
            expires = at_ms(r.json()["reservations"][0]["expires_at"])
            assert before + hold_ms - SLACK_MS <= expires <= after + hold_ms + SLACK_MS
            await lease_ends_at(redis, show.id, seat, expires, after - before)
            for ws in watchers:
                update = (await wait_for_status(ws, [seat], "reserved"))[seat]
                assert at_ms(update["expires_at"]) == expires
                assert before - SLACK_MS <= at_ms(update["timestamp"]) <= after + SLACK_MS
            deadlines.append(expires)
        # The first user's hold, extended through the other host: the same deadline.
        body = {"screening_id": show.id, "seat_ids": [seats[0]]}
        before = await redis_ms(redis)
        r = await clients[1].post(
            EXTEND, params={"additional_minutes": 1}, json=body, headers=users[0]
        )
        after = await redis_ms(redis)
        assert r.status_code == 200, r.text
        extended = at_ms(r.json()["reservations"][0]["expires_at"])
        assert extended == deadlines[0] + 60_000
        await lease_ends_at(redis, show.id, seats[0], extended, after - before)
        for ws in watchers:
            update = (await wait_for_status(ws, [seats[0]], "reserved"))[seats[0]]
            assert at_ms(update["expires_at"]) == extended
        maps = [await availability(client, show) for client in clients]
        assert maps[0] == maps[1]
        shown = [at_ms(maps[0][seat]["expires_at"]) for seat in seats]
        assert shown == [extended, deadlines[1]]
    finally:
        for ws in watchers:
            await ws.close()


async def lease_ends_at(
    redis: Redis, screening_id: int, seat: int, deadline: int, late_ms: int
) -> None:
    """The seat's lease expires at ``deadline`` on Redis's clock, or up to ``late_ms`` after it:
    its TTL runs from when the script ran, the deadline from when the request read the clock (a
    first hold loads the screening from PostgreSQL in between). Scripts end the hold at the
    deadline whatever the lease says (lua/lib.lua, owned_lease)."""
    ends = await lease_end(redis, keys.seat_hold(screening_id, seat))
    assert deadline - SLACK_MS <= ends <= deadline + late_ms + SLACK_MS


async def lease_end(redis: Redis, key: str) -> int:
    """When ``key`` expires on Redis's clock (TIME and PTTL read in one step)."""
    async with redis.pipeline(transaction=True) as pipe:
        (seconds, micros), ttl = await pipe.time().pttl(key).execute()
    return int(seconds) * 1000 + int(micros) // 1000 + int(ttl)


async def test_the_host_ahead_sweeps_no_hold_early(
    make_server: Any, db: asyncpg.Connection, redis: Redis
) -> None:
    # Held for 4 s: on its own clock the host ahead would sweep it after 1 s.
    ahead = make_server(clock_offset_ms=SKEW_MS, hold_seconds=4, sweep_interval_seconds=0.1)
    behind = make_server(clock_offset_ms=-SKEW_MS, hold_seconds=4)
    show = await make.show(db, 2)
    seat = show.seat_ids[0]
    [headers] = await make.sessions(db, ahead.settings.jwt_secret, 1)
    ws = await watch(ahead, show.id)
    try:
        async with httpx.AsyncClient(base_url=behind.url) as client:
            body = {"screening_id": show.id, "seat_ids": [seat]}
            r = await client.post(RESERVE, json=body, headers=headers)
            assert r.status_code == 201, r.text
        expires = at_ms(r.json()["reservations"][0]["expires_at"])
        await wait_for_status(ws, [seat], "reserved")
        with pytest.raises(TimeoutError):
            await wait_for_status(ws, [seat], "available", within=2.0)
        assert list(await held_in_redis(redis, show)) == [seat]
        # Freed once the lease lapses on Redis's clock (by the listener or either sweep).
        freed = await wait_for_status(ws, [seat], "available", within=4.0)
        assert at_ms(freed[seat]["timestamp"]) >= expires
    finally:
        await ws.close()


async def test_a_pong_carries_redis_time(
    hosts: tuple[LiveServer, LiveServer], db: asyncpg.Connection, redis: Redis
) -> None:
    show = await make.show(db, 1)
    for server in hosts:
        ws = await watch(server, show.id)
        try:
            before = await redis_ms(redis)
            await ws.send("ping")
            pong = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            after = await redis_ms(redis)
        finally:
            await ws.close()
        assert pong["type"] == "pong"
        assert before - SLACK_MS <= at_ms(pong["timestamp"]) <= after + SLACK_MS
