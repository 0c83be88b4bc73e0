"""A hold ends when its screening starts, if that comes first: booking is refused from the start
on, so a hold that outlived it promised a time to pay that no payment could use."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
import httpx

from tests import factories as make
from tests.support import RESERVE, Account, reserve

EXTEND = "/api/v1/seat-reservations/extend"


def at(text: str, when: datetime) -> bool:
    """Whether an answer's time is ``when`` (Redis keeps the start in whole milliseconds)."""
    return abs(datetime.fromisoformat(text) - when) < timedelta(milliseconds=1)


async def test_a_hold_taken_just_before_the_start_ends_at_the_start(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    # Booking is refused once the screening starts: a hold that outlived the start (it was
    # "Reserved 1 seat for 5 minutes" 40 s before it) promised a time to pay no payment could use.
    show = await make.show(db, 4, starts_in=timedelta(seconds=40))
    starts_at = await db.fetchval("SELECT starts_at FROM screenings WHERE id = $1", show.id)
    r = await reserve(client, user, show, show.seat_ids[:1])
    assert r.status_code == 201, r.text
    body = r.json()
    assert at(body["reservations"][0]["expires_at"], starts_at)
    assert body["message"] in {f"Reserved 1 seat for {n} seconds" for n in range(35, 41)}
    assert body["expires_in_minutes"] <= 1
    best = {"screening_id": show.id, "count": 2}
    r = await client.post(f"{RESERVE}-best", json=best, headers=user.headers)
    assert r.status_code == 201, r.text
    assert all(at(row["expires_at"], starts_at) for row in r.json()["reservations"])
    r = await client.post(
        f"{EXTEND}?additional_minutes=5",
        json={"screening_id": show.id, "seat_ids": show.seat_ids[:1]},
        headers=user.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["message"] == (
        "Reservation for 1 seat not extended: a hold ends when the screening starts"
    )
    assert at(r.json()["reservations"][0]["expires_at"], starts_at)


async def test_an_extension_stops_at_the_start(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 2, starts_in=timedelta(minutes=8))
    starts_at = await db.fetchval("SELECT starts_at FROM screenings WHERE id = $1", show.id)
    r = await reserve(client, user, show, show.seat_ids[:1])
    assert r.status_code == 201, r.text
    expires_at = datetime.fromisoformat(r.json()["reservations"][0]["expires_at"])
    assert expires_at < starts_at - timedelta(minutes=2)  # 5 minutes
    r = await client.post(
        f"{EXTEND}?additional_minutes=15",
        json={"screening_id": show.id, "seat_ids": show.seat_ids[:1]},
        headers=user.headers,
    )
    assert r.status_code == 200, r.text
    assert at(r.json()["reservations"][0]["expires_at"], starts_at)
    assert r.json()["message"] in {
        f"Extended reservation for 1 seat by {n} minutes: a hold ends when the screening starts"
        for n in (2, 3)
    }
