from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx
import pytest

from tests import factories as make
from tests.support import Account

STATS = "/api/v1/admin/stats"
ROUTES = [
    "/movies",
    "/cinemas",
    "/users",
    "/bookings/recent",
    "/revenue",
    "/revenue/period?start_date=2026-01-01&end_date=2026-01-02",
    "/tickets/total",
    "/movies/popular",
    "/today",
]


async def get(client: httpx.AsyncClient, admin: Account, path: str) -> httpx.Response:
    return await client.get(STATS + path, headers=admin.headers)


@pytest.mark.parametrize("path", ROUTES)
async def test_admin_only(
    client: httpx.AsyncClient, user: Account, admin: Account, path: str
) -> None:
    assert (await client.get(STATS + path)).status_code == 401
    r = await client.get(STATS + path, headers=user.headers)
    assert r.status_code == 403
    assert r.json() == {"detail": "Admin privileges required"}
    assert (await client.get(STATS + path, headers=admin.headers)).status_code == 200


async def test_counts(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, user: Account
) -> None:
    movie = await make.movie(db)
    await make.movie(db, "Ran")
    await make.show(db, 4, movie_id=movie)
    await db.execute("UPDATE users SET deleted_at = now() WHERE id = $1", user.id)
    assert (await get(client, admin, "/movies")).json() == {"total": 2}
    assert (await get(client, admin, "/cinemas")).json() == {"total": 1}
    assert (await get(client, admin, "/users")).json() == {"total": 1}


async def test_revenue_counts_confirmed_tickets_only(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, user: Account
) -> None:
    show = await make.show(db, 4, movie_id=await make.movie(db))
    screening, seats = show.id, show.seat_ids
    await make.ticket(db, user.id, screening, seats[0], price="12.50")
    await make.ticket(db, user.id, screening, seats[1], price="7.25")
    await make.ticket(db, user.id, screening, seats[2], status="pending", price="100.00")
    await make.ticket(db, user.id, screening, seats[3], status="refunded", price="100.00")
    await make.ticket(db, user.id, screening, seats[3], status="cancelled", price="100.00")
    r = await get(client, admin, "/revenue")
    assert r.json() == {"total_revenue": 19.75, "confirmed_tickets": 2}
    r = await get(client, admin, "/tickets/total")
    assert r.json() == {
        "total_sold": 3,
        "by_status": {"pending": 1, "confirmed": 2, "cancelled": 1, "refunded": 1},
    }


async def test_recent_bookings_newest_first_with_limit(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, user: Account
) -> None:
    show = await make.show(db, 3, movie_id=await make.movie(db, "Alien"))
    screening, seats = show.id, show.seat_ids
    now = datetime.now(UTC)
    ids = [
        await make.ticket(db, user.id, screening, seat, at=now - timedelta(minutes=i))
        for i, seat in enumerate(seats)
    ]
    r = await client.get(f"{STATS}/bookings/recent?limit=2", headers=admin.headers)
    assert r.status_code == 200
    body = r.json()
    assert [b["ticket_id"] for b in body] == ids[:2]
    assert body[0]["user"] == {"id": user.id, "full_name": "Alice Example", "email": user.email}
    assert body[0]["movie"]["title"] == "Alien"
    assert body[0]["screening"]["id"] == screening
    assert body[0]["seat"] == {"id": seats[0], "row": "A", "number": 1}
    assert body[0]["price"] == 10.0
    for bad in ("0", "101", "x"):
        r = await client.get(f"{STATS}/bookings/recent?limit={bad}", headers=admin.headers)
        assert r.status_code == 422, bad


async def test_revenue_by_day_fills_gaps(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, user: Account
) -> None:
    show = await make.show(db, 4, movie_id=await make.movie(db))
    screening, seats = show.id, show.seat_ids
    jan = datetime(2026, 1, 1, 12, tzinfo=UTC)
    await make.ticket(db, user.id, screening, seats[0], at=jan)
    await make.ticket(db, user.id, screening, seats[1], at=jan + timedelta(days=2), price="5.50")
    await make.ticket(db, user.id, screening, seats[2], at=jan + timedelta(days=5))  # outside
    await make.ticket(db, user.id, screening, seats[3], status="pending", at=jan)
    r = await get(client, admin, "/revenue/period?start_date=2026-01-01&end_date=2026-01-04")
    assert r.status_code == 200
    body = r.json()
    assert body["total_revenue"] == 15.5
    assert body["period"] == "day"
    assert [(b["period_start"], b["revenue"], b["tickets"]) for b in body["buckets"]] == [
        ("2026-01-01", 10.0, 1),
        ("2026-01-02", 0, 0),
        ("2026-01-03", 5.5, 1),
        ("2026-01-04", 0, 0),
    ]


async def test_revenue_by_week_and_month(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, user: Account
) -> None:
    show = await make.show(db, 2, movie_id=await make.movie(db))
    screening, seats = show.id, show.seat_ids
    await make.ticket(db, user.id, screening, seats[0], at=datetime(2026, 1, 7, tzinfo=UTC))
    await make.ticket(db, user.id, screening, seats[1], at=datetime(2026, 3, 2, tzinfo=UTC))
    path = "/revenue/period?start_date=2026-01-01&end_date=2026-03-31&period=month"
    months = (await get(client, admin, path)).json()["buckets"]
    assert [(b["period_start"], b["tickets"]) for b in months] == [
        ("2026-01-01", 1),
        ("2026-02-01", 0),
        ("2026-03-01", 1),
    ]
    path = "/revenue/period?start_date=2026-01-01&end_date=2026-01-14&period=week"
    weeks = (await get(client, admin, path)).json()["buckets"]
    # 2026-01-01 is a Thursday: weeks start on the Mondays 2025-12-29, 2026-01-05, 2026-01-12.
    assert [(b["period_start"], b["tickets"]) for b in weeks] == [
        ("2025-12-29", 0),
        ("2026-01-05", 1),
        ("2026-01-12", 0),
    ]


@pytest.mark.parametrize(
    "query",
    [
        "start_date=2026-01-05&end_date=2026-01-04",
        "start_date=2025-01-01&end_date=2026-01-02",
        "start_date=2026-01-01",
        "start_date=2026-13-01&end_date=2026-12-01",
        "start_date=2026-01-01&end_date=2026-01-02&period=year",
        "start_date=2026-01-01&end_date=2026-01-02&bogus=1",
        "start_date=0001-01-01&end_date=0001-01-31&period=week",
        "start_date=9999-12-01&end_date=9999-12-31&period=month",
    ],
)
async def test_revenue_period_rejects_bad_ranges(
    client: httpx.AsyncClient, admin: Account, query: str
) -> None:
    r = await get(client, admin, f"/revenue/period?{query}")
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


async def test_revenue_period_allows_a_leap_year(client: httpx.AsyncClient, admin: Account) -> None:
    r = await get(client, admin, "/revenue/period?start_date=2028-01-01&end_date=2028-12-31")
    assert r.status_code == 200
    assert len(r.json()["buckets"]) == 366


async def test_popular_movies(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, user: Account
) -> None:
    a, b, c = [await make.movie(db, t) for t in ("A", "B", "C")]
    show_a = await make.show(db, 3, movie_id=a)
    sa, seats_a = show_a.id, show_a.seat_ids
    show_b = await make.show(db, 3, movie_id=b, starts_in=timedelta(days=2))
    sb, seats_b = show_b.id, show_b.seat_ids
    await make.show(db, 4, movie_id=c, starts_in=timedelta(days=3))
    for seat in seats_a[:2]:
        await make.ticket(db, user.id, sa, seat)
    await make.ticket(db, user.id, sa, seats_a[2], status="cancelled")
    await make.ticket(db, user.id, sb, seats_b[0], status="pending")
    await make.ticket(db, user.id, sb, seats_b[1])
    await make.ticket(db, user.id, sb, seats_b[2])
    body = (await get(client, admin, "/movies/popular")).json()
    # Pending tickets count as sold, cancelled ones do not; C sold nothing and is left out.
    assert body == [
        {"movie_id": b, "title": "B", "tickets_sold": 3, "revenue": 20.0},
        {"movie_id": a, "title": "A", "tickets_sold": 2, "revenue": 20.0},
    ]
    assert len((await get(client, admin, "/movies/popular?limit=1")).json()) == 1
    r = await client.get(f"{STATS}/movies/popular?limit=101", headers=admin.headers)
    assert r.status_code == 422


async def test_today(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, user: Account
) -> None:
    show = await make.show(db, 3, movie_id=await make.movie(db), starts_in=timedelta(days=0))
    screening, seats = show.id, show.seat_ids
    await make.ticket(db, user.id, screening, seats[0], price="9.00")
    await make.ticket(db, user.id, screening, seats[1], status="pending")
    yesterday = datetime.now(UTC) - timedelta(days=1, hours=1)
    await make.ticket(db, user.id, screening, seats[2], at=yesterday)
    body = (await get(client, admin, "/today")).json()
    assert body["date"] == datetime.now(UTC).date().isoformat()
    assert body["tickets_sold"] == 2
    assert body["revenue"] == 9.0
    assert body["new_users"] == 2  # user and admin
    assert body["screenings"] == 1
    assert date.fromisoformat(body["date"])
