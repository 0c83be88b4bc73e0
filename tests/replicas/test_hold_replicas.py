"""SEATLOCK_HOLD_REPLICAS=1 against a real replica, over both single-node transports: a hold, an
extension and a sale are answered once the replica has them; with the replica paused (SIGSTOP) a
hold is 503 after about the WAIT timeout and leaves nothing behind, an extension is 503 and stands,
a booking still answers 201 (PostgreSQL has the tickets) and its seats reach the replica once it is
back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from seatlock import keys
from tests import factories as make
from tests.factories import Show
from tests.replicas.conftest import TIMEOUT_MS
from tests.replicas.local import ReplicatedRedis
from tests.support import (
    Account,
    active_tickets,
    availability,
    book_held,
    held_in_redis,
    make_account,
    reserve,
)

EXTEND = "/api/v1/seat-reservations/extend"
SLACK_S = 1.5  # a busy test machine


@pytest.fixture
async def primary(pair: ReplicatedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(pair.url)
    yield client
    await client.aclose()


@pytest.fixture
async def replica(pair: ReplicatedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(pair.replica_url)
    yield client
    await client.aclose()


@pytest.fixture
async def alice(rclient: httpx.AsyncClient) -> Account:
    return await make_account(rclient, "alice@example.com", "Alice Example")


@pytest.fixture
async def bob(rclient: httpx.AsyncClient) -> Account:
    return await make_account(rclient, "bob@example.com", "Bob Example")


@pytest.fixture
async def show(db: asyncpg.Connection, rclient: httpx.AsyncClient) -> Show:
    made = await make.show(db, seat_count=4)
    await availability(rclient, made)  # loaded into Redis: the holds below run the script once
    return made


async def history_rows(db: asyncpg.Connection, show: Show) -> int:
    await asyncio.sleep(0.5)  # the history writer is in the background
    count = await db.fetchval("SELECT count(*) FROM reservations WHERE screening_id = $1", show.id)
    return int(count)


async def test_a_hold_is_on_the_replica_when_it_is_answered(
    rclient: httpx.AsyncClient, alice: Account, show: Show, replica: Redis
) -> None:
    seats = show.seat_ids[:2]
    r = await reserve(rclient, alice, show, seats)
    assert r.status_code == 201, r.text
    # Read at once, no polling: the 201 came after WAIT confirmed the replica has the leases.
    assert await held_in_redis(replica, show) == dict.fromkeys(seats, alice.id)


async def test_a_paused_replica_makes_a_hold_503_and_frees_its_seats(
    rclient: httpx.AsyncClient,
    alice: Account,
    show: Show,
    pair: ReplicatedRedis,
    primary: Redis,
    db: asyncpg.Connection,
) -> None:
    pair.pause()
    started = time.monotonic()
    r = await reserve(rclient, alice, show, show.seat_ids[:2])
    took = time.monotonic() - started
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert "replicas" in r.json()["detail"]
    assert TIMEOUT_MS / 1000 * 0.9 <= took < TIMEOUT_MS / 1000 + SLACK_S
    assert await held_in_redis(primary, show) == {}
    assert {s["status"] for s in (await availability(rclient, show)).values()} == {"available"}
    assert await history_rows(db, show) == 0

    pair.resume()
    r = await reserve(rclient, alice, show, show.seat_ids[:2])
    assert r.status_code == 201, r.text


async def test_an_unconfirmed_hold_lets_go_only_of_what_it_took(
    rclient: httpx.AsyncClient, alice: Account, show: Show, pair: ReplicatedRedis, primary: Redis
) -> None:
    first, second = show.seat_ids[:2]
    assert (await reserve(rclient, alice, show, [first])).status_code == 201
    pair.pause()
    r = await reserve(rclient, alice, show, [first, second])
    assert r.status_code == 503, r.text
    # The seat held by the earlier, confirmed request stays held; the new one is free again.
    assert await held_in_redis(primary, show) == {first: alice.id}


async def test_a_refusal_stays_a_refusal_while_the_replica_is_paused(
    rclient: httpx.AsyncClient, alice: Account, bob: Account, show: Show, pair: ReplicatedRedis
) -> None:
    seat = show.seat_ids[0]
    assert (await reserve(rclient, alice, show, [seat])).status_code == 201
    pair.pause()
    r = await reserve(rclient, bob, show, [seat])
    assert r.status_code == 409, r.text  # it changed nothing: nothing to lose in a failover


async def test_an_unconfirmed_extension_is_503_and_stands(
    rclient: httpx.AsyncClient, alice: Account, show: Show, pair: ReplicatedRedis, primary: Redis
) -> None:
    seat = show.seat_ids[0]
    assert (await reserve(rclient, alice, show, [seat])).status_code == 201
    before = await primary.pttl(keys.seat_hold(show.id, seat))
    pair.pause()
    body = {"screening_id": show.id, "seat_ids": [seat]}
    r = await rclient.post(
        EXTEND, params={"additional_minutes": 5}, json=body, headers=alice.headers
    )
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert await primary.pttl(keys.seat_hold(show.id, seat)) > before + 200_000
    assert (await availability(rclient, show, alice))[seat]["status"] == "reserved"

    pair.resume()
    r = await rclient.post(
        EXTEND, params={"additional_minutes": 1}, json=body, headers=alice.headers
    )
    assert r.status_code == 200, r.text


async def test_a_booking_while_the_replica_is_paused_is_201_and_reaches_it_later(
    rclient: httpx.AsyncClient,
    alice: Account,
    bob: Account,
    show: Show,
    pair: ReplicatedRedis,
    replica: Redis,
    db: asyncpg.Connection,
) -> None:
    seat = show.seat_ids[0]
    assert (await reserve(rclient, alice, show, [seat])).status_code == 201
    pair.pause()
    r = await book_held(rclient, alice, show, [seat], "pay-replicas-1")
    # PostgreSQL committed the ticket: the answer is 201 (invariant 5), not a 503 that a client
    # would retry into a 409 or a second booking.
    assert r.status_code == 201, r.text
    assert [t["seat_id"] for t in await active_tickets(db, show)] == [seat]
    assert (await availability(rclient, show))[seat]["status"] == "booked"
    assert (await reserve(rclient, bob, show, [seat])).status_code == 409

    pair.resume()
    # The booking flow sells again (backoff up to 5 s) until the replica has it.
    for _ in range(200):
        if await replica.hget(keys.screening_sold(show.id), str(seat)) is not None:
            break
        await asyncio.sleep(0.05)
    assert await replica.hget(keys.screening_sold(show.id), str(seat)) == str(alice.id).encode()
    replay = await book_held(rclient, alice, show, [seat], "pay-replicas-1")
    assert replay.status_code == 201, replay.text
    assert len(await active_tickets(db, show)) == 1
