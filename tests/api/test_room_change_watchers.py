"""Catalog changes while a release is live: a screening moved to another room lets go of every
hold (Redis, the per-user cap, the history) and its watchers get the new map (``seat_snapshot``);
a deleted screening's watchers are closed (4404), in every process."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import websockets
from redis.asyncio import Redis

import api.websockets
from seatlock import keys
from tests import factories as make
from tests.factories import Show
from tests.support import FROM_HOLD, Account, LiveServer, availability, reserve, watch, ws_closed

PROMPTLY_S = 0.8  # a deleted screening's watchers are closed well under a second


@pytest.fixture(params=["direct", "queued"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server writes to the socket itself, or through a sender task (the test servers run
    in this process: the patch reaches them)."""
    if request.param == "queued":
        monkeypatch.setattr(api.websockets, "direct_socket", lambda websocket: None)
    return str(request.param)


async def other_room(db: asyncpg.Connection, show: Show, seat_count: int = 10) -> Show:
    """Another room of the screening's cinema, with its own seats (the screening not moved)."""
    cinema_id = await db.fetchval("SELECT cinema_id FROM rooms WHERE id = $1", show.room_id)
    room_id = await make.room(db, cinema_id, "Hall 2")
    return Show(show.id, room_id, await make.seats(db, room_id, seat_count, row="B"))


async def put_screening(
    client: httpx.AsyncClient, admin: Account, show: Show, **changes: Any
) -> httpx.Response:
    current = (await client.get(f"/api/v1/screenings/{show.id}")).json()
    body = {k: current[k] for k in ("movie_id", "room_id", "starts_at", "price")}
    return await client.put(
        f"/api/v1/screenings/{show.id}", json={**body, **changes}, headers=admin.headers
    )


async def mine(client: httpx.AsyncClient, user: Account, everything: bool = False) -> list[Any]:
    r = await client.get(
        "/api/v1/seat-reservations/my-reservations",
        params={"include_expired": str(everything).lower()},
        headers=user.headers,
    )
    assert r.status_code == 200, r.text
    rows: list[Any] = r.json()
    return rows


async def extend(client: httpx.AsyncClient, user: Account, show: Show, seats: list[int]) -> int:
    body = {"screening_id": show.id, "seat_ids": seats, "additional_minutes": 5}
    r = await client.post("/api/v1/seat-reservations/extend", json=body, headers=user.headers)
    return r.status_code


async def next_message(ws: Any, within: float = 3.0) -> dict[str, Any]:
    """The next message but heartbeats."""
    async with asyncio.timeout(within):
        while True:
            message: dict[str, Any] = orjson.loads(await ws.recv())
            if message["type"] not in ("ping", "pong"):
                return message


async def still_open(ws: Any) -> list[str]:
    """``ws`` answers a ping; the types of the messages that came before the pong."""
    await ws.send("ping")
    before = []
    async with asyncio.timeout(3):
        while (kind := orjson.loads(await ws.recv())["type"]) != "pong":
            before.append(kind)
    return before


async def test_a_move_to_another_room_lets_go_of_every_hold(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    admin: Account,
    user: Account,
) -> None:
    show = await make.show(db, 10)
    new = await other_room(db, show)
    assert (await reserve(client, user, show, show.seat_ids)).status_code == 201  # the cap: 10
    r = await reserve(client, user, new, new.seat_ids[:1])
    assert r.status_code == 404, r.text  # not a seat of the screening's room yet
    assert len(await mine(client, user)) == 10

    r = await put_screening(client, admin, show, room_id=new.room_id)
    assert r.status_code == 200, r.text

    # Nothing of the old room is held any more, in Redis or in the history.
    for seat in show.seat_ids:
        assert not await redis.exists(keys.seat_hold(show.id, seat))
    for name in (keys.screening_holds, keys.screening_deadlines, keys.screening_owners):
        assert not await redis.exists(name(show.id))
    assert await mine(client, user) == []
    history = await mine(client, user, everything=True)
    assert sorted(row["seat_id"] for row in history) == show.seat_ids
    assert {row["status"] for row in history} == {"cancelled"}
    assert await extend(client, user, show, show.seat_ids[:1]) != 200
    paid = {"screening_id": show.id, "seat_ids": show.seat_ids[:1], "payment_id": "pay-old-room"}
    r = await client.post(FROM_HOLD, json=paid, headers=user.headers)
    assert r.status_code in (404, 409), r.text
    # The user's cap is free again: a whole new hold of ten seats in the new room.
    r = await reserve(client, user, new, new.seat_ids)
    assert r.status_code == 201, r.text
    seats = await availability(client, new, user)
    assert set(seats) == set(new.seat_ids)
    assert {s["status"] for s in seats.values()} == {"reserved"}


async def test_a_new_start_or_price_keeps_the_holds_and_the_watchers(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    server: LiveServer,
    admin: Account,
    user: Account,
) -> None:
    show = await make.show(db, 3)
    held = show.seat_ids[:2]
    assert (await reserve(client, user, show, held)).status_code == 201
    ws = await watch(server, show.id)
    try:
        current = (await client.get(f"/api/v1/screenings/{show.id}")).json()
        later = datetime.fromisoformat(current["starts_at"]) + timedelta(hours=1)
        r = await put_screening(client, admin, show, price=12.5, starts_at=later.isoformat())
        assert r.status_code == 200, r.text
        assert sorted(row["seat_id"] for row in await mine(client, user)) == held
        assert await extend(client, user, show, held) == 200
        for seat in held:
            assert await redis.exists(keys.seat_hold(show.id, seat))
        assert "seat_snapshot" not in await still_open(ws)  # not closed, no new map
    finally:
        await ws.close()


async def test_watchers_of_a_moved_screening_get_its_new_map_in_every_process(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    make_server: Any,
    admin: Account,
    user: Account,
    other_user: Account,
    path: str,
) -> None:
    second = make_server()
    show = await make.show(db, 4)
    new = await other_room(db, show, 3)
    assert (await reserve(client, user, show, show.seat_ids[:2])).status_code == 201
    watchers = [
        await watch(server, show.id),
        await watch(server, show.id, user.token),
        await watch(second, show.id),
        await watch(second, show.id, other_user.token),
    ]
    try:
        r = await put_screening(client, admin, show, room_id=new.room_id)
        assert r.status_code == 200, r.text
        versions = []
        for ws in watchers:
            message = await next_message(ws)
            assert message["type"] == "seat_snapshot", message
            assert {s["seat"]["id"]: s["status"] for s in message["seats"]} == dict.fromkeys(
                new.seat_ids, "available"
            )
            assert {s["seat"]["room_id"] for s in message["seats"]} == {new.room_id}
            versions.append(message["version"])
        # The new room's updates follow the map.
        assert (await reserve(client, other_user, new, new.seat_ids[:1])).status_code == 201
        for ws, version in zip(watchers, versions, strict=True):
            update = await next_message(ws)
            assert update["type"] == "seat_update", update
            assert (update["seat_id"], update["status"]) == (new.seat_ids[0], "reserved")
            assert update["version"] > version
    finally:
        for ws in watchers:
            await ws.close()


@pytest.mark.parametrize("deleted", ["screening", "movie", "cinema"])
async def test_watchers_of_a_deleted_screening_are_closed_at_once_in_every_process(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    make_server: Any,
    admin: Account,
    user: Account,
    path: str,
    deleted: str,
) -> None:
    second = make_server()
    show = await make.show(db, 3)
    kept = await make.show(db, 2)  # another cinema's, another movie's
    assert (await reserve(client, user, show, show.seat_ids[:1])).status_code == 201
    gone = [
        await watch(server, show.id),
        await watch(server, show.id, user.token),
        await watch(second, show.id),
        await watch(second, show.id, user.token),
    ]
    others = [await watch(server, kept.id), await watch(second, kept.id)]
    try:
        row = await db.fetchrow(
            "SELECT s.movie_id, r.cinema_id FROM screenings s JOIN rooms r ON r.id = s.room_id"
            " WHERE s.id = $1",
            show.id,
        )
        target = {"screening": show.id, "movie": row["movie_id"], "cinema": row["cinema_id"]}
        started = time.monotonic()
        r = await client.delete(f"/api/v1/{deleted}s/{target[deleted]}", headers=admin.headers)
        assert r.status_code == 204, r.text
        for ws in gone:
            assert await ws_closed(ws, PROMPTLY_S) == (4404, "Screening not found")
        assert time.monotonic() - started < 1
        for ws in others:
            await still_open(ws)
    finally:
        for ws in (*gone, *others):
            await ws.close()


async def test_a_socket_opened_after_the_delete_is_refused_though_the_seats_are_cached(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    make_server: Any,
    admin: Account,
) -> None:
    """Admission reads a screening from each process's cache (db/layouts.py), which a delete in
    another process does not clear: new sockets were confirmed and then never told anything."""
    second = make_server()
    show = await make.show(db, 3)
    for live in (server, second):  # each process has the screening's seats cached now
        ws = await watch(live, show.id)
        await ws.close()
    r = await client.delete(f"/api/v1/screenings/{show.id}", headers=admin.headers)
    assert r.status_code == 204, r.text
    for live in (server, second):  # confirmed first or not: closed as no such screening
        ws = await websockets.connect(f"{live.ws_url}/ws/screenings/{show.id}")
        assert await ws_closed(ws, PROMPTLY_S) == (4404, "Screening not found")
