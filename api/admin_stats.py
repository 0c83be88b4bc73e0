"""The guide's "Admin" statistics, all admin-only.

Tickets are *sold* while pending or confirmed. *Revenue* is the sum of the prices of confirmed
tickets only (see ``db/stats.py``); every figure is read from committed rows of PostgreSQL: of the
read replica when one is set (``Services.read_db``), so figures may trail the primary by up to
SEATLOCK_DATABASE_READ_MAX_LAG_SECONDS; the heavy aggregates stay off the primary.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from api.routing import Call, Router
from db import stats
from seatlock.errors import ValidationFailed

router = Router("Admin")

MAX_PERIOD_DAYS = 366
EARLIEST, LATEST = date(1970, 1, 1), date(2999, 12, 31)


class LimitQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10


# The handler refuses dates outside 1970-01-01..2999-12-31 (422); the schema says so by the year.
StatsDate = Annotated[
    date, msgspec.Meta(extra_json_schema={"pattern": "^(19[7-9][0-9]|2[0-9]{3})-"})
]


class PeriodQuery(msgspec.Struct, forbid_unknown_fields=True):
    start_date: StatsDate
    end_date: StatsDate
    period: stats.Period = "day"


class Count(msgspec.Struct):
    total: int


class Revenue(msgspec.Struct):
    total_revenue: Decimal
    confirmed_tickets: int


class RevenueBucket(msgspec.Struct):
    period_start: date
    revenue: Decimal
    tickets: int


class RevenueByPeriod(msgspec.Struct):
    start_date: date
    end_date: date
    period: str
    total_revenue: Decimal
    buckets: list[RevenueBucket]


class TicketTotals(msgspec.Struct):
    total_sold: int
    by_status: dict[str, int]


class PopularMovie(msgspec.Struct):
    movie_id: int
    title: str
    tickets_sold: int
    revenue: Decimal


class Today(msgspec.Struct):
    date: date
    tickets_sold: int
    revenue: Decimal
    new_users: int
    screenings: int


class RecentBooking(msgspec.Struct):
    ticket_id: int
    booking_id: int
    status: str
    price: Decimal
    booked_at: datetime
    user: dict[str, Any]
    movie: dict[str, Any]
    screening: dict[str, Any]
    seat: dict[str, Any]


@router.get("/api/v1/admin/stats/movies", access="admin", response=Count)
async def movies_count(call: Call) -> Count:
    """Get Movies Count."""
    return Count(await call.services.read_db.read(stats.count_movies))


@router.get("/api/v1/admin/stats/cinemas", access="admin", response=Count)
async def cinemas_count(call: Call) -> Count:
    """Get Cinemas Count."""
    return Count(await call.services.read_db.read(stats.count_cinemas))


@router.get("/api/v1/admin/stats/users", access="admin", response=Count)
async def users_count(call: Call) -> Count:
    """Get Users Count.

    Deleted accounts are not counted.
    """
    return Count(await call.services.read_db.read(stats.count_users))


@router.get(
    "/api/v1/admin/stats/bookings/recent",
    access="admin",
    query=LimitQuery,
    response=list[RecentBooking],
)
async def recent_bookings(call: Call) -> list[RecentBooking]:
    """Get Recent Bookings.

    The latest tickets, newest first, whatever their status.
    """
    rows = await call.services.read_db.read(stats.recent_tickets, call.query.limit)
    return [_recent(r) for r in rows]


def _recent(r: Any) -> RecentBooking:
    return RecentBooking(
        ticket_id=r["ticket_id"],
        booking_id=r["booking_id"],
        status=r["status"],
        price=r["price"],
        booked_at=r["booked_at"],
        user={"id": r["user_id"], "full_name": r["user_name"], "email": r["user_email"]},
        movie={"id": r["movie_id"], "title": r["movie_title"]},
        screening={
            "id": r["screening_id"],
            "starts_at": r["starts_at"],
            "cinema": r["cinema_name"],
            "room": r["room_name"],
        },
        seat={"id": r["seat_id"], "row": r["row_label"], "number": r["seat_number"]},
    )


@router.get("/api/v1/admin/stats/revenue", access="admin", response=Revenue)
async def revenue(call: Call) -> Revenue:
    """Get Total Revenue.

    The sum of the prices of all confirmed tickets.
    """
    row = await call.services.read_db.read(stats.total_revenue)
    return Revenue(row["revenue"], row["tickets"])


@router.get(
    "/api/v1/admin/stats/revenue/period",
    access="admin",
    query=PeriodQuery,
    response=RevenueByPeriod,
)
async def revenue_by_period(call: Call) -> RevenueByPeriod:
    """Get Revenue By Period.

    Confirmed tickets' prices per UTC day, week or month; every bucket of the range is
    present, empty ones at zero.
    """
    q: PeriodQuery = call.query
    if q.end_date < q.start_date:
        raise ValidationFailed("end_date must not be before start_date")
    if q.start_date < EARLIEST or q.end_date > LATEST:
        raise ValidationFailed(f"Dates must lie between {EARLIEST} and {LATEST}")
    if (q.end_date - q.start_date).days + 1 > MAX_PERIOD_DAYS:
        raise ValidationFailed(f"The range may span at most {MAX_PERIOD_DAYS} days")
    rows = await call.services.read_db.read(
        stats.revenue_by_period, q.start_date, q.end_date, q.period
    )
    buckets = [RevenueBucket(r["period_start"], r["revenue"], r["tickets"]) for r in rows]
    total = sum((b.revenue for b in buckets), Decimal(0))
    return RevenueByPeriod(q.start_date, q.end_date, q.period, total, buckets)


@router.get("/api/v1/admin/stats/tickets/total", access="admin", response=TicketTotals)
async def tickets_total(call: Call) -> TicketTotals:
    """Get Total Tickets Sold.

    Pending plus confirmed, and the count of every status.
    """
    by_status = await call.services.read_db.read(stats.tickets_by_status)
    return TicketTotals(by_status["pending"] + by_status["confirmed"], by_status)


@router.get(
    "/api/v1/admin/stats/movies/popular",
    access="admin",
    query=LimitQuery,
    response=list[PopularMovie],
)
async def popular_movies(call: Call) -> list[PopularMovie]:
    """Get Popular Movies.

    By tickets sold; revenue counts their confirmed tickets.
    """
    rows = await call.services.read_db.read(stats.popular_movies, call.query.limit)
    return [PopularMovie(r["movie_id"], r["title"], r["tickets_sold"], r["revenue"]) for r in rows]


@router.get("/api/v1/admin/stats/today", access="admin", response=Today)
async def today(call: Call) -> Today:
    """Get Today's Statistics.

    Of the current UTC day: tickets sold, revenue, new users, screenings starting.
    """
    r = await call.services.read_db.read(stats.today)
    return Today(r["day"], r["tickets_sold"], r["revenue"], r["new_users"], r["screenings"])
