"""What readers see after a catalog change, in every process: a change PostgreSQL committed whose
Redis side failed at first (a Redis blip right after the commit) still reaches the seat maps and
the holds of every server, without the admin's retry (which could not do it: a DELETE again is a
404, seats added again a 409)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from redis import exceptions as rx

from seatlock.engine.seats import SeatEngine
from seatlock.errors import Unavailable
from tests import factories as make
from tests.support import Account, LiveServer, make_account, reserve

SETTLES_S = 3.0  # the background retry's first attempt comes after 0.1 s


def fail_once(monkeypatch: pytest.MonkeyPatch, name: str, error: Exception) -> list[int]:
    """``SeatEngine.<name>`` raises ``error`` on its first call, then works; the calls made."""
    real = getattr(SeatEngine, name)
    calls: list[int] = []

    async def flaky(self: SeatEngine, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(SeatEngine, name, flaky)
    return calls


async def eventually(read: Callable[[], Awaitable[Any]], wanted: Any) -> Any:
    """The first value of ``read()`` equal to ``wanted`` (SETTLES_S at most), or the last one."""
    deadline = time.monotonic() + SETTLES_S
    while True:
        value = await read()
        if value == wanted or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


def seat_ids(r: httpx.Response) -> list[int] | int:
    """The seat ids of a seat map, or its status when it is not a 200."""
    return sorted(s["seat"]["id"] for s in r.json()) if r.status_code == 200 else r.status_code


async def test_a_delete_whose_forget_redis_failed_still_ends_holds_and_maps(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    make_server: Callable[..., LiveServer],
    admin: Account,
    user: Account,
) -> None:
    show = await make.show(db, 3)
    async with httpx.AsyncClient(base_url=make_server().url) as other:
        seats = f"/api/v1/showtimes/{show.id}/seats"
        assert (await other.get(seats)).status_code == 200  # loaded, its details cached there
        assert (await reserve(other, user, show, show.seat_ids[:1])).status_code == 201
        with pytest.MonkeyPatch.context() as monkeypatch:
            calls = fail_once(monkeypatch, "forget", rx.ConnectionError("Connection reset"))
            r = await client.delete(f"/api/v1/screenings/{show.id}", headers=admin.headers)
            assert r.status_code == 503, r.text  # committed in PostgreSQL all the same
            retry = await client.delete(f"/api/v1/screenings/{show.id}", headers=admin.headers)
            assert retry.status_code == 404  # the admin's retry cannot repair Redis

            async def hold() -> int:
                return (await reserve(other, user, show, show.seat_ids[1:2])).status_code

            async def read() -> list[int] | int:
                return seat_ids(await other.get(seats))

            assert await eventually(hold, 404) == 404  # no hold taken on a deleted screening
            assert await eventually(read, 404) == 404
            assert len(calls) >= 2


async def test_seats_added_while_redis_failed_show_in_every_map(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    make_server: Callable[..., LiveServer],
    admin: Account,
    user: Account,
) -> None:
    show = await make.show(db, 2)
    async with httpx.AsyncClient(base_url=make_server().url) as other:
        seats = f"/api/v1/showtimes/{show.id}/seats"
        assert seat_ids(await other.get(seats)) == sorted(show.seat_ids)  # loaded
        with pytest.MonkeyPatch.context() as monkeypatch:
            fail_once(monkeypatch, "refresh", Unavailable("Seat service temporarily unavailable"))
            grid = {"rows": ["B"], "seats_per_row": 2}
            bulk = f"/api/v1/rooms/{show.room_id}/seats/bulk"
            r = await client.post(bulk, json=grid, headers=admin.headers)
            assert r.status_code == 503, r.text
            added = await db.fetch("SELECT id FROM seats WHERE row_label = 'B'")
            everyone = sorted([*show.seat_ids, *(row["id"] for row in added)])
            assert len(everyone) == 4  # committed
            retry = await client.post(bulk, json=grid, headers=admin.headers)
            assert retry.status_code == 409  # the admin's retry cannot repair Redis

            async def read() -> list[int] | int:
                return seat_ids(await other.get(seats))

            assert await eventually(read, everyone) == everyone
            assert (await reserve(other, user, show, everyone[-1:])).status_code == 201


async def test_a_move_whose_redis_side_failed_still_shows_the_new_room(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    make_server: Callable[..., LiveServer],
    admin: Account,
    user: Account,
) -> None:
    show = await make.show(db, 2)
    cinema_id = await db.fetchval("SELECT cinema_id FROM rooms WHERE id = $1", show.room_id)
    new_room = await make.room(db, cinema_id, "Hall 2", rows="C", seats_per_row=3)
    new_seats = await db.fetch("SELECT id FROM seats WHERE room_id = $1 ORDER BY id", new_room)
    async with httpx.AsyncClient(base_url=make_server().url) as other:
        seats = f"/api/v1/showtimes/{show.id}/seats"
        assert (await reserve(other, user, show, show.seat_ids[:1])).status_code == 201
        assert seat_ids(await other.get(seats)) == sorted(show.seat_ids)
        screening = (await client.get(f"/api/v1/screenings/{show.id}")).json()
        body = {
            "movie_id": screening["movie_id"],
            "room_id": new_room,
            "starts_at": screening["starts_at"],
            "price": 12.5,
        }
        with pytest.MonkeyPatch.context() as monkeypatch:
            fail_once(monkeypatch, "move", Unavailable("Seat service temporarily unavailable"))
            r = await client.put(f"/api/v1/screenings/{show.id}", json=body, headers=admin.headers)
            assert r.status_code == 503, r.text  # committed in PostgreSQL all the same

            async def read() -> list[int] | int:
                return seat_ids(await other.get(seats))

            wanted = [row["id"] for row in new_seats]
            assert await eventually(read, wanted) == wanted  # the old room's seats and hold gone


async def test_a_new_name_or_a_deleted_account_shows_at_once_in_anonymous_reviews(
    make_server: Callable[..., LiveServer], db: asyncpg.Connection
) -> None:
    """Reviews name their authors: renaming or deleting an account is a change of the catalog
    answers, and clears its process's answer cache as the other catalog writes do."""
    movie_id = await make.movie(db, "Heat")
    live = make_server(catalog_cache_seconds=60.0)  # whatever changes comes from a clear
    async with httpx.AsyncClient(base_url=live.url) as c:
        author = await make_account(c, "alice@example.com", "Alice Example")
        review = {"rating": 5, "content": "Great"}
        path = f"/api/v1/movies/{movie_id}/reviews"
        assert (await c.post(path, json=review, headers=author.headers)).status_code == 201

        async def names() -> list[str]:
            r = await c.get(path)  # anonymous: kept by the answer cache
            assert r.status_code == 200, r.text
            return [item["author_name"] for item in r.json()]

        assert await names() == ["Alice Example"]
        renamed = {"full_name": "Alicia Example"}
        r = await c.put("/api/v1/users/me", json=renamed, headers=author.headers)
        assert r.status_code == 200, r.text
        assert await names() == ["Alicia Example"]
        assert (await c.delete("/api/v1/users/me", headers=author.headers)).status_code == 204
        gone = await db.fetchval("SELECT full_name FROM users WHERE id = $1", author.id)
        assert await names() == [gone] != ["Alicia Example"]
