"""The event log and ``SeatEngine.resume``: replay after a version, or the map when the log
cannot (window passed, reset, future version, no log)."""

from __future__ import annotations

import orjson
import pytest
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine.seats import Resumed, SeatEngine
from seatlock.engine.transport import Transport
from tests.lua.support import DictSource, make_engine, now_ms

S = 611
ALICE, BOB = 7, 8
WINDOW = 120  # above a stream node (100 entries), so MAXLEN ~ trims


@pytest.fixture
def source() -> DictSource:
    src = DictSource()
    src.add(S, list(range(1, 11)), {10: BOB})
    return src


@pytest.fixture
def engine(transport: Transport, source: DictSource) -> SeatEngine:
    engine = make_engine(transport, source)
    engine.event_log_length = WINDOW
    return engine


async def churn(engine: SeatEngine, changes: int, now: int) -> None:
    """``changes`` published changes: holds and releases of seat 1 in turn."""
    for i in range(changes):
        if i % 2 == 0:
            await engine.hold(S, ALICE, [1], now)
        else:
            await engine.release(S, ALICE, [1], now)


def versions(resumed: Resumed) -> list[int]:
    return [orjson.loads(event)["version"] for event in resumed.events or ()]


async def test_resume_replays_exactly_the_events_after_the_version(engine: SeatEngine) -> None:
    now = now_ms()
    await engine.seat_map(S, now)
    since = await engine.version(S)
    await churn(engine, 50, now)
    resumed = await engine.resume(S, since)
    assert resumed.version == since + 50 == await engine.version(S)
    assert versions(resumed) == list(range(since + 1, since + 51))
    first = orjson.loads(resumed.events[0])  # type: ignore[index]
    assert first["seats"] == [
        {"seat_id": 1, "status": "reserved", "user_id": ALICE, "expires_at": now + 300_000}
    ]
    last = resumed.events[-1:]  # type: ignore[index]
    assert await engine.resume(S, since + 49) == Resumed(since + 50, last)
    assert await engine.resume(S, since + 50) == Resumed(since + 50, [])


async def test_a_version_out_of_the_window_or_ahead_gets_the_map(
    engine: SeatEngine, redis: Redis
) -> None:
    now = now_ms()
    await engine.seat_map(S, now)
    since = await engine.version(S)
    await churn(engine, WINDOW + 101, now)  # odd: seat 1 ends held
    assert WINDOW <= await redis.xlen(keys.screening_log(S)) < WINDOW + 100  # capped
    current = await engine.version(S)
    for stale in (since, 0, current + 1):
        resumed = await engine.resume(S, stale)
        assert resumed == Resumed(current, None)
    assert await engine.versioned_map(S) == (current, await engine.seat_map(S, now))
    assert versions(await engine.resume(S, current - WINDOW)) == list(
        range(current - WINDOW + 1, current + 1)
    )


async def test_a_reset_empties_the_log_so_resuming_across_it_gets_the_map(
    engine: SeatEngine, redis: Redis
) -> None:
    now = now_ms()
    await engine.seat_map(S, now)
    since = await engine.version(S)
    await churn(engine, 4, now)
    await engine.refresh(S, now)
    after_reset = await engine.version(S)
    assert await redis.xlen(keys.screening_log(S)) == 0
    assert (await engine.resume(S, since)).events is None
    await churn(engine, 2, now)
    assert versions(await engine.resume(S, after_reset)) == [after_reset + 1, after_reset + 2]
    await engine.forget(S, now)
    assert not await redis.exists(keys.screening_log(S))


async def test_no_log_when_its_length_is_zero(
    transport: Transport, source: DictSource, redis: Redis
) -> None:
    engine = make_engine(transport, source)
    engine.event_log_length = 0
    now = now_ms()
    await engine.seat_map(S, now)
    since = await engine.version(S)
    await churn(engine, 2, now)
    assert not await redis.exists(keys.screening_log(S))
    assert (await engine.resume(S, since)).events is None
    assert await engine.resume(S, since + 2) == Resumed(since + 2, [])


async def test_resume_loads_a_screening_redis_lacks(engine: SeatEngine) -> None:
    resumed = await engine.resume(S, 5)
    assert resumed == Resumed(await engine.version(S), None)
    version, seats = await engine.versioned_map(S)
    assert version == resumed.version > 0
    assert [s.status for s in seats] == ["available"] * 9 + ["booked"]
