"""Each process frees the holds it made at their deadlines (seatlock/engine/deadlines.py), with no
keyspace listener and no sweep: Redis's own expiry cycle notices a lapsed lease seconds late once
it holds many other keys with a TTL, so promptness must not hang on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from seatlock.engine.deadlines import IDLE_S, Deadlines
from seatlock.engine.expiry import free_at_deadlines
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from tests.lua.support import DictSource, make_engine, tap

S = 802
ALICE, BOB = 7, 8
HOLD_MS = 300


@pytest.fixture
def engine(transport: Transport) -> SeatEngine:
    source = DictSource()
    source.add(S, [1, 2, 3, 4])
    return make_engine(transport, source, hold_ms=HOLD_MS)


@pytest.fixture
async def timers(engine: SeatEngine) -> AsyncIterator[Deadlines]:
    deadlines, stop = Deadlines(), asyncio.Event()
    task = asyncio.create_task(free_at_deadlines(engine, deadlines, stop))
    await asyncio.sleep(0)  # the loop gave the engine its deadlines
    yield deadlines
    stop.set()
    await asyncio.wait_for(task, 1)
    assert engine.deadlines is None


def freed(event: dict[str, object]) -> list[object]:
    seats = event["seats"]
    assert isinstance(seats, list)
    return [seat["seat_id"] for seat in seats if seat["status"] == "available"]


async def test_a_hold_made_here_is_freed_at_its_deadline(
    redis: Redis, engine: SeatEngine, timers: Deadlines
) -> None:
    async with tap(redis, S) as events:
        [held] = await engine.hold(S, ALICE, [1])
        await events.next()  # the hold
        event = await events.next(within=1.0)
    assert freed(event) == [1]
    late_ms = event["ts"] - held.expires_at_ms  # ts: the sweep's time, on Redis's clock
    assert 0 <= late_ms < 100  # never before its deadline
    assert len(timers) == 0  # no hold left in the screening: its timer is dropped


async def test_holds_due_together_are_freed_in_one_event(
    redis: Redis, engine: SeatEngine, timers: Deadlines
) -> None:
    now = engine.now_ms()
    async with tap(redis, S) as events:
        await engine.hold(S, ALICE, [1, 2], now)
        await engine.hold(S, BOB, [3], now)
        await events.next()
        await events.next()
        event = await events.next(within=1.0)
    assert sorted(freed(event)) == [1, 2, 3]


async def test_an_extended_hold_is_freed_at_its_new_deadline_and_the_others_at_theirs(
    redis: Redis, engine: SeatEngine, timers: Deadlines
) -> None:
    async with tap(redis, S) as events:
        [kept] = await engine.hold(S, ALICE, [1])
        [short] = await engine.hold(S, BOB, [2])
        [extended] = await engine.extend(S, ALICE, [1], 2 * HOLD_MS)
        for _ in range(3):
            await events.next()
        first = await events.next(within=1.0)
        second = await events.next(within=2.0)
    assert freed(first) == [2]
    assert 0 <= first["ts"] - short.expires_at_ms < 100
    assert freed(second) == [1]
    assert extended.expires_at_ms > kept.expires_at_ms
    assert 0 <= second["ts"] - extended.expires_at_ms < 100


def test_a_timer_is_only_brought_forward_and_fires_once() -> None:
    deadlines = Deadlines()
    deadlines.note(1, 500)
    deadlines.note(1, 700)  # a later hold: the timer stays at 500
    deadlines.note(2, 300)
    deadlines.note(2, 200)  # sooner: brought forward
    assert deadlines.sooner.is_set()
    assert deadlines.wait_s(100) == pytest.approx(0.1)
    assert deadlines.due(250) == [2]
    assert deadlines.due(400) == []  # screening 2's old entry (300) is stale
    assert deadlines.due(500) == [1]
    assert deadlines.due(10_000) == []
    assert len(deadlines) == 0
    assert deadlines.wait_s(10_000) == IDLE_S
