"""Deleting a movie or a cinema deletes their screenings (a cascade in PostgreSQL), and those
leave Redis as a deleted screening does: no hold is accepted on them any more, their keys are
gone (but for the tombstone, lua/forget.lua), and a refused delete (409) leaves them live."""

from __future__ import annotations

import asyncpg
import httpx
from redis.asyncio import Redis

from seatlock import keys
from tests import factories as make
from tests.factories import Show
from tests.support import Account, availability, reserve


async def screening_keys(redis: Redis, screening_id: int) -> set[bytes]:
    pattern = keys.screening_tag(screening_id).replace("{", "[{]").replace("}", "[}]") + "*"
    return {key async for key in redis.scan_iter(match=pattern)}


async def held(client: httpx.AsyncClient, user: Account, show: Show) -> Show:
    """The screening loaded into Redis, with a hold of its first seat."""
    r = await reserve(client, user, show, show.seat_ids[:1])
    assert r.status_code == 201, r.text
    return show


async def assert_forgotten(
    client: httpx.AsyncClient, redis: Redis, user: Account, show: Show
) -> None:
    r = await reserve(client, user, show, show.seat_ids[1:2])
    assert (r.status_code, r.json()) == (404, {"detail": "Screening not found"}), r.text
    r = await client.post(
        "/api/v1/seat-reservations/extend",
        json={"screening_id": show.id, "seat_ids": show.seat_ids[:1]},
        headers=user.headers,
    )
    assert r.status_code == 404, r.text
    assert await screening_keys(redis, show.id) == {keys.screening_deleted(show.id).encode()}
    assert await redis.zscore(keys.LOADED_SCREENINGS, str(show.id)) is None


async def test_deleting_a_movie_forgets_its_screenings(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, admin: Account, user: Account
) -> None:
    movie_id = await make.movie(db, "Alien")
    first = await held(client, user, await make.show(db, 3, movie_id=movie_id))
    second = await held(client, user, await make.show(db, 3, movie_id=movie_id))
    other = await held(client, user, await make.show(db, 3))  # another movie's
    r = await client.delete(f"/api/v1/movies/{movie_id}", headers=admin.headers)
    assert r.status_code == 204, r.text
    await assert_forgotten(client, redis, user, first)
    await assert_forgotten(client, redis, user, second)
    assert (await availability(client, other, user))[other.seat_ids[0]]["status"] == "reserved"
    assert (await reserve(client, user, other, other.seat_ids[1:2])).status_code == 201


async def test_deleting_a_cinema_forgets_the_screenings_of_all_its_rooms(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, admin: Account, user: Account
) -> None:
    show = await held(client, user, await make.show(db, 3))
    cinema_id = await db.fetchval("SELECT cinema_id FROM rooms WHERE id = $1", show.room_id)
    room_id = await make.room(db, cinema_id, "Hall 2")
    seat_ids = await make.seats(db, room_id, 3)
    screening_id = await make.screening(db, await make.movie(db), room_id)
    second = await held(client, user, Show(screening_id, room_id, seat_ids))
    other = await held(client, user, await make.show(db, 3))  # another cinema's
    r = await client.delete(f"/api/v1/cinemas/{cinema_id}", headers=admin.headers)
    assert r.status_code == 204, r.text
    await assert_forgotten(client, redis, user, show)
    await assert_forgotten(client, redis, user, second)
    assert (await availability(client, other, user))[other.seat_ids[0]]["status"] == "reserved"


async def test_a_refused_delete_leaves_the_screenings_live(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, admin: Account, user: Account
) -> None:
    movie_id = await make.movie(db, "Alien")
    show = await held(client, user, await make.show(db, 3, movie_id=movie_id))
    await make.ticket(db, await make.buyer(db), show.id, show.seat_ids[2])
    cinema_id = await db.fetchval("SELECT cinema_id FROM rooms WHERE id = $1", show.room_id)
    for path in (f"/api/v1/movies/{movie_id}", f"/api/v1/cinemas/{cinema_id}"):
        r = await client.delete(path, headers=admin.headers)
        assert r.status_code == 409, r.text
    assert not await redis.exists(keys.screening_deleted(show.id))
    assert (await availability(client, show, user))[show.seat_ids[0]]["status"] == "reserved"
    assert (await reserve(client, user, show, show.seat_ids[1:2])).status_code == 201
    assert (await client.delete("/api/v1/movies/987654", headers=admin.headers)).status_code == 404
