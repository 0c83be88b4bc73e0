"""Catalog changes reaching Redis: ``SeatEngine.refresh`` and ``SeatEngine.forget``."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine.errors import ScreeningNotFound, ScreeningStarted, UnknownSeats
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from tests.lua.support import HOUR_MS, DictSource, dump, make_engine, now_ms, tap, two_screenings

S, T = 701, 702
ALICE, BOB = 7, 8


@pytest.fixture
def source() -> DictSource:
    return two_screenings(S, T, BOB)


@pytest.fixture
def engine(transport: Transport, source: DictSource) -> SeatEngine:
    return make_engine(transport, source)


async def test_seats_added_later_can_be_held_and_are_announced(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    await engine.hold(S, ALICE, [1])
    source.layouts[S].seat_ids.extend([5, 6])
    with pytest.raises(UnknownSeats):
        await engine.hold(S, BOB, [5])
    async with tap(redis, S) as events:
        version = await engine.version(S)
        assert await engine.refresh(S)
        event = await events.next()
    assert [(c["seat_id"], c["status"]) for c in event["seats"]] == [
        (5, "available"),
        (6, "available"),
    ]
    assert await engine.version(S) > version
    assert [h.seat_id for h in await engine.hold(S, BOB, [5, 6])] == [5, 6]
    states = {s.seat_id: (s.status, s.user_id) for s in await engine.seat_map(S)}
    assert states[1] == ("reserved", ALICE)  # the live hold survived the refresh
    assert states[4] == ("booked", BOB)


async def test_a_moved_screening_refuses_holds_after_its_new_start(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1], now)
    source.add(S, [1, 2, 3, 4], {4: BOB}, starts_at_ms=now + 60_000)
    await engine.refresh(S)
    assert await redis.zscore(keys.LOADED_SCREENINGS, str(S)) == now + 60_000
    with pytest.raises(ScreeningStarted):
        await engine.hold(S, BOB, [2], now + 61_000)
    source.add(S, [1, 2, 3, 4], {4: BOB}, starts_at_ms=now + 2 * HOUR_MS)
    await engine.refresh(S)
    assert len(await engine.hold(S, BOB, [2], now + 61_000)) == 1


async def test_refresh_keeps_held_and_sold_seats_that_left_the_layout(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1], now)
    await engine.sell(S, {2: BOB}, now)  # committed after PostgreSQL was read: merged, not lost
    source.add(S, [10, 11], {})  # the screening moved to another room
    await engine.refresh(S, now)
    states = {s.seat_id: (s.status, s.user_id) for s in await engine.seat_map(S, now)}
    assert states == {
        1: ("reserved", ALICE),
        2: ("booked", BOB),
        4: ("booked", BOB),
        10: ("available", None),
        11: ("available", None),
    }
    with pytest.raises(UnknownSeats):
        await engine.hold(S, BOB, [3], now)
    await engine.release(S, ALICE, [1], now)
    await engine.refresh(S, now)
    assert 1 not in {s.seat_id for s in await engine.seat_map(S, now)}


async def test_refresh_loads_an_unloaded_screening_and_a_later_load_keeps_it(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    assert await engine.refresh(T)
    before = await dump(redis, T)
    assert before[keys.screening_meta(T)][b"ready"] == b"1"
    calls = source.calls
    assert len(await engine.hold(T, ALICE, [2])) == 1
    assert source.calls == calls  # no second load


async def test_forget_drops_every_key_and_holds_are_refused(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    await engine.hold(S, ALICE, [1, 2])
    await engine.hold(T, ALICE, [1])
    del source.layouts[S]
    async with tap(redis, S) as events:
        await engine.forget(S)
        await events.none()
    assert set(await dump(redis, S)) == {keys.screening_deleted(S)}  # its tombstone only
    assert await redis.zscore(keys.LOADED_SCREENINGS, str(S)) is None
    with pytest.raises(ScreeningNotFound):
        await engine.hold(S, BOB, [3])
    assert len(await dump(redis, T)) > 0  # other screenings untouched


async def test_refresh_of_a_deleted_screening_forgets_it(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    await engine.hold(S, ALICE, [1])
    del source.layouts[S]
    assert not await engine.refresh(S)
    assert await dump(redis, S) == {}


async def test_refresh_loaded_skips_screenings_redis_does_not_have(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    await engine.seat_map(S)
    assert await engine.refresh_loaded([S, T]) == [S]
    assert await dump(redis, T) == {}
