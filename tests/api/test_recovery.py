"""Redis losing its data mid-run: sold seats stay sold, nothing is sold twice (invariant 7)."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
from redis.asyncio import Redis

from tests import factories as make
from tests.support import Account, availability, reserve

BOOK = "/api/v1/tickets/book"


async def test_flushall_keeps_sold_seats_sold(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    user: Account,
    other_user: Account,
) -> None:
    show = await make.show(db, 4)
    sold, held, free = show.seat_ids[:3]
    body = {"screening_id": show.id, "seat_ids": [sold], "payment_id": "pay_before_flush"}
    assert (await client.post(BOOK, json=body, headers=user.headers)).status_code == 201
    assert (await reserve(client, user, show, [held])).status_code == 201

    await redis.flushall()

    seats = await availability(client, show)
    assert seats[sold]["status"] == "booked"
    assert seats[free]["status"] == "available"
    r = await reserve(client, other_user, show, [sold])
    assert r.status_code == 409
    assert r.json() == {"detail": f"Seats [{sold}] are already booked"}
    # Many buyers at once after the loss: the sold seat is never sold again.
    attempts = await asyncio.gather(
        *(
            client.post(BOOK, json={"screening_id": show.id, "seat_ids": [sold, free]}, headers=h)
            for h in (other_user.headers, user.headers)
        )
    )
    assert {a.status_code for a in attempts} == {409}
    rows = await db.fetch(
        "SELECT seat_id, count(*) AS n FROM tickets WHERE screening_id = $1"
        " AND status IN ('pending', 'confirmed') GROUP BY seat_id",
        show.id,
    )
    assert {r["seat_id"]: r["n"] for r in rows} == {sold: 1}
    # The lost hold is gone, not resurrected; its seat can be held again.
    assert (await reserve(client, other_user, show, [held])).status_code == 201


async def test_a_ticket_in_postgres_wins_over_a_stale_redis(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    user: Account,
    other_user: Account,
) -> None:
    """Redis says free but PostgreSQL has an active ticket: the booking is refused (409)."""
    show = await make.show(db, 2)
    seat = show.seat_ids[0]
    body = {"screening_id": show.id, "seat_ids": [seat], "payment_id": "pay_judge"}
    assert (await client.post(BOOK, json=body, headers=user.headers)).status_code == 201
    # Make Redis forget the sale only (as if the sell step was lost), keeping the layout loaded.
    for key in await redis.keys(f"sl:{{scr:{show.id}}}:sold"):
        await redis.delete(key)
    r = await client.post(
        BOOK, json={"screening_id": show.id, "seat_ids": [seat]}, headers=other_user.headers
    )
    assert r.status_code == 409
    count = await db.fetchval(
        "SELECT count(*) FROM tickets WHERE seat_id = $1 AND status IN ('pending', 'confirmed')",
        seat,
    )
    assert count == 1
    assert await db.fetchval("SELECT count(*) FROM bookings") == 1
