"""Invariant 8 for expiries: the keyspace listener frees a lapsed hold within about a second, and
the sweep does it when the listener missed it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine.errors import HoldExpired
from seatlock.engine.expiry import (
    _with_expired_events,
    enable_keyspace_events,
    listen_for_expiries,
    sweep_forever,
)
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from tests.lua.support import DictSource, Transports, engine_url, make_engine, tap

S = 801
ALICE, BOB = 7, 8
AVAILABLE = {"seat_id": 1, "status": "available", "user_id": None, "expires_at": None}


@pytest.fixture
def engine(transport: Transport) -> SeatEngine:
    source = DictSource()
    source.add(S, [1, 2, 3])
    return make_engine(transport, source, hold_ms=300)


@pytest.fixture
async def listener(
    engine: SeatEngine, backend_urls: tuple[str, str], transports: Transports
) -> AsyncIterator[asyncio.Event]:
    """Listening on a transport of its own, made from a URL (as a server process would)."""
    stop = asyncio.Event()
    client = Redis.from_url(engine_url(backend_urls[0]))
    task = asyncio.create_task(listen_for_expiries(engine, transports(client), stop))
    await asyncio.sleep(0.1)  # subscribed
    yield stop
    stop.set()
    await asyncio.wait_for(task, 3)
    await client.aclose()


def test_flags_keep_what_was_there() -> None:
    assert _with_expired_events("") == "Ex"
    assert _with_expired_events("Kg") == "KgEx"
    assert _with_expired_events("AKE") == "AKE"


async def test_enable_keyspace_events(redis: Redis, transport: Transport) -> None:
    assert await enable_keyspace_events(transport)
    flags = (await redis.config_get("notify-keyspace-events"))["notify-keyspace-events"]
    assert "E" in flags and ("x" in flags or "A" in flags)


async def test_listener_publishes_expiry_and_claim_fails(
    redis: Redis, engine: SeatEngine, listener: asyncio.Event
) -> None:
    assert await enable_keyspace_events(engine.transport)
    await engine.hold(S, ALICE, [1])
    async with tap(redis, S) as events:
        await asyncio.sleep(0.6)
        event = await events.next(within=1.0)
    assert event["seats"] == [AVAILABLE]
    assert await redis.hlen(keys.screening_holds(S)) == 0
    with pytest.raises(HoldExpired):
        await engine.claim(S, ALICE, [1])
    assert (await engine.hold(S, BOB, [1]))[0].user_id == BOB


async def test_without_listener_the_sweep_frees_the_seat(redis: Redis, engine: SeatEngine) -> None:
    await engine.hold(S, ALICE, [1])
    async with tap(redis, S) as events:
        await asyncio.sleep(0.6)
        await events.none(0.05)  # nobody turned the expiry into an event
        states = await engine.seat_map(S)
        assert states[0].status == "available"  # but reads never show a lapsed hold
        assert await engine.sweep() == 1
        event = await events.next()
    assert event["seats"] == [AVAILABLE]
    assert await engine.sweep() == 0
    with pytest.raises(HoldExpired):
        await engine.claim(S, ALICE, [1])


async def test_sweep_forever_runs_until_stopped(redis: Redis, engine: SeatEngine) -> None:
    await engine.hold(S, ALICE, [1, 2])
    stop = asyncio.Event()
    async with tap(redis, S) as events:
        task = asyncio.create_task(sweep_forever(engine, 0.1, stop))
        event = await events.next(within=2.0)
        stop.set()
        await asyncio.wait_for(task, 1)
    assert [seat["seat_id"] for seat in event["seats"]] == [1, 2]


async def test_listener_ignores_other_keys_and_stops(redis: Redis, engine: SeatEngine) -> None:
    assert await enable_keyspace_events(engine.transport)
    stop = asyncio.Event()
    task = asyncio.create_task(listen_for_expiries(engine, engine.transport, stop))
    await redis.set("unrelated", "1", px=50)
    await engine.hold(S, ALICE, [2])
    async with tap(redis, S) as events:
        event = await events.next(within=2.0)
    assert event["seats"][0]["seat_id"] == 2
    stop.set()
    # At once, not at the end of its wait for the next expiry (0.5 s): a shutdown waits for it.
    await asyncio.wait_for(task, 0.25)
    assert (await engine.hold(S, ALICE, [3]))[0].seat_id == 3  # the transport still works


async def test_listener_resubscribes_after_losing_its_connection(
    redis: Redis, engine: SeatEngine, listener: asyncio.Event
) -> None:
    assert await enable_keyspace_events(engine.transport)
    assert await redis.client_kill_filter(_type="pubsub") >= 1
    await asyncio.sleep(0.3)  # reconnected (first retry after 0.1 s)
    await engine.hold(S, ALICE, [3])
    async with tap(redis, S) as events:
        event = await events.next(within=2.0)
    assert event["seats"] == [{**AVAILABLE, "seat_id": 3}]
