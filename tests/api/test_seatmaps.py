"""Seat maps served from the per-process cache of rendered JSON: fresh, private, documented."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import orjson
from redis.asyncio import Redis

from api.rendering import dumps
from api.reservations import utc
from api.rooms import SeatOut
from api.seatmaps import Rendered, SeatStatusOut, entry_json
from seatlock import keys
from seatlock.services.seatmaps import TRUST_MS, SeatMapCache
from tests import factories as make
from tests.support import (
    Account,
    LiveServer,
    availability,
    make_account,
    reserve,
    wait_for_status,
    watch,
)

CANCEL = "/api/v1/seat-reservations/cancel"


async def test_warm_cache_still_shows_reserved_by_only_to_the_holder(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    show = await make.show(db, 4)
    seat = show.seat_ids[0]
    assert (await reserve(client, user, show, [seat])).status_code == 201
    for _ in range(3):  # the first read fills the cache, the others are served from it
        anonymous = await availability(client, show)
        theirs = await availability(client, show, other_user)
        mine = await availability(client, show, user)
        assert anonymous[seat]["reserved_by"] is None
        assert theirs[seat]["reserved_by"] is None
        assert mine[seat]["reserved_by"] == user.id
        assert mine[seat]["expires_at"] == theirs[seat]["expires_at"] is not None
        assert all(v["reserved_by"] is None for s, v in mine.items() if s != seat)
        showtime = await client.get(f"/api/v1/showtimes/{show.id}/seats", headers=user.headers)
        assert {s["seat"]["id"]: s for s in showtime.json()} == mine
        other = await client.get(f"/api/v1/showtimes/{show.id}/seats", headers=other_user.headers)
        assert {s["seat"]["id"]: s for s in other.json()} == theirs


async def test_every_change_shows_on_the_next_read(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 3)
    first, second = show.seat_ids[:2]
    free = f"/api/v1/screenings/{show.id}/available-seats"
    assert {s["status"] for s in (await availability(client, show)).values()} == {"available"}
    assert len((await client.get(free)).json()) == 3
    assert (await reserve(client, user, show, [first, second])).status_code == 201
    assert (await availability(client, show))[first]["status"] == "reserved"
    r = await client.get(free)
    assert r.headers["content-type"] == "application/json"
    assert [s["seat"]["id"] for s in r.json()] == show.seat_ids[2:]
    r = await client.delete(f"{CANCEL}/{show.id}?seat_ids={first}", headers=user.headers)
    assert r.status_code == 204
    seats = await availability(client, show)
    assert (seats[first]["status"], seats[second]["status"]) == ("available", "reserved")
    assert [s["seat"]["id"] for s in (await client.get(free)).json()] == [first, show.seat_ids[2]]


async def test_a_lapsed_hold_is_not_served_from_the_cache(
    make_server: Any, db: asyncpg.Connection, redis: Redis
) -> None:
    """No expiry event, no sweep: the hold's own deadline ends the cached map's life."""
    server: LiveServer = make_server(hold_seconds=1, sweep_interval_seconds=600)
    events = (await redis.config_get("notify-keyspace-events"))["notify-keyspace-events"]
    await redis.config_set("notify-keyspace-events", "")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
            show = await make.show(db, 2)
            holder = await make_account(client, "holder@example.com", "Holder")
            assert (await reserve(client, holder, show, show.seat_ids[:1])).status_code == 201
            assert (await availability(client, show))[show.seat_ids[0]]["status"] == "reserved"
            await asyncio.sleep(1.1)
            seat = (await availability(client, show))[show.seat_ids[0]]
            assert (seat["status"], seat["expires_at"]) == ("available", None)
    finally:
        await redis.config_set("notify-keyspace-events", events or "")


async def test_redis_losing_its_data_bypasses_the_cache(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    """Sold seats come back from PostgreSQL (invariant 7), never a cached "available"."""
    show = await make.show(db, 2)
    first, second = show.seat_ids
    # The very first read loads the screening: it must not be cached as valid for "no version".
    assert (await availability(client, show))[first]["status"] == "available"
    await make.ticket(db, user.id, show.id, first)
    await redis.flushall()
    seats = await availability(client, show)
    assert (seats[first]["status"], seats[second]["status"]) == ("booked", "available")


async def test_openapi_documents_the_seat_and_reservation_shapes(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = {
        ("get", "/api/v1/seat-reservations/screening/{screening_id}/availability"): "200",
        ("get", "/api/v1/screenings/{screening_id}/available-seats"): "200",
        ("get", "/api/v1/showtimes/{showtime_id}/seats"): "200",
        ("post", "/api/v1/seat-reservations/reserve"): "201",
        ("post", "/api/v1/seat-reservations/extend"): "200",
        ("get", "/api/v1/seat-reservations/my-reservations"): "200",
        ("post", "/api/v1/seat-reservations/cleanup"): "200",
    }
    for (method, path), status in paths.items():
        response = spec["paths"][path][method]["responses"][status]
        assert "schema" in response["content"]["application/json"], (method, path)
    text = str(spec)
    for name in ("SeatStatusOut", "ReserveOut", "ExtendOut", "MyReservationOut", "CleanupOut"):
        assert name in text


def test_the_cache_forgets_the_least_recently_used_screening() -> None:
    cache = SeatMapCache(size=2)
    maps = {n: Rendered(1, None, 0, {}, [], [], [], [], b"[]") for n in (1, 2, 3)}  # type: ignore[arg-type]
    cache.put(1, maps[1])
    cache.put(2, maps[2])
    assert cache.get(1) is maps[1]
    cache.put(3, maps[3])
    assert (cache.get(1), cache.get(2), cache.get(3)) == (maps[1], None, maps[3])
    assert len(cache) == 2


def test_assembled_entries_are_what_msgspec_makes_of_them() -> None:
    seat = SeatOut(7, 2, 'A "quoted" \u00e9 row', 12, "vip")
    prefix = b'{"seat":' + dumps(seat) + b',"status":'
    for ms in (1_764_068_845_538, 1_764_068_845_000):
        at = utc(ms)
        for status, holder, expires in (
            ("available", None, None),
            ("booked", None, None),
            ("reserved", None, at),
            ("reserved", 42, at),
        ):
            expiry = dumps(expires) if expires else b"null"
            expected = dumps(SeatStatusOut(seat, status, holder, expires))
            assert entry_json(prefix, status, holder, expiry) == expected


async def get_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def test_repeated_reads_trust_events_instead_of_reading_the_version(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    show = await make.show(db, 2)
    seat = show.seat_ids[0]
    await availability(client, show)  # loads the screening: its script run invalidates
    await availability(client, show)  # checks the version once more, then trusts events
    before = await get_calls(redis)
    for _ in range(5):
        await availability(client, show)
    assert await get_calls(redis) - before <= 1  # at most one check per TRUST_MS
    # A hold on this process is seen by the very next read (read-your-writes).
    assert (await reserve(client, user, show, [seat])).status_code == 201
    assert (await availability(client, show))[seat]["status"] == "reserved"


async def script_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{verb}", {}).get("calls", 0)) for verb in ("evalsha", "eval")
    )


async def test_a_crowd_reading_a_changed_map_shares_one_read_of_it(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    show = await make.show(db, 8)
    seat = show.seat_ids[0]
    readers = 40
    # Warm: the map cached, and a kept-alive connection per reader.
    await asyncio.gather(*(availability(client, show) for _ in range(readers)))
    assert (await reserve(client, user, show, [seat])).status_code == 201  # the cache is stale
    before = await script_calls(redis)
    # Redis holds every command back for a moment, so all the readers' version reads are
    # answered together and every reader finds the cached map stale at once.
    await redis.execute_command("CLIENT", "PAUSE", 300, "ALL")
    maps = await asyncio.gather(*(availability(client, show) for _ in range(readers)))
    # One map read for them all, not one each (2: a reader may arrive after it landed).
    assert await script_calls(redis) - before <= 2
    assert all(m[seat]["status"] == "reserved" for m in maps)  # all see the change


async def test_a_change_no_event_announces_shows_within_the_trust_window(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    show = await make.show(db, 2)
    seat = show.seat_ids[0]
    assert (await reserve(client, user, show, [seat])).status_code == 201
    assert (await availability(client, show))[seat]["status"] == "reserved"
    await redis.flushall()  # the hold is gone and nothing is published
    await asyncio.sleep(TRUST_MS / 1000 + 0.05)
    assert (await availability(client, show))[seat]["status"] == "available"


async def test_an_event_from_another_process_invalidates_at_once(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    server: LiveServer,
    user: Account,
) -> None:
    show = await make.show(db, 2)
    seat = show.seat_ids[0]
    assert (await reserve(client, user, show, [seat])).status_code == 201
    assert (await availability(client, show))[seat]["status"] == "reserved"
    ws = await watch(server, show.id)
    try:
        await redis.flushall()  # the hold is gone; then an event names the screening
        event = {
            "screening_id": show.id,
            "ts": 0,
            "seats": [{"seat_id": seat, "status": "available"}],
        }
        await redis.publish(keys.screening_events(show.id), orjson.dumps(event))
        await wait_for_status(ws, [seat], "available")  # the hub has dispatched it
        assert (await availability(client, show))[seat]["status"] == "available"
    finally:
        await ws.close()


def test_trust_needs_a_live_hub_a_recent_check_and_no_change_since() -> None:
    cache = SeatMapCache(size=2)
    entry = Rendered(1, None, 0, {}, [], [], [], [], b"[]")  # type: ignore[arg-type]
    cache.mark_checked(entry, 1000, cache.changes, 3)
    assert cache.trusted(1, entry, 1000 + TRUST_MS - 1, 3)
    assert not cache.trusted(1, entry, 1000 + TRUST_MS, 3)  # the check is too old
    assert not cache.trusted(1, entry, 1001, 4)  # another subscription since
    assert not cache.trusted(1, entry, 1001, -2)  # the hub is not live
    cache.invalidate(2)
    assert cache.trusted(1, entry, 1001, 3)  # another screening changed
    cache.invalidate(1)
    assert not cache.trusted(1, entry, 1001, 3)
    cache.mark_checked(entry, 1000, cache.changes, -2)  # checked while the hub was down
    assert not cache.trusted(1, entry, 1001, -2)
    cache.mark_checked(entry, 1000, cache.changes, 3)
    for screening_id in range(100, 109):  # past the memory bound: every entry distrusted
        cache.invalidate(screening_id)
    assert not cache.trusted(1, entry, 1001, 3)
