"""A seat-map WebSocket that resumes: ``?since=VERSION`` replays what the client missed, or sends
one seat_snapshot when that is no longer kept; seat maps tell their version."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import websockets
from redis.asyncio import Redis
from websockets.exceptions import ConnectionClosed

from seatlock import keys
from seatlock.engine.events import WATCH_TTL_MS
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import open_transport
from seatlock.settings import Settings
from tests import factories as make
from tests.support import Account, LiveServer, reserve

AVAILABILITY = "/api/v1/seat-reservations/screening/{}/availability"


async def resume(server: LiveServer, screening_id: int, since: Any, token: str = "") -> Any:
    """A WebSocket resuming from ``since``, past its connection_confirmed."""
    query = f"?since={since}" + (f"&token={token}" if token else "")
    ws = await websockets.connect(f"{server.ws_url}/ws/screenings/{screening_id}{query}")
    assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_confirmed"
    return ws


async def messages(ws: Any, count: int) -> list[dict[str, Any]]:
    return [orjson.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(count)]


async def nothing_more(ws: Any) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.3)


async def cancel(client: httpx.AsyncClient, account: Account, show: make.Show, seat: int) -> None:
    url = f"/api/v1/seat-reservations/cancel/{show.id}?seat_ids={seat}"
    assert (await client.delete(url, headers=account.headers)).status_code == 204


async def map_version(client: httpx.AsyncClient, show: make.Show) -> tuple[int, list[Any]]:
    """The screening's map and its version (loaded first: the read that loads it says 0)."""
    for _ in range(2):
        r = await client.get(AVAILABILITY.format(show.id), params={"with_version": "true"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert int(r.headers["x-seat-map-version"]) == body["version"]
        if body["version"]:
            break
    return body["version"], body["seats"]


@pytest.fixture
async def side_engine(base_settings: Settings) -> AsyncIterator[SeatEngine]:
    """An engine of another process on the server's Redis: changes without HTTP round trips."""

    async def loaded_already(screening_id: int) -> None:
        raise AssertionError("the server loads the screening")

    redis = Redis.from_url(base_settings.redis_url)
    transport = open_transport("fast", redis)
    yield SeatEngine(
        transport, loaded_already, hold_ms=60_000, max_hold_ms=600_000, max_seats_per_user=10
    )
    await transport.aclose()
    await redis.aclose()


async def watching(server: LiveServer, screening_id: int) -> Any:
    """A plain watcher (no ``since``), past its connection_confirmed."""
    ws = await websockets.connect(f"{server.ws_url}/ws/screenings/{screening_id}")
    assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_confirmed"
    return ws


async def test_a_watcher_back_gets_exactly_the_changes_it_missed_then_live_ones(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    user: Account,
    base_settings: Settings,
) -> None:
    show = await make.show(db, 3)
    seat = show.seat_ids[0]
    since, _ = await map_version(client, show)
    await (await watching(server, show.id)).close()  # watched a moment: the log is kept
    redis = Redis.from_url(base_settings.redis_url)
    try:  # for a minute or two after its last watcher left (events.py WATCH_TTL_MS)
        assert 60_000 < await redis.pttl(keys.screening_log(show.id)) <= WATCH_TTL_MS
    finally:
        await redis.aclose()
    for _ in range(25):  # 50 changes while nobody watches
        assert (await reserve(client, user, show, [seat])).status_code == 201
        await cancel(client, user, show, seat)
    anonymous, holder = (
        await resume(server, show.id, since),
        await resume(server, show.id, since, user.token),
    )
    try:
        for ws, shown in ((anonymous, None), (holder, user.id)):
            replay = await messages(ws, 50)
            assert [m["version"] for m in replay] == list(range(since + 1, since + 51))
            assert all(m["type"] == "seat_update" and m["seat_id"] == seat for m in replay)
            assert [m["status"] for m in replay] == ["reserved", "available"] * 25
            assert [m["reserved_by"] for m in replay[:2]] == [shown, None]  # invariant 9
        assert (await reserve(client, user, show, show.seat_ids[1:])).status_code == 201
        for ws in (anonymous, holder):
            live = (await messages(ws, 1))[0]
            assert live["type"] == "bulk_seat_update"
            assert live["version"] == since + 51
            await nothing_more(ws)
    finally:
        await anonymous.close()
        await holder.close()


async def test_resuming_at_the_current_version_replays_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, server: LiveServer, user: Account
) -> None:
    show = await make.show(db, 3)
    assert (await reserve(client, user, show, show.seat_ids[:1])).status_code == 201
    version, _ = await map_version(client, show)
    ws = await resume(server, show.id, version)
    try:
        await nothing_more(ws)
        assert (await reserve(client, user, show, show.seat_ids[1:2])).status_code == 201
        live = (await messages(ws, 1))[0]
        assert (live["type"], live["version"]) == ("seat_update", version + 1)
        await ws.send("ping")  # answered on a resumed connection as on any other
        assert (await messages(ws, 1))[0]["type"] == "pong"
    finally:
        await ws.close()


async def test_past_the_window_one_snapshot_equal_to_the_availability(
    make_server: Callable[..., LiveServer], db: asyncpg.Connection, side_engine: SeatEngine
) -> None:
    live = make_server(event_log_length=5)
    show = await make.show(db, 12)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        since, _ = await map_version(client, show)
        seat, others = show.seat_ids[0], show.seat_ids[1:4]
        for _ in range(60):  # 120 changes: past the 5 kept (and the stream node of 100)
            await side_engine.hold(show.id, 7, [seat])
            await side_engine.release(show.id, 7, [seat])
        await side_engine.hold(show.id, 8, others)
        current = since + 121
        for i, stale in enumerate((since, current + 5)):  # too old; ahead of the screening
            ws = await resume(live, show.id, stale)
            try:
                snapshot = (await messages(ws, 1))[0]
                assert set(snapshot) == {"type", "version", "seats", "timestamp"}
                assert (snapshot["type"], snapshot["version"]) == ("seat_snapshot", current)
                version, seats = await map_version(client, show)
                while version < current:  # the server hears of the other engine's changes
                    await asyncio.sleep(0.05)
                    version, seats = await map_version(client, show)
                assert snapshot["seats"] == seats
                assert [s["status"] for s in seats[1:4]] == ["available"] * i + ["reserved"] * (
                    3 - i
                )
                await nothing_more(ws)
                await side_engine.release(show.id, 8, [others[i]])
                after = (await messages(ws, 1))[0]
                assert (after["type"], after["version"]) == ("seat_update", current + 1)
                current += 1
            finally:
                await ws.close()


async def test_changes_of_a_screening_nobody_watched_come_as_one_snapshot(
    client: httpx.AsyncClient, db: asyncpg.Connection, server: LiveServer, user: Account
) -> None:
    """No watcher marked the screening, so its changes were not logged (lua/watch.lua): a client
    resuming from the availability's version gets the map, then live updates."""
    show = await make.show(db, 3)
    seat = show.seat_ids[0]
    since, _ = await map_version(client, show)
    for _ in range(2):
        assert (await reserve(client, user, show, [seat])).status_code == 201
        await cancel(client, user, show, seat)
    ws = await resume(server, show.id, since)
    try:
        snapshot = (await messages(ws, 1))[0]
        assert (snapshot["type"], snapshot["version"]) == ("seat_snapshot", since + 4)
        assert (await reserve(client, user, show, [seat])).status_code == 201
        live = (await messages(ws, 1))[0]
        assert (live["type"], live["version"]) == ("seat_update", since + 5)
        await nothing_more(ws)
    finally:
        await ws.close()


@pytest.mark.parametrize("since", ["abc", "-1", "1.5", "", "9" * 20, "9" * 4301, "١٢"])
async def test_a_bad_since_closes_with_a_clear_reason(
    db: asyncpg.Connection, server: LiveServer, since: str
) -> None:
    show = await make.show(db, 1)
    url = f"{server.ws_url}/ws/screenings/{show.id}?since={since}"
    async with websockets.connect(url) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1008
        assert ws.close_reason.startswith("since must be a seat map version")


async def test_seat_maps_tell_their_version_and_keep_their_validators(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 3)
    url = AVAILABILITY.format(show.id)
    first = await client.get(url)  # loads the screening: no version known before the map
    assert first.headers["x-seat-map-version"] == "0" and "etag" not in first.headers
    plain = await client.get(url)
    flagged = await client.get(url, params={"with_version": "true"})
    version = int(plain.headers["x-seat-map-version"])
    assert flagged.json() == {"version": version, "seats": plain.json()}
    assert plain.headers["etag"] != flagged.headers["etag"]  # two answers, two validators
    for r in (plain, flagged):
        again = await client.get(r.url, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
        assert again.headers["etag"] == r.headers["etag"]  # 304s as before (caching.py)
    free = await client.get(
        f"/api/v1/screenings/{show.id}/available-seats", params={"with_version": "1"}
    )
    assert free.json()["version"] == version and len(free.json()["seats"]) == 3
    assert (await client.get(url, params={"with_version": "maybe"})).status_code == 422
    assert (await client.get(url, params={"cache": "123"})).status_code == 200  # still ignored
    assert (await reserve(client, user, show, show.seat_ids[:1])).status_code == 201
    mine = await client.get(url, params={"with_version": "true"}, headers=user.headers)
    assert mine.json()["version"] == version + 1
    assert mine.json()["seats"][0]["reserved_by"] == user.id
    cors = await client.get(url, headers={"Origin": "https://app.example"})
    exposed = cors.headers["access-control-expose-headers"].lower()
    assert "x-seat-map-version" in exposed
