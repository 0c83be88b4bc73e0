"""Invariant 8 for expiries: the keyspace listener frees a lapsed hold within about a second, and
the sweep does it when the listener missed it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine import expiry
from seatlock.engine.errors import HoldExpired
from seatlock.engine.expiry import (
    Lapsed,
    _free_lapsed,
    _with_expired_events,
    enable_keyspace_events,
    listen_for_expiries,
    sweep_forever,
)
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from tests.lua.support import DictSource, Transports, engine_url, make_engine, tap

S, T = 801, 802
ALICE, BOB = 7, 8
AVAILABLE = {"seat_id": 1, "status": "available", "user_id": None, "expires_at": None}


@pytest.fixture
def engine(transport: Transport) -> SeatEngine:
    source = DictSource()
    source.add(S, [1, 2, 3])
    source.add(T, [1, 2, 3])
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


def test_lapsed_keeps_each_lease_once_and_nothing_else() -> None:
    lapsed = Lapsed()
    for key in ("sl:session:abc", "sl:{scr:801}:meta", b"unrelated"):
        lapsed.add(key)
    assert not lapsed.ready.is_set() and lapsed.seats == {}  # sessions, throttles: not kept
    for key in (keys.seat_hold(S, 1), keys.seat_hold(S, 1).encode(), keys.seat_hold(T, 2)):
        lapsed.add(key)
    assert lapsed.ready.is_set() and lapsed.count == 2
    assert lapsed.take() == ({S: {1}, T: {2}}, False)
    assert not lapsed.ready.is_set() and lapsed.seats == {} and lapsed.count == 0


async def test_a_burst_of_lapsed_holds_goes_in_one_event_per_screening(
    redis: Redis, engine: SeatEngine
) -> None:
    await engine.hold(S, ALICE, [1, 2, 3])
    await engine.hold(T, BOB, [1, 2])
    lapsed = Lapsed()
    for screening, seat in ((S, 1), (S, 3), (T, 1), (T, 2), (S, 3)):
        await redis.delete(keys.seat_hold(screening, seat))  # their TTLs ran out
        lapsed.add(keys.seat_hold(screening, seat))
    async with tap(redis, S) as at_s, tap(redis, T) as at_t:
        await _free_lapsed(engine, lapsed)
        s_event, t_event = await at_s.next(), await at_t.next()
        await at_s.none(0.05)
        await at_t.none(0.05)
    assert [seat["seat_id"] for seat in s_event["seats"]] == [1, 3]
    assert [seat["seat_id"] for seat in t_event["seats"]] == [1, 2]
    assert await redis.hkeys(keys.screening_holds(S)) == [b"2"]  # its lease is still there
    assert await redis.hlen(keys.screening_holds(T)) == 0


async def test_past_its_bound_the_listener_sweeps_every_screening(
    redis: Redis,
    engine: SeatEngine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(expiry, "MAX_LAPSED", 2)
    await engine.hold(S, ALICE, [1, 2, 3], engine.now_ms() - 1000)  # deadlines passed
    lapsed = Lapsed()
    for seat in (1, 2, 3):
        await redis.delete(keys.seat_hold(S, seat))
        lapsed.add(keys.seat_hold(S, seat))
    lapsed.add(keys.seat_hold(T, 1))  # nor anything of another screening
    assert lapsed.seats == {S: {1, 2}} and lapsed.overflowed
    await _free_lapsed(engine, lapsed)
    assert await redis.hlen(keys.screening_holds(S)) == 0  # the seat not kept: swept
    assert "sweeping every screening" in caplog.text
    assert lapsed.take() == ({}, False)


async def test_a_periodic_sweep_pass_looks_at_a_bounded_turn_of_screenings(
    redis: Redis, transport: Transport
) -> None:
    """``sweep_some`` looks at the next ``at_most`` loaded screenings after the last it looked at
    (wrapping around), so a pass costs the same however many are loaded, and all get their turn."""
    source = DictSource()
    screenings = [901, 902, 903, 904, 905]
    for screening in screenings:
        source.add(screening, [1, 2])
    engine = make_engine(transport, source, hold_ms=300)
    past = engine.now_ms() - 1000  # every hold made at this time has lapsed
    for screening in screenings:
        await engine.hold(screening, ALICE, [1], past)

    async def still_held() -> list[int]:
        return [s for s in screenings if await redis.hlen(keys.screening_holds(s))]

    assert await engine.sweep_some(2) == 2
    assert await still_held() == [903, 904, 905]
    await engine.hold(901, BOB, [2], past)  # its turn is over: it waits for the next one
    assert await engine.sweep_some(2) == 2
    assert await still_held() == [901, 905]
    assert await engine.sweep_some(2) == 2  # 905, then round again to 901
    assert await still_held() == []
    await engine.hold(902, BOB, [2], past)
    assert await engine.sweep_some(2) == 1  # 902 and 903
    assert await engine.sweep() == 0  # a whole sweep finds nothing left
