"""Figures for the admin dashboard, each one SQL statement over committed rows.

Definitions used throughout (days are UTC days):
- a ticket is *sold* while its status is pending or confirmed (cancelled and refunded are not);
- *revenue* is the sum of the prices of confirmed tickets, counted on the day they were
  confirmed (``coalesce(confirmed_at, booked_at)``); pending, cancelled and refunded tickets
  bring none.
One statement per figure means one snapshot, so every number agrees with the tickets table.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

import asyncpg

Period = Literal["day", "week", "month"]
SOLD = "t.status IN ('pending', 'confirmed')"
EARNED_AT = "coalesce(t.confirmed_at, t.booked_at)"


async def count_movies(db: asyncpg.Pool) -> int:
    return int(await db.fetchval("SELECT count(*) FROM movies"))


async def count_cinemas(db: asyncpg.Pool) -> int:
    return int(await db.fetchval("SELECT count(*) FROM cinemas"))


async def count_users(db: asyncpg.Pool) -> int:
    """Accounts that have not been deleted."""
    return int(await db.fetchval("SELECT count(*) FROM users WHERE deleted_at IS NULL"))


async def recent_tickets(db: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT t.id AS ticket_id, t.booking_id, t.status, t.price, t.booked_at,"
        " u.id AS user_id, u.full_name AS user_name, u.email AS user_email,"
        " m.id AS movie_id, m.title AS movie_title,"
        " s.id AS screening_id, s.starts_at, c.name AS cinema_name, r.name AS room_name,"
        " se.id AS seat_id, se.row_label, se.seat_number"
        " FROM tickets t"
        " JOIN users u ON u.id = t.user_id"
        " JOIN screenings s ON s.id = t.screening_id"
        " JOIN movies m ON m.id = s.movie_id"
        " JOIN rooms r ON r.id = s.room_id"
        " JOIN cinemas c ON c.id = r.cinema_id"
        " JOIN seats se ON se.id = t.seat_id"
        " ORDER BY t.booked_at DESC, t.id DESC LIMIT $1",
        limit,
    )


async def total_revenue(db: asyncpg.Pool) -> asyncpg.Record:
    """Revenue (sum of confirmed tickets' prices) and the number of confirmed tickets."""
    row = await db.fetchrow(
        "SELECT coalesce(sum(t.price), 0) AS revenue, count(*) AS tickets"
        " FROM tickets t WHERE t.status = 'confirmed'"
    )
    assert row is not None
    return row


async def revenue_by_period(
    db: asyncpg.Pool, start: date, end: date, period: Period
) -> list[asyncpg.Record]:
    """Revenue per day, week (from Monday) or month, from ``start`` to ``end`` inclusive.

    Every bucket of the range is present (generate_series), empty ones with zero. The first
    bucket is labelled with the start of its week or month but counts only days from ``start``.
    """
    return await db.fetch(
        "WITH sales AS ("
        f" SELECT date_trunc($3, {EARNED_AT} AT TIME ZONE 'UTC') AS bucket, t.price"
        " FROM tickets t WHERE t.status = 'confirmed'"
        f" AND {EARNED_AT} >= $1::date::timestamp AT TIME ZONE 'UTC'"
        f" AND {EARNED_AT} < ($2::date + 1)::timestamp AT TIME ZONE 'UTC')"
        " SELECT b.bucket::date AS period_start, coalesce(sum(sales.price), 0) AS revenue,"
        " count(sales.price) AS tickets"
        " FROM generate_series(date_trunc($3, $1::date::timestamp), $2::date::timestamp,"
        " ('1 ' || $3)::interval) AS b (bucket)"
        " LEFT JOIN sales ON sales.bucket = b.bucket"
        " GROUP BY b.bucket ORDER BY b.bucket",
        start,
        end,
        period,
    )


async def tickets_by_status(db: asyncpg.Pool) -> dict[str, int]:
    rows = await db.fetch("SELECT status, count(*) AS n FROM tickets t GROUP BY status")
    counts = dict.fromkeys(("pending", "confirmed", "cancelled", "refunded"), 0)
    counts.update({r["status"]: int(r["n"]) for r in rows})
    return counts


async def popular_movies(db: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    """Movies by tickets sold, most first (ties by id); revenue from their confirmed tickets."""
    return await db.fetch(
        "SELECT m.id AS movie_id, m.title, count(*) AS tickets_sold,"
        " coalesce(sum(t.price) FILTER (WHERE t.status = 'confirmed'), 0) AS revenue"
        " FROM tickets t"
        " JOIN screenings s ON s.id = t.screening_id"
        " JOIN movies m ON m.id = s.movie_id"
        f" WHERE {SOLD}"
        " GROUP BY m.id ORDER BY tickets_sold DESC, m.id ASC LIMIT $1",
        limit,
    )


async def today(db: asyncpg.Pool) -> asyncpg.Record:
    """Today's (UTC) tickets sold, revenue, new accounts and screenings starting."""
    row = await db.fetchrow(
        "WITH d AS (SELECT (now() AT TIME ZONE 'UTC')::date AS day),"
        " w AS (SELECT day, day::timestamp AT TIME ZONE 'UTC' AS lo,"
        " (day + 1)::timestamp AT TIME ZONE 'UTC' AS hi FROM d)"
        " SELECT w.day,"
        f" (SELECT count(*) FROM tickets t WHERE {SOLD}"
        "  AND t.booked_at >= w.lo AND t.booked_at < w.hi) AS tickets_sold,"
        " (SELECT coalesce(sum(t.price), 0) FROM tickets t WHERE t.status = 'confirmed'"
        f"  AND {EARNED_AT} >= w.lo AND {EARNED_AT} < w.hi) AS revenue,"
        " (SELECT count(*) FROM users u WHERE u.deleted_at IS NULL"
        "  AND u.created_at >= w.lo AND u.created_at < w.hi) AS new_users,"
        " (SELECT count(*) FROM screenings s"
        "  WHERE s.starts_at >= w.lo AND s.starts_at < w.hi) AS screenings"
        " FROM w"
    )
    assert row is not None
    return row
