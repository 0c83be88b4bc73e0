"""Invariants 1 and 2 in a release-day race: hundreds of clients, overlapping multi-seat holds."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from seatlock import keys
from seatlock.engine.errors import SeatsUnavailable
from seatlock.engine.model import Hold
from seatlock.engine.seats import SeatEngine
from tests.lua.support import DictSource, Transports, engine_url, make_engine

SEATS = 40
CLIENTS = 240
PROCESSES = 8  # engines with their own Redis client, loader lock and script cache


@pytest.fixture
async def engines(
    backend_urls: tuple[str, str], source: DictSource, transports: Transports
) -> AsyncIterator[list[SeatEngine]]:
    clients = [Redis.from_url(engine_url(backend_urls[0])) for _ in range(PROCESSES)]
    yield [make_engine(transports(c), source, max_seats_per_user=6) for c in clients]
    for client in clients:
        await client.aclose()


@pytest.fixture
def source() -> DictSource:
    return DictSource()


def requests(rng: random.Random) -> list[list[int]]:
    """One contiguous block of 1-6 seats per client, so neighbours overlap."""
    out = []
    for _ in range(CLIENTS):
        size = rng.randint(1, 6)
        start = rng.randint(1, SEATS - size + 1)
        out.append(list(range(start, start + size)))
    return out


async def grab(engine: SeatEngine, screening: int, user: int, seats: list[int]) -> list[Hold]:
    try:
        return await engine.hold(screening, user, seats)
    except SeatsUnavailable:
        return []


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_overlapping_holds_race(
    redis: Redis, engines: list[SeatEngine], source: DictSource, seed: int
) -> None:
    screening = 700 + seed
    source.add(screening, list(range(1, SEATS + 1)))
    wanted = requests(random.Random(seed))
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(keys.screening_events(screening))
        await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        results = await asyncio.gather(
            *(
                grab(engines[user % PROCESSES], screening, user, seats)
                for user, seats in enumerate(wanted, start=1)
            )
        )
        events = await drain(pubsub)
    winners = {
        user: seats
        for user, (seats, got) in enumerate(zip(wanted, results, strict=True), start=1)
        if got
    }

    # All or nothing: a winner got every seat it asked for, a loser none.
    for seats, got in zip(wanted, results, strict=True):
        assert [h.seat_id for h in got] in ([], seats)
    # At most one holder per seat.
    taken = [seat for seats in winners.values() for seat in seats]
    assert len(taken) == len(set(taken))
    # Exactly as many winners as disjointness allows: replaying the race in the order Redis
    # ran the winning scripts (the event order), every loser collides with an earlier winner.
    order = [event["seats"][0]["user_id"] for event in events]
    assert sorted(order) == sorted(winners)
    held: set[int] = set()
    for user in order:
        assert not held & set(winners[user])
        held |= set(winners[user])
    for user, seats in enumerate(wanted, start=1):
        if user not in winners:
            assert held & set(seats), f"user {user} lost although {seats} were free"
    # Redis agrees with the winners, and PostgreSQL was asked once per process at most.
    states = await engines[0].seat_map(screening)
    assert {s.seat_id: s.user_id for s in states if s.status == "reserved"} == {
        seat: user for user, seats in winners.items() for seat in seats
    }
    assert source.calls <= PROCESSES


async def drain(pubsub: PubSub) -> list[dict[str, Any]]:
    """The change events published so far, checked to come in version order (the load's empty
    reset marker is left out)."""
    out: list[dict[str, Any]] = []
    versions: list[int] = []
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3)
        if message is None:
            assert versions == sorted(set(versions))
            return out
        event = json.loads(message["data"])
        versions.append(event["version"])
        if event["seats"]:
            out.append(event)


async def test_no_hold_on_a_sold_seat_while_processes_reload_after_a_flush(
    redis: Redis, engines: list[SeatEngine], source: DictSource
) -> None:
    source.add(710, [1, 2, 3], {2: 1})
    await engines[0].hold(710, 5, [1])
    await redis.flushall()  # Redis lost everything; PostgreSQL still says seat 2 is sold
    results = await asyncio.gather(
        *(engines[u % PROCESSES].hold(710, u, [2, 3]) for u in range(1, 101)),
        return_exceptions=True,
    )
    assert all(isinstance(r, SeatsUnavailable) and r.booked for r in results)
    assert [s.status for s in await engines[0].seat_map(710)] == [
        "available",
        "booked",
        "available",
    ]
