"""Hold times on Redis's clock: engines standing for hosts whose clocks are 5 s ahead and 5 s
behind decide and show the same deadlines, on every transport (seatlock/engine/clock.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine.clock import DRIFT, RedisClock, Sample, preferred
from seatlock.engine.errors import SeatsUnavailable
from seatlock.engine.events import Hub
from seatlock.engine.mirrors import TRUST_MS, SeatMirrors
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from seatlock.settings import Settings
from tests.lua.support import DictSource, Transports, make_engine, wait_until

S = 431
ALICE, BOB = 7, 8
SKEW_MS = 5_000
SLACK_MS = 5  # the offset's error on loopback, and rounding to whole ms


async def redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def lease_end(redis: Redis, key: str) -> int:
    """When ``key`` expires on Redis's clock (TIME and PTTL read in one step)."""
    async with redis.pipeline(transaction=True) as pipe:
        (seconds, micros), ttl = await pipe.time().pttl(key).execute()
    return int(seconds) * 1000 + int(micros) // 1000 + int(ttl)


async def host(
    transport: Transport, source: DictSource, skew_ms: int, **changes: int
) -> SeatEngine:
    """An engine as a process on a host whose clock is off by ``skew_ms``, synced to Redis."""
    engine = make_engine(transport, source, **changes)
    engine.clock = RedisClock(transport.command, skew_ms=skew_ms)
    await engine.clock.sync()
    return engine


@pytest.fixture
def source() -> DictSource:
    src = DictSource()
    src.add(S, [1, 2, 3, 4, 5, 6])
    return src


@pytest.mark.parametrize("skew_ms", [SKEW_MS, -SKEW_MS, 0])
async def test_sync_cancels_the_host_clock_skew(
    redis: Redis, transport: Transport, skew_ms: int
) -> None:
    clock = RedisClock(transport.command, skew_ms=skew_ms)
    assert not clock.synced
    assert abs(clock.now_ms() - (time.time() * 1000 + skew_ms)) < SLACK_MS  # unsynced: local
    await clock.sync()
    assert clock.synced and clock.error_ms is not None and clock.error_ms < 50
    assert abs(clock.local_ms() - time.time() * 1000 - skew_ms) < SLACK_MS  # still skewed
    before = await redis_ms(redis)
    now = clock.now_ms()
    after = await redis_ms(redis)
    assert before - SLACK_MS <= now <= after + SLACK_MS


def test_a_precise_sample_is_kept_while_a_busier_one_agrees() -> None:
    kept = Sample(offset_ms=5000.0, error_ms=0.2, taken_ms=0.0)
    busy = Sample(offset_ms=5004.0, error_ms=8.0, taken_ms=10_000.0)  # TIME behind a batch
    assert preferred(kept, busy) == Sample(5000.0, 0.2 + DRIFT * 10_000, 10_000.0)
    sharper = Sample(offset_ms=5000.1, error_ms=0.1, taken_ms=10_000.0)
    assert preferred(kept, sharper) == sharper
    stepped = Sample(offset_ms=3000.0, error_ms=8.0, taken_ms=10_000.0)  # the host clock jumped
    assert preferred(kept, stepped) == stepped
    old = Sample(offset_ms=5000.0, error_ms=0.2, taken_ms=-3_600_000.0)  # drift: an hour ago
    assert preferred(old, busy) == busy
    assert preferred(None, busy) == busy


def test_the_clock_settings() -> None:
    env = {"SEATLOCK_CLOCK_OFFSET_MS": "-5000", "SEATLOCK_CLOCK_SYNC_SECONDS": "2.5"}
    settings = Settings.from_env(env)
    assert (settings.clock_offset_ms, settings.clock_sync_seconds) == (-5000, 2.5)
    assert Settings.from_env({}).clock_offset_ms == 0
    with pytest.raises(ValueError, match="CLOCK_SYNC_SECONDS"):
        Settings.from_env({}, clock_sync_seconds=0)


async def test_the_sync_loop_keeps_syncing_and_stops(transport: Transport) -> None:
    clock = RedisClock(transport.command, skew_ms=SKEW_MS)
    stop = asyncio.Event()
    beats: list[float] = []
    task = asyncio.create_task(clock.run(0.05, stop, lambda: beats.append(time.monotonic())))
    await wait_until(lambda: clock.synced and len(beats) >= 3)
    stop.set()
    await asyncio.wait_for(task, 3)


async def test_a_hold_ends_at_the_same_redis_time_through_either_host(
    redis: Redis, transports: Transports, source: DictSource
) -> None:
    ahead = await host(transports(), source, SKEW_MS)
    behind = await host(transports(), source, -SKEW_MS)
    hold_ms = ahead.hold_ms
    for engine, user, seat in ((ahead, ALICE, 1), (behind, BOB, 2)):
        before = await redis_ms(redis)
        [held] = await engine.hold(S, user, [seat])
        after = await redis_ms(redis)
        assert before + hold_ms - SLACK_MS <= held.expires_at_ms <= after + hold_ms + SLACK_MS
        # The lease's TTL runs from when the script ran, the deadline from when the engine
        # read the clock (before loading the screening, on the first hold): up to the call later.
        ends = await lease_end(redis, keys.seat_hold(S, seat))
        assert (
            held.expires_at_ms - SLACK_MS <= ends <= held.expires_at_ms + after - before + SLACK_MS
        )
    # Extended through the other host: the same deadline whoever computes it.
    [first] = [h for h in (await ahead.seat_map(S)) if h.seat_id == 1]
    assert first.expires_at_ms is not None
    before = await redis_ms(redis)
    [extended] = await behind.extend(S, ALICE, [1], 60_000)
    after = await redis_ms(redis)
    assert extended.expires_at_ms == first.expires_at_ms + 60_000
    ends = await lease_end(redis, keys.seat_hold(S, 1))
    assert (
        extended.expires_at_ms - SLACK_MS
        <= ends
        <= extended.expires_at_ms + after - before + SLACK_MS
    )
    assert await ahead.seat_map(S) == await behind.seat_map(S)


async def test_the_sweep_of_a_host_ahead_frees_no_hold_early(
    redis: Redis, transports: Transports, source: DictSource
) -> None:
    ahead = await host(transports(), source, SKEW_MS)
    behind = await host(transports(), source, -SKEW_MS, hold_ms=2_000)
    await behind.hold(S, ALICE, [3])
    assert await ahead.sweep() == 0
    assert await redis.exists(keys.seat_hold(S, 3))
    assert [s.status for s in await ahead.seat_map(S) if s.seat_id == 3] == ["reserved"]
    # What the same sweep did on the host's own clock: the hold gone 3 s early.
    assert await ahead.sweep(now_ms=int(ahead.clock.local_ms())) == 1


@contextlib.asynccontextmanager
async def mirrored(engine: SeatEngine, trust_ms: int = TRUST_MS) -> AsyncIterator[SeatMirrors]:
    """``engine`` with a mirror fed by a hub, as a server process wires it."""
    hub = Hub(engine.transport, now_ms=engine.now_ms)
    mirrors = SeatMirrors(engine.snapshot, hub, trust_ms=trust_ms)
    engine.mirrors = mirrors
    hub.event_listeners.append(mirrors.on_event)
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop))
    try:
        await wait_until(lambda: hub.live)
        yield mirrors
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await mirrors.aclose()
        engine.mirrors = None


async def test_a_mirror_behind_does_not_refuse_a_seat_that_is_free_again(
    redis: Redis, transports: Transports, source: DictSource
) -> None:
    behind = await host(transports(), source, -SKEW_MS)
    ahead = await host(transports(), source, SKEW_MS, hold_ms=400)
    [held] = await ahead.hold(S, ALICE, [4])
    # Trusted throughout (no Redis data loss here), so the mirror alone decides until Redis must.
    async with mirrored(behind, trust_ms=60_000) as mirrors:
        with pytest.raises(SeatsUnavailable):
            await behind.hold(S, BOB, [4])  # Redis refuses, and the mirror is built
        await wait_until(lambda: S in mirrors)
        # Once the lease lapsed, on its own clock (5 s behind) the mirror would refuse the seat
        # for 5 s more; on Redis's it leaves the seat to Redis, which grants it.
        for _ in range(200):
            if not await redis.exists(keys.seat_hold(S, 4)):
                break
            await asyncio.sleep(0.01)
        assert await redis_ms(redis) >= held.expires_at_ms
        assert [h.seat_id for h in await behind.hold(S, BOB, [4])] == [4]


async def test_a_mirror_ahead_refuses_a_seat_still_held(
    redis: Redis, transports: Transports, source: DictSource
) -> None:
    ahead = await host(transports(), source, SKEW_MS)
    behind = await host(transports(), source, -SKEW_MS, hold_ms=3_000)
    await behind.hold(S, ALICE, [5])
    async with mirrored(ahead) as mirrors:
        with pytest.raises(SeatsUnavailable):
            await ahead.hold(S, BOB, [5])
        await wait_until(lambda: S in mirrors)
        calls = ahead.transport.calls
        # On its own clock the hold lapsed 2 s ago; on Redis's it has ~3 s left: refused here.
        with pytest.raises(SeatsUnavailable):
            await ahead.hold(S, BOB, [5])
        assert ahead.transport.calls == calls and mirrors.refusals == 1
    assert await redis.get(keys.seat_hold(S, 5)) is not None
