"""Tickets over real HTTP, audited: a refused booking leaves its caller's holds alone, and a
ticket an admin marks confirmed is paid for the per-user cap as after confirm-payment."""

from __future__ import annotations

import asyncpg
import httpx
from redis.asyncio import Redis

from tests import factories as make
from tests.support import Account, active_tickets, availability, book_held, held_in_redis, reserve

BOOK = "/api/v1/tickets/book"


async def test_a_409_for_seats_bought_before_keeps_the_seats_still_held(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    show = await make.show(db, 3)
    bought, held, free = show.seat_ids
    assert (await reserve(client, user, show, [bought])).status_code == 201
    assert (await book_held(client, user, show, [bought], "pay_first")).status_code == 201
    assert (await reserve(client, user, show, [held])).status_code == 201
    # A second payment naming the seat bought before next to the one held now.
    r = await book_held(client, user, show, [bought, held], "pay_second")
    assert r.status_code == 409, r.text
    assert r.json() == {"detail": "Some of these seats are already booked"}
    # Refused, so nothing changed: the user still holds the seat, and can buy it.
    assert await held_in_redis(redis, show) == {held: user.id}
    statuses = {seat: s["status"] for seat, s in (await availability(client, show)).items()}
    assert statuses == {bought: "booked", held: "reserved", free: "available"}
    assert (await book_held(client, user, show, [held], "pay_second")).status_code == 201
    assert [t["seat_id"] for t in await active_tickets(db, show)] == [bought, held]


async def test_an_admin_confirmed_ticket_frees_its_place_under_the_cap(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, admin: Account
) -> None:
    show = await make.show(db, 11)
    body = {"screening_id": show.id, "seat_ids": show.seat_ids[:10]}  # unpaid, at the cap of 10
    r = await client.post(BOOK, json=body, headers=user.headers)
    assert r.status_code == 201, r.text
    first = r.json()[0]["id"]
    r = await client.put(
        f"/api/v1/tickets/{first}/status", json={"status": "confirmed"}, headers=admin.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "confirmed"
    # Paid: as after confirm-payment, its seat no longer counts toward the cap.
    assert (await reserve(client, user, show, show.seat_ids[10:])).status_code == 201
