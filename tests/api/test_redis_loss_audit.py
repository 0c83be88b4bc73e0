"""Redis losing its data, or going back in time, in the middle of a live release: a Redis of the
test's own restarted from an older snapshot, or flushed under live watchers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from redis.asyncio import Redis

from seatlock.server.embedded import EmbeddedRedis
from tests import factories as make
from tests.support import (
    LiveServer,
    availability,
    make_account,
    reserve,
    scratch_dir,
    watch,
)

BOOK = "/api/v1/tickets/book"
RECOVERY_S = 5.0  # how long a restarted Redis may show a sold seat as free


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own, which it may kill and start again on its data."""
    with scratch_dir("seatlock-redis-loss-") as path:
        server = EmbeddedRedis(path, persistent=False)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def restart_from_last_save(server: EmbeddedRedis) -> None:
    """Kill Redis (no save on the way down) and start it again on its port: it loads the RDB of
    the last SAVE, older than what it had."""
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait()
    server.start()


async def eventually_booked(
    client: httpx.AsyncClient, show: make.Show, seat: int, within: float
) -> float:
    """Seconds until the seat map shows ``seat`` booked (fails after ``within``)."""
    started = time.monotonic()
    while True:
        r = await client.get(f"/api/v1/seat-reservations/screening/{show.id}/availability")
        if r.status_code == 200:
            seats = {s["seat"]["id"]: s["status"] for s in r.json()}
            if seats[seat] == "booked":
                return time.monotonic() - started
        waited = time.monotonic() - started
        assert waited < within, f"seat {seat} still not booked after {waited:.1f} s"
        await asyncio.sleep(0.1)


async def next_snapshot(ws: Any, within: float = 3.0) -> dict[str, Any]:
    """The next ``seat_snapshot`` the watcher is sent (other messages skipped)."""
    async with asyncio.timeout(within):
        while True:
            message: dict[str, Any] = orjson.loads(await ws.recv())
            if message["type"] == "seat_snapshot":
                return message


async def test_a_redis_back_from_an_older_snapshot_gets_its_lost_sales_at_once(
    db: asyncpg.Connection,
    make_server: Callable[..., LiveServer],
    own_redis: EmbeddedRedis,
) -> None:
    """Redis restarted from a snapshot older than its last sale: the screening is still loaded
    there (no reload), so nothing but the reconciler brings the sale back. It must not wait for
    its next periodic pass (30 s), nor leave a sale of the last seconds (settling) to the
    booking, whose marking the restart undid: meanwhile the sold seat is on sale."""
    live = make_server(redis_url=own_redis.url)
    show = await make.show(db, 3)
    sold, free, _ = show.seat_ids
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        buyer = await make_account(client, "buyer@example.com", "Buyer")
        other = await make_account(client, "other@example.com", "Other")
        assert (await availability(client, show))[sold]["status"] == "available"  # loaded
        async with Redis.from_url(own_redis.url) as redis:
            await redis.save()  # the snapshot Redis will come back from
        body = {"screening_id": show.id, "seat_ids": [sold], "payment_id": "pay_after_save"}
        assert (await client.post(BOOK, json=body, headers=buyer.headers)).status_code == 201

        restart_from_last_save(own_redis)

        await eventually_booked(client, show, sold, RECOVERY_S)
        r = await reserve(client, other, show, [sold])
        assert r.status_code == 409, r.text
        assert (await reserve(client, other, show, [free])).status_code == 201


async def test_watchers_of_a_flushed_screening_lose_the_holds_redis_lost(
    db: asyncpg.Connection, client: httpx.AsyncClient, server: LiveServer, redis: Redis
) -> None:
    """FLUSHALL under live watchers (the hub's subscription survives it): the holds Redis lost
    show as free again once the screening is loaded anew, not as held until they would have
    expired (no event ever frees them)."""
    show = await make.show(db, 3)
    held, sold, _ = show.seat_ids
    holder = await make_account(client, "holder@example.com", "Holder")
    buyer = await make_account(client, "buyer@example.com", "Buyer")
    body = {"screening_id": show.id, "seat_ids": [sold], "payment_id": "pay_before_flush"}
    assert (await client.post(BOOK, json=body, headers=buyer.headers)).status_code == 201
    assert (await reserve(client, holder, show, [held])).status_code == 201
    ws = await watch(server, show.id)
    try:
        await redis.flushall()
        seats = await availability(client, show)  # loads the screening again
        assert seats[held]["status"] == "available"
        assert seats[sold]["status"] == "booked"
        snapshot = await next_snapshot(ws)
        statuses = {s["seat"]["id"]: s["status"] for s in snapshot["seats"]}
        assert statuses == {held: "available", sold: "booked", show.seat_ids[2]: "available"}
    finally:
        await ws.close()


async def test_watchers_of_a_redis_back_from_an_older_snapshot_get_a_map_numbered_past_theirs(
    db: asyncpg.Connection,
    make_server: Callable[..., LiveServer],
    own_redis: EmbeddedRedis,
) -> None:
    """The restart took the screening's version back below versions its watchers had seen: they
    (the web app among them) take a map numbered lower than theirs for a stale one and keep their
    own. The restart pass numbers it past them, and they are sent the map."""
    live = make_server(redis_url=own_redis.url)
    show = await make.show(db, 4)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        holder = await make_account(client, "holder@example.com", "Holder")
        await availability(client, show)  # loaded
        ws = await watch(live, show.id)
        try:
            async with Redis.from_url(own_redis.url) as redis:
                await redis.save()  # the snapshot Redis will come back from
            for seat in show.seat_ids[:3]:  # versions the restart takes back
                assert (await reserve(client, holder, show, [seat])).status_code == 201
            seen = 0
            async with asyncio.timeout(5):
                for _ in range(3):
                    seen = max(seen, orjson.loads(await ws.recv())["version"])

            restart_from_last_save(own_redis)

            async with asyncio.timeout(10):
                while True:
                    message = orjson.loads(await ws.recv())
                    if message["type"] == "seat_snapshot" and message["version"] > seen:
                        break
            statuses = {s["seat"]["id"]: s["status"] for s in message["seats"]}
            assert statuses == dict.fromkeys(show.seat_ids, "available")  # the snapshot's holds
        finally:
            await ws.close()


async def test_a_screening_deleted_after_the_snapshot_is_forgotten_again(
    db: asyncpg.Connection,
    make_server: Callable[..., LiveServer],
    own_redis: EmbeddedRedis,
) -> None:
    """The snapshot Redis came back from had the screening loaded and no tombstone: it took
    holds again (201), until a sweep or a refresh noticed. The restart pass forgets it."""
    live = make_server(redis_url=own_redis.url)
    show = await make.show(db, 3)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        admin = await make_account(
            client, "admin@example.com", "Admin", admin_db=live.settings.database_url
        )
        holder = await make_account(client, "holder@example.com", "Holder")
        await availability(client, show)  # loaded
        async with Redis.from_url(own_redis.url) as redis:
            await redis.save()
        r = await client.delete(f"/api/v1/screenings/{show.id}", headers=admin.headers)
        assert r.status_code == 204, r.text

        restart_from_last_save(own_redis)

        deadline = time.monotonic() + RECOVERY_S
        while True:
            r = await reserve(client, holder, show, show.seat_ids[:1])
            if r.status_code == 404 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert r.status_code == 404, r.text
