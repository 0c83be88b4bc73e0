"""A screening moved to another room (``SeatEngine.move``, lua/refresh.lua "moved") lets go of
every hold, and a deleted one says so in its reset event (lua/forget.lua "deleted")."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine.errors import TooManySeats, UnknownSeats
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from tests.lua.support import DictSource, make_engine, now_ms, tap

S = 711
ALICE, BOB = 7, 8
ROOM_A, ROOM_B = [1, 2, 3, 4], [21, 22, 23, 24]


@pytest.fixture
def source() -> DictSource:
    src = DictSource()
    src.add(S, ROOM_A)
    return src


@pytest.fixture
def engine(transport: Transport, source: DictSource) -> SeatEngine:
    return make_engine(transport, source, max_seats_per_user=2)


async def test_a_move_lets_go_of_every_hold_and_frees_the_cap(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1, 2], now)
    await engine.hold(S, BOB, [3], now - 400_000)  # lapsed, still in the index
    with pytest.raises(TooManySeats):
        await engine.hold(S, ALICE, [4], now)
    source.add(S, ROOM_B)
    let_go = await engine.move(S, now)
    assert let_go is not None
    assert sorted((h.seat_id, h.user_id) for h in let_go) == [(1, ALICE), (2, ALICE)]
    assert {h.expires_at_ms for h in let_go} == {now + engine.hold_ms}
    for name in (keys.screening_holds(S), keys.screening_deadlines(S), keys.screening_owners(S)):
        assert not await redis.exists(name)
    for seat in ROOM_A:
        assert not await redis.exists(keys.seat_hold(S, seat))
    states = {s.seat_id: s.status for s in await engine.seat_map(S, now)}
    assert states == dict.fromkeys(ROOM_B, "available")  # the old room's seats are gone
    with pytest.raises(UnknownSeats):
        await engine.hold(S, BOB, [1], now)
    assert len(await engine.hold(S, ALICE, [21, 22], now)) == 2  # the cap was freed


async def test_a_move_publishes_a_moved_reset_without_seats(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    await engine.hold(S, ALICE, [1])
    source.add(S, ROOM_B)
    async with tap(redis, S) as events:
        await engine.move(S)
        event = await events.next(markers=True)
    assert event["seats"] == []
    assert event["reset"] is True and event["moved"] is True


async def test_a_plain_refresh_keeps_holds_and_says_nothing_of_a_move(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1], now)
    source.add(S, ROOM_A, starts_at_ms=now + 3_600_000)  # another start time
    async with tap(redis, S) as events:
        assert await engine.refresh(S, now)
        event = await events.next(markers=True)
    assert "moved" not in event
    states = {s.seat_id: (s.status, s.user_id) for s in await engine.seat_map(S, now)}
    assert states[1] == ("reserved", ALICE)


async def test_a_deleted_screening_says_so_in_its_reset_event(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    await engine.hold(S, ALICE, [1])
    async with tap(redis, S) as events:
        await engine.forget(S)
        event = await events.next(markers=True)
    assert event["reset"] is True and event["deleted"] is True


async def test_a_move_of_a_screening_gone_from_the_catalog_is_none(
    engine: SeatEngine, source: DictSource
) -> None:
    await engine.hold(S, ALICE, [1])
    del source.layouts[S]
    assert await engine.move(S) is None
