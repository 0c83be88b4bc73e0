"""Mirrors of contended screenings: refusals without Redis, exactly as the hold script refuses.

Two engines share one Redis, like two processes: ``engine`` has a mirror fed by its own hub,
``other`` changes seats behind its back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine.errors import SeatsUnavailable
from seatlock.engine.events import Hub
from seatlock.engine.mirrors import MARGIN_MS, TRUST_MS, SeatMirrors
from seatlock.engine.model import Hold, new_grant
from seatlock.engine.scripts import Status
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from tests.lua.support import DictSource, Transports, make_engine, now_ms, wait_until

S = 621
ALICE, BOB, CAROL = 7, 8, 9
SEATS = list(range(1, 21))


@pytest.fixture
def source() -> DictSource:
    src = DictSource()
    src.add(S, SEATS, {20: CAROL})
    return src


@pytest.fixture
def engine(transport: Transport, source: DictSource) -> SeatEngine:
    return make_engine(transport, source)


@pytest.fixture
def other(transports: Transports, source: DictSource) -> SeatEngine:
    return make_engine(transports(), source)  # another process


@contextlib.asynccontextmanager
async def mirrored(
    redis: Redis, engine: SeatEngine, trust_ms: int = TRUST_MS
) -> AsyncIterator[tuple[Hub, SeatMirrors]]:
    """``engine`` wired like a server process: a hub feeding its mirrors."""
    hub = Hub(engine.transport)
    mirrors = SeatMirrors(engine.snapshot, hub, trust_ms=trust_ms)
    engine.mirrors = mirrors
    hub.screening_listeners.append((mirrors.wants, mirrors.on_event))  # as the wiring does
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop))
    try:
        await wait_until(lambda: hub.live)
        yield hub, mirrors
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await mirrors.aclose()
        engine.mirrors = None


async def refused(engine: SeatEngine, user: int, seats: list[int]) -> str:
    with pytest.raises(SeatsUnavailable) as info:
        await engine.hold(S, user, seats)
    return str(info.value.detail)


async def contend(engine: SeatEngine, mirrors: SeatMirrors, user: int, seats: list[int]) -> None:
    """A refusal from Redis, then the mirror it starts."""
    await refused(engine, user, seats)
    await wait_until(lambda: S in mirrors)


async def settled(redis: Redis, mirrors: SeatMirrors) -> None:
    """Until the mirror has every event published so far."""
    version = int(await redis.get(keys.screening_version(S)) or 0)
    await wait_until(lambda: S in mirrors and mirrors._mirrors[S].version == version)


async def test_a_contended_screening_refuses_without_a_script(
    redis: Redis, engine: SeatEngine, other: SeatEngine
) -> None:
    await other.hold(S, ALICE, [2, 3])
    async with mirrored(redis, engine) as (_, mirrors):
        from_redis = await refused(engine, BOB, [1, 2, 3])
        await wait_until(lambda: S in mirrors)
        writes = engine.transport.calls
        assert await refused(engine, BOB, [1, 2, 3]) == from_redis
        assert await refused(engine, BOB, [20, 2]) == "Seats [20] are already booked"
        assert engine.transport.calls == writes
        assert mirrors.refusals == 2


async def test_the_mirror_follows_changes_made_elsewhere(
    redis: Redis, engine: SeatEngine, other: SeatEngine
) -> None:
    await other.hold(S, ALICE, [5])
    async with mirrored(redis, engine) as (_, mirrors):
        await contend(engine, mirrors, BOB, [5])
        await other.release(S, ALICE, [5])
        await settled(redis, mirrors)
        assert [h.seat_id for h in await engine.hold(S, BOB, [5])] == [5]  # granted by Redis
        await other.sell(S, {6: ALICE})
        await other.hold(S, CAROL, [7])
        await settled(redis, mirrors)
        writes = engine.transport.calls
        assert await refused(engine, ALICE, [6, 7]) == "Seats [6] are already booked"
        assert await refused(engine, ALICE, [5, 7]) == (
            "Seats [5, 7] are currently reserved by other users"
        )
        assert engine.transport.calls == writes


async def test_the_hub_passes_on_the_events_of_mirrored_and_building_screenings_only(
    redis: Redis, engine: SeatEngine, other: SeatEngine
) -> None:
    async with mirrored(redis, engine) as (_, mirrors):
        assert not mirrors.wants(S)  # not contended: its events are not even parsed
        await other.hold(S, ALICE, [5])
        mirrors.contended(S, now_ms())
        assert mirrors.wants(S)  # a mirror being built gets the events meanwhile
        await wait_until(lambda: S in mirrors)
        assert mirrors.wants(S) and not mirrors.wants(S + 1)
        await other.release(S, ALICE, [5])  # reaches the mirror through the filter
        await settled(redis, mirrors)
        assert 5 not in mirrors._mirrors[S].holds
        mirrors.drop(S)
        assert not mirrors.wants(S)


async def test_every_refusal_is_the_scripts_own(
    redis: Redis, engine: SeatEngine, other: SeatEngine
) -> None:
    """Random holds, releases, sales and cancelled tickets elsewhere; once the mirror has caught
    up, whatever it refuses the hold script refuses the same way (a refusal writes nothing)."""
    rng = random.Random(4)
    await other.hold(S, ALICE, [1])
    # Trusted for the whole test: on a busy machine an iteration outlasted TRUST_MS, and the
    # mirror, rightly untrusted, refused too few to compare (the trust has its own tests).
    async with mirrored(redis, engine, trust_ms=60_000) as (_, mirrors):
        await contend(engine, mirrors, BOB, [1])
        checked = 0
        for _ in range(150):
            user, seats = rng.choice([ALICE, BOB, CAROL]), rng.sample(SEATS, rng.randint(1, 4))
            match rng.randrange(4):
                case 0:
                    with contextlib.suppress(SeatsUnavailable):
                        await other.hold(S, user, seats)
                case 1:
                    await other.release(S, user, seats)
                case 2:
                    await other.release(S, user, None)
                    free = [s for s in seats if s not in (await sold_seats(redis))]
                    if free:
                        with contextlib.suppress(SeatsUnavailable):
                            await other.hold(S, user, free)
                            await other.sell(S, dict.fromkeys(free, user))
                case _:
                    await other.unsell(S, seats)
            await settled(redis, mirrors)
            now = now_ms()
            asker, wanted = rng.choice([ALICE, BOB, CAROL]), sorted(rng.sample(SEATS, 3))
            local = mirrors.refusal(S, asker, wanted, now)
            if local:
                args = [S, now, asker, 300_000, 10, new_grant(), *wanted]
                reply = await engine.transport.run("hold", keys.script_keys(S, wanted), args)
                assert [int(v) for v in reply] == local
                checked += 1
        assert checked > 30


async def sold_seats(redis: Redis) -> set[int]:
    return {int(seat) for seat in await redis.hkeys(keys.screening_sold(S))}


async def test_own_lapsing_unknown_and_started_go_to_redis(
    redis: Redis, engine: SeatEngine, other: SeatEngine, source: DictSource
) -> None:
    now = now_ms()
    await other.hold(S, ALICE, [1])
    async with mirrored(redis, engine, trust_ms=48 * 3_600_000) as (_, mirrors):
        await contend(engine, mirrors, BOB, [1])
        exp = mirrors._mirrors[S].holds[1][1]
        assert mirrors.refusal(S, BOB, [1], exp - MARGIN_MS - 1) == [Status.TAKEN, 1]
        assert mirrors.refusal(S, BOB, [1], now) == [Status.TAKEN, 1]
        assert mirrors.refusal(S, ALICE, [1, 2], now) == []  # her own seat
        assert mirrors.refusal(S, BOB, [1], exp - MARGIN_MS) == []  # about to lapse
        assert mirrors.refusal(S, BOB, [1, 99], now) == []  # the script answers UNKNOWN
        starts_at = source.layouts[S].starts_at_ms
        assert mirrors.refusal(S, BOB, [20], starts_at - 1) == [Status.BOOKED, 20]
        assert mirrors.refusal(S, BOB, [20], starts_at) == []  # the script answers STARTED


async def test_a_load_or_refresh_elsewhere_drops_the_mirror(
    redis: Redis, engine: SeatEngine, other: SeatEngine
) -> None:
    await other.hold(S, ALICE, [1])
    async with mirrored(redis, engine) as (_, mirrors):
        await contend(engine, mirrors, BOB, [1])
        assert await other.refresh(S)
        await wait_until(lambda: S not in mirrors)
        await contend(engine, mirrors, BOB, [1])
        await other.forget(S)
        await wait_until(lambda: S not in mirrors)


async def test_after_redis_lost_the_screening_the_mirror_refuses_no_longer_than_its_trust(
    redis: Redis, engine: SeatEngine, other: SeatEngine
) -> None:
    await other.hold(S, ALICE, [1])
    async with mirrored(redis, engine, trust_ms=300) as (_, mirrors):
        await contend(engine, mirrors, BOB, [1])
        await redis.flushall()  # ALICE's hold is gone, and nothing announces it
        lost_at = now_ms()
        while True:
            try:
                await engine.hold(S, BOB, [1])
                break
            except SeatsUnavailable:
                assert now_ms() - lost_at < 300 + 100
                await asyncio.sleep(0.02)
        assert S not in mirrors  # the script found it unloaded; the engine loaded it again


async def test_a_missed_event_or_a_new_subscription_drops_the_mirror(
    redis: Redis, engine: SeatEngine, other: SeatEngine
) -> None:
    await other.hold(S, ALICE, [1])
    async with mirrored(redis, engine) as (hub, mirrors):
        await contend(engine, mirrors, BOB, [1])
        version = mirrors._mirrors[S].version
        freed = {"seat_id": 1, "status": "available", "user_id": None, "expires_at": None}
        mirrors.on_event(S, {"screening_id": S, "version": version, "ts": 0, "seats": [freed]})
        assert mirrors.refusal(S, BOB, [1], now_ms()) == [Status.TAKEN, 1]  # already had it
        mirrors.on_event(S, {"screening_id": S, "version": version + 2, "ts": 0, "seats": []})
        assert S not in mirrors
        await contend(engine, mirrors, BOB, [1])
        assert await redis.client_kill_filter(_type="pubsub") >= 1
        await wait_until(lambda: not hub.live or S not in mirrors)
        assert mirrors.refusal(S, BOB, [1], now_ms()) == []
        assert S not in mirrors
        await wait_until(lambda: hub.live)
        await contend(engine, mirrors, BOB, [1])  # mirrored again on the new subscription


async def test_a_hold_granted_here_refuses_others_before_its_event_arrives(
    redis: Redis, engine: SeatEngine, other: SeatEngine
) -> None:
    await other.hold(S, ALICE, [1])
    async with mirrored(redis, engine) as (hub, mirrors):
        await contend(engine, mirrors, BOB, [1])
        held_back: list[tuple[int, dict[str, Any]]] = []
        hub.screening_listeners.clear()  # events reach the mirror when we say so
        hub.event_listeners.append(lambda sid, event: held_back.append((sid, event)))
        await engine.hold(S, BOB, [2, 3])  # granted by Redis, its event held back
        calls = engine.transport.calls
        assert await refused(engine, CAROL, [3, 4]) == (
            "Seats [3] are currently reserved by other users"
        )
        assert engine.transport.calls == calls  # known from the grant, not from Redis
        assert [h.seat_id for h in await engine.hold(S, BOB, [3])] == [3]  # his own: Redis
        await other.release(S, BOB, [2, 3])
        await wait_until(lambda: len(held_back) == 2)
        for sid, event in held_back:  # the hold's event, then the release's
            mirrors.on_event(sid, event)
        assert mirrors._mirrors[S].granted == {}  # the mirror knows as much: grants forgotten
        assert [h.seat_id for h in await engine.hold(S, CAROL, [3])] == [3]
        # A grant that comes after its event (two connections, either may be read first) is
        # already in the mirror, and the mirror may know of later changes: it is ignored.
        version = mirrors._mirrors[S].version
        mirrors.granted(S, ALICE, [Hold(5, ALICE, now_ms() + 60_000)], version)
        assert mirrors.refusal(S, BOB, [5], now_ms()) == []


async def test_a_grant_counts_only_while_its_version_is_ahead_of_the_mirror(
    redis: Redis, engine: SeatEngine, other: SeatEngine
) -> None:
    await other.hold(S, ALICE, [1])
    async with mirrored(redis, engine) as (hub, mirrors):
        await contend(engine, mirrors, BOB, [1])
        hub.screening_listeners.clear()  # only the events given below
        version, later = mirrors._mirrors[S].version, now_ms() + 60_000
        mirrors.granted(S, ALICE, [Hold(5, ALICE, later)], version + 2)
        mirrors.granted(S, ALICE, [Hold(6, ALICE, later)], version + 1)  # out of order
        assert mirrors.refusal(S, BOB, [5, 6], now_ms()) == [Status.TAKEN, 5, 6]
        freed = {"seat_id": 6, "status": "available", "user_id": None, "expires_at": None}
        mirrors.on_event(S, {"screening_id": S, "version": version + 1, "ts": 0, "seats": [freed]})
        assert mirrors.refusal(S, BOB, [6], now_ms()) == []  # the mirror is past that grant
        assert mirrors.refusal(S, BOB, [5], now_ms()) == [Status.TAKEN, 5]


async def test_an_attempt_waits_for_a_hold_of_its_seats_under_way_instead_of_racing_it(
    redis: Redis, engine: SeatEngine, other: SeatEngine
) -> None:
    await other.hold(S, ALICE, [1])
    async with mirrored(redis, engine) as (hub, mirrors):
        await contend(engine, mirrors, BOB, [1])
        calls = engine.transport.calls
        first = asyncio.create_task(engine.hold(S, BOB, [2, 3]))
        second = asyncio.create_task(engine.hold(S, CAROL, [3, 4]))  # sent at the same moment
        assert [h.seat_id for h in await first] == [2, 3]
        with pytest.raises(SeatsUnavailable, match=r"Seats \[3\] are currently reserved"):
            await second
        assert engine.transport.calls == calls + 1  # the loser never reached Redis
        # When the hold under way is refused, the attempt waiting for it goes on to Redis.
        hub.screening_listeners.clear()  # the mirror misses what follows
        await other.hold(S, ALICE, [6])
        calls = engine.transport.calls
        refused_there = asyncio.create_task(engine.hold(S, BOB, [6, 7]))
        waiting = asyncio.create_task(engine.hold(S, CAROL, [7, 8]))
        with pytest.raises(SeatsUnavailable):
            await refused_there
        assert [h.seat_id for h in await waiting] == [7, 8]
        assert engine.transport.calls == calls + 2
        assert mirrors._mirrors[S].in_flight == {}
