"""Catalog changes reach the live seat state in Redis (seat engine refresh and forget)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from seatlock import keys
from tests import factories as make
from tests.factories import Show
from tests.support import Account, availability, reserve


async def screening_keys(redis: Redis, screening_id: int) -> list[bytes]:
    pattern = keys.screening_tag(screening_id).replace("{", "[{]").replace("}", "[}]") + "*"
    return [key async for key in redis.scan_iter(match=pattern)]


async def put_screening(
    client: httpx.AsyncClient, admin: Account, show: Show, **changes: Any
) -> httpx.Response:
    current = (await client.get(f"/api/v1/screenings/{show.id}")).json()
    body = {k: current[k] for k in ("movie_id", "room_id", "starts_at", "price")}
    return await client.put(
        f"/api/v1/screenings/{show.id}", json={**body, **changes}, headers=admin.headers
    )


async def test_seats_added_to_a_room_can_be_reserved_at_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, user: Account
) -> None:
    show = await make.show(db, 2)
    assert (await reserve(client, user, show, show.seat_ids[:1])).status_code == 201  # loaded
    grid = {"rows": ["B"], "seats_per_row": 2}
    r = await client.post(
        f"/api/v1/rooms/{show.room_id}/seats/bulk", json=grid, headers=admin.headers
    )
    assert r.status_code == 201, r.text
    added = [seat["id"] for seat in r.json()]
    r = await reserve(client, user, show, added)
    assert r.status_code == 201, r.text
    seats = await availability(client, show, user)
    assert set(seats) == {*show.seat_ids, *added}
    assert seats[show.seat_ids[0]]["status"] == "reserved"  # the earlier hold survived


async def test_a_screening_moved_into_the_past_refuses_holds(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, user: Account
) -> None:
    show = await make.show(db, 3)
    assert (await reserve(client, user, show, show.seat_ids[:1])).status_code == 201
    started = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    r = await put_screening(client, admin, show, starts_at=started)
    assert r.status_code == 200, r.text
    r = await reserve(client, user, show, show.seat_ids[1:2])
    assert r.status_code == 400, r.text
    assert r.json() == {"detail": "Cannot reserve seats for past screenings"}
    # The hold taken before the move can be neither extended nor booked any more.
    held = {"screening_id": show.id, "seat_ids": show.seat_ids[:1]}
    r = await client.post("/api/v1/seat-reservations/extend", json=held, headers=user.headers)
    assert (r.status_code, r.json()) == (
        400,
        {"detail": "Cannot extend reservations for past screenings"},
    ), r.text
    paid = {**held, "payment_id": "pay-after-start"}
    r = await client.post("/api/v1/tickets/book-from-reservation", json=paid, headers=user.headers)
    assert (r.status_code, r.json()) == (400, {"detail": "Cannot book seats for past screenings"})
    # Nor can seats be bought in one call: said as a booking, not as the hold it begins with.
    quick = {"screening_id": show.id, "seat_ids": show.seat_ids[1:2], "payment_id": "pay-quick"}
    r = await client.post("/api/v1/tickets/book", json=quick, headers=user.headers)
    assert (r.status_code, r.json()) == (400, {"detail": "Cannot book seats for past screenings"})


async def test_a_deleted_screening_leaves_no_keys(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, admin: Account, user: Account
) -> None:
    show = await make.show(db, 3)
    other = await make.show(db, 2)
    assert (await reserve(client, user, show, show.seat_ids[:2])).status_code == 201
    assert (await reserve(client, user, other, other.seat_ids[:1])).status_code == 201
    assert await screening_keys(redis, show.id)
    r = await client.delete(f"/api/v1/screenings/{show.id}", headers=admin.headers)
    assert r.status_code == 204, r.text
    assert await screening_keys(redis, show.id) == [keys.screening_deleted(show.id).encode()]
    assert await redis.zscore(keys.LOADED_SCREENINGS, str(show.id)) is None
    assert await screening_keys(redis, other.id)  # untouched
    assert (await reserve(client, user, show, show.seat_ids[2:])).status_code == 404
