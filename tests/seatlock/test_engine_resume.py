"""The event log and ``SeatEngine.resume``: replay after a version, or the map when the log
cannot (window passed, reset, future version, no log); the log is kept only while the screening
is marked watched (``SeatEngine.watch``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine import events
from seatlock.engine.events import Hub
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


WATCHED_MS = 60_000


@pytest.fixture
def unwatched(transport: Transport, source: DictSource) -> SeatEngine:
    """An engine keeping WINDOW events, its screening S marked watched by nobody (no log)."""
    engine = make_engine(transport, source)
    engine.event_log_length = WINDOW
    return engine


@pytest.fixture
async def engine(unwatched: SeatEngine) -> SeatEngine:
    """The engine with S marked watched (as a hub marks it for its watchers)."""
    await unwatched.watch(S, WATCHED_MS)
    return unwatched


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
    assert 0 < await redis.pttl(keys.screening_log(S)) <= WATCHED_MS  # the reset kept the mark
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


async def test_an_unwatched_screening_keeps_no_log(unwatched: SeatEngine, redis: Redis) -> None:
    engine = unwatched
    now = now_ms()
    await engine.seat_map(S, now)
    since = await engine.version(S)
    await churn(engine, 3, now)
    assert not await redis.exists(keys.screening_log(S))
    assert await engine.resume(S, since) == Resumed(since + 3, None)
    assert await engine.resume(S, since + 3) == Resumed(since + 3, [])


async def test_a_watch_starts_an_empty_log_kept_until_the_mark_lapses(
    unwatched: SeatEngine, redis: Redis
) -> None:
    engine = unwatched
    now = now_ms()
    await engine.seat_map(S, now)
    before = await engine.version(S)
    await churn(engine, 2, now)  # unwatched: not logged
    assert await engine.watch(S, 300) is True
    assert await engine.watch(S, 300) is False  # marked again: the log and its entries stay
    log = keys.screening_log(S)
    assert await redis.xlen(log) == 0 and 0 < await redis.pttl(log) <= 300
    since = await engine.version(S)
    await churn(engine, 3, now)
    assert versions(await engine.resume(S, since)) == [since + 1, since + 2, since + 3]
    assert (await engine.resume(S, before)).events is None  # from before the mark: the map
    await wait_for_lapse(redis, log)
    await engine.release(S, ALICE, [1], now)  # the mark lapsed: not logged, not replayable
    assert not await redis.exists(log)
    assert (await engine.resume(S, since + 3)).events is None
    await engine.watch(S, WATCHED_MS)
    await engine.hold(S, ALICE, [1], now)
    assert versions(await engine.resume(S, since + 4)) == [since + 5]


async def test_a_watch_without_a_log_length_keeps_an_empty_log(
    unwatched: SeatEngine, redis: Redis
) -> None:
    engine = unwatched
    engine.event_log_length = 0
    now = now_ms()
    await engine.seat_map(S, now)
    await engine.watch(S, WATCHED_MS)
    since = await engine.version(S)
    await churn(engine, 2, now)
    assert await redis.xlen(keys.screening_log(S)) == 0
    assert (await engine.resume(S, since)).events is None


async def wait_until_async(
    read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], seconds: float = 3.0
) -> None:
    for _ in range(int(seconds / 0.05)):
        if done(await read()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not done in time")


async def wait_for_lapse(redis: Redis, key: str) -> None:
    await wait_until_async(lambda: redis.exists(key), lambda exists: not exists, 5.0)


async def test_a_hub_marks_its_watched_screenings_and_lets_the_others_lapse(
    unwatched: SeatEngine, transport: Transport, redis: Redis
) -> None:
    """A first watcher's join marks the screening (before it is let in); the refresh marks it
    again while it is watched here and stops once nobody is; a join soon after a mark does not
    ask Redis again."""
    engine = unwatched
    marks: list[int] = []

    async def watch(screening_id: int, ttl_ms: int) -> object:
        marks.append(screening_id)
        return await engine.watch(screening_id, ttl_ms)

    hub = Hub(transport, watch=watch)
    log = keys.screening_log(S)
    await hub.subscribed(S)
    watcher = hub.join(S, None)
    assert 0 < await redis.pttl(log) <= events.WATCH_TTL_MS and marks == [S]
    await hub.subscribed(S)  # a second watcher right after: the mark is fresh
    assert marks == [S]
    await redis.pexpire(log, 2000)  # as if the mark were about to lapse
    await hub.mark_watched()
    assert await redis.pttl(log) > 2000 and marks == [S, S]
    hub.leave(watcher)
    await redis.pexpire(log, 2000)
    await hub.mark_watched()  # nobody watches here any more: not marked again
    assert await redis.pttl(log) <= 2000 and marks == [S, S]
    await hub.subscribed(S)  # a new first watcher marks it again at once
    assert marks == [S, S, S] and await redis.pttl(log) > 2000


async def test_the_stats_loop_refreshes_the_marks_when_due(
    unwatched: SeatEngine, transport: Transport, redis: Redis
) -> None:
    engine = unwatched
    hub = Hub(transport, watch=engine.watch)
    await hub.subscribed(S)
    hub.join(S, None)
    log = keys.screening_log(S)
    await redis.pexpire(log, 2000)
    hub._marked_all -= events.WATCH_REFRESH_S  # a refresh is due
    stop = asyncio.Event()
    task = asyncio.create_task(hub.publish_stats(stop))
    try:
        await wait_until_async(lambda: redis.pttl(log), lambda ttl: ttl > 2000)
    finally:
        stop.set()
        await task
