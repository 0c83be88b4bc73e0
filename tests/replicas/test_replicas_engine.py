"""The engine with replicas on each single-node transport, against a real primary and replica:
one WAIT covers a whole batch of scripts, a script reloaded after NOSCRIPT is covered too, and an
unconfirmed hold raises ReplicasBehind with its seats free again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine.seats import ReplicasBehind, SeatEngine
from seatlock.engine.transport import Replicas, Transport, open_transport
from tests.lua.support import DictSource
from tests.replicas.conftest import TIMEOUT_MS
from tests.replicas.local import ReplicatedRedis

SHOWS = list(range(500, 520))
WARM = 499  # a screening held once first, so the scripts are known on the connection
ALICE = 7


@pytest.fixture(params=["fast", "redis-py"])
async def transport(
    request: pytest.FixtureRequest, pair: ReplicatedRedis
) -> AsyncIterator[Transport]:
    client = Redis.from_url(pair.url)
    made = open_transport(request.param, client)
    yield made
    await made.aclose()
    await client.aclose()


@pytest.fixture
async def engine(transport: Transport) -> SeatEngine:
    source = DictSource()
    for screening_id in [WARM, *SHOWS]:
        source.add(screening_id, [1, 2, 3, 4])
    made = SeatEngine(
        transport,
        source,
        hold_ms=300_000,
        max_hold_ms=1_800_000,
        max_seats_per_user=10,
        replicas=Replicas(1, TIMEOUT_MS),
    )
    await asyncio.gather(*(made.seat_map(s) for s in SHOWS))  # loaded
    await made.hold(WARM, ALICE, [1])
    return made


@pytest.fixture
async def replica(pair: ReplicatedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(pair.replica_url)
    yield client
    await client.aclose()


def sent(engine: SeatEngine) -> tuple[int, int]:
    """(round trips, commands) the engine's transport sent so far."""
    transport = engine.transport
    return getattr(transport, "pipelines"), transport.calls  # noqa: B009  (not in the interface)


async def test_one_wait_covers_a_batch_of_holds(engine: SeatEngine, replica: Redis) -> None:
    before_trips, before_calls = sent(engine)
    await asyncio.gather(*(engine.hold(s, ALICE, [1, 2]) for s in SHOWS))
    trips, calls = sent(engine)
    assert trips - before_trips == 1
    assert calls - before_calls == len(SHOWS) + 1  # the scripts and one WAIT
    for screening_id in SHOWS:
        assert await replica.exists(keys.seat_hold(screening_id, 2))


async def test_a_script_sent_again_after_noscript_is_confirmed_too(
    engine: SeatEngine, pair: ReplicatedRedis, replica: Redis
) -> None:
    async with Redis.from_url(pair.url) as primary:
        await primary.script_flush()
    held = await engine.hold(SHOWS[0], ALICE, [3])
    assert [h.seat_id for h in held] == [3]
    assert await replica.exists(keys.seat_hold(SHOWS[0], 3))


async def test_an_unconfirmed_hold_is_let_go(engine: SeatEngine, pair: ReplicatedRedis) -> None:
    await engine.hold(SHOWS[0], ALICE, [1])
    pair.pause()
    with pytest.raises(ReplicasBehind):
        await engine.hold(SHOWS[0], ALICE, [1, 2])
    states = {st.seat_id: st.status for st in await engine.seat_map(SHOWS[0])}
    assert states == {1: "reserved", 2: "available", 3: "available", 4: "available"}
    # A sale not confirmed is ReplicasBehind too (the booking flow sells again); it did happen.
    with pytest.raises(ReplicasBehind):
        await engine.sell(SHOWS[1], {4: ALICE})
    assert {st.seat_id: st.status for st in await engine.seat_map(SHOWS[1])}[4] == "booked"
    pair.resume()
    await engine.sell(SHOWS[1], {4: ALICE})  # idempotent: now confirmed
