"""Showtimes (a showtime is a screening): by movie, cinema, date and time window."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from api.caching import CATALOG
from api.discovery import Id, public
from api.reads import catalog_read
from api.rendering import JSON
from api.routing import Call, Router
from api.schemas import Page
from api.screenings import clock_now
from db import discovery
from db.discovery import ShowtimeFilters
from seatlock.errors import NotFound, ValidationFailed

router = Router("Showtimes")


class ShowtimeMovie(msgspec.Struct):
    id: int
    title: str
    duration_minutes: int
    poster_url: str | None
    age_rating: str | None


class ShowtimeCinema(msgspec.Struct):
    id: int
    name: str
    city: str
    address: str


class ShowtimeRoom(msgspec.Struct):
    id: int
    name: str
    room_type: str


class ShowtimeOut(msgspec.Struct):
    id: int
    movie_id: int
    cinema_id: int
    room_id: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    price: Decimal
    movie: ShowtimeMovie
    cinema: ShowtimeCinema
    room: ShowtimeRoom


class DateQuery(Page):
    """``date`` (YYYY-MM-DD, UTC): that day only; without it, upcoming showtimes."""

    date: dt.date | None = None


# Query values arrive as text: say which text (an ISO 8601 date-time).
Instant = Annotated[dt.datetime, msgspec.Meta(extra_json_schema={"format": "date-time"})]


class ShowtimeQuery(DateQuery):
    """``from``/``to``: ISO 8601 datetimes (UTC when no offset is given), start in [from, to)."""

    movie_id: Id | None = None
    cinema_id: Id | None = None
    starts_from: Instant | None = msgspec.field(default=None, name="from")
    starts_to: Instant | None = msgspec.field(default=None, name="to")


def showtime_out(row: Any) -> ShowtimeOut:
    return ShowtimeOut(
        id=row["id"],
        movie_id=row["movie_id"],
        cinema_id=row["cinema_id"],
        room_id=row["room_id"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        price=row["price"],
        movie=ShowtimeMovie(
            row["movie_id"],
            row["movie_title"],
            row["duration_minutes"],
            row["poster_url"],
            row["age_rating"],
        ),
        cinema=ShowtimeCinema(
            row["cinema_id"], row["cinema_name"], row["cinema_city"], row["cinema_address"]
        ),
        room=ShowtimeRoom(row["room_id"], row["room_name"], row["room_type"]),
    )


def utc(value: dt.datetime | None, name: str) -> dt.datetime | None:
    """Aware and in UTC; a naive value is taken to be UTC already."""
    if value is None or value.tzinfo is None:
        return None if value is None else value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0
        raise ValidationFailed(f"`{name}` is out of range") from None


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime | None]:
    """The [start, end) of a day in UTC."""
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    try:
        return start, start + dt.timedelta(days=1)
    except OverflowError:  # 9999-12-31 has no next day in Python
        return start, None


def window(query: DateQuery, now: dt.datetime) -> tuple[dt.datetime, dt.datetime | None]:
    """One day when a date is given, otherwise from ``now`` on."""
    if query.date is None:
        return now, None
    return day_bounds(query.date)


def showtime_filters(query: ShowtimeQuery, now: dt.datetime) -> ShowtimeFilters:
    start, end = utc(query.starts_from, "from"), utc(query.starts_to, "to")
    if start is not None and end is not None and start >= end:
        raise ValidationFailed("`from` must be before `to`")
    if query.date is not None:
        day_start, day_end = day_bounds(query.date)
        start = day_start if start is None else max(start, day_start)
        if day_end is not None:
            end = day_end if end is None else min(end, day_end)
    elif start is None:
        start = now
    return ShowtimeFilters(query.movie_id, query.cinema_id, start, end)


async def respond(call: Call, f: ShowtimeFilters, page: Page) -> list[ShowtimeOut]:
    rows = await catalog_read(call, discovery.list_showtimes, f, page.skip, page.limit)
    return [showtime_out(r) for r in rows]


@router.get("/api/v1/showtimes/", query=ShowtimeQuery, response=list[ShowtimeOut], cache=CATALOG)
async def list_showtimes(call: Call) -> JSON:
    """List Showtimes by movie, cinema, date and a from/to window (default: upcoming)."""
    query: ShowtimeQuery = call.query
    return public(await respond(call, showtime_filters(query, clock_now(call)), query))


@router.get("/api/v1/showtimes/{showtime_id:int}", response=ShowtimeOut, cache=CATALOG)
async def get_showtime(call: Call) -> JSON:
    """Get Showtime, with its movie, cinema and room."""
    row = await catalog_read(call, discovery.get_showtime, call.params["showtime_id"])
    if row is None:
        raise NotFound("Showtime not found")
    return public(showtime_out(row))


@router.get(
    "/api/v1/movies/{movie_id:int}/showtimes", query=Page, response=list[ShowtimeOut], cache=CATALOG
)
async def movie_showtimes(call: Call) -> JSON:
    """Get Movie Showtimes: upcoming screenings with cinema and room."""
    page: Page = call.query
    movie_id: int = call.params["movie_id"]
    f = ShowtimeFilters(movie_id=movie_id, starts_from=clock_now(call))
    showtimes = await respond(call, f, page)
    if not showtimes and not await catalog_read(call, discovery.movie_exists, movie_id):
        raise NotFound("Movie not found")
    return public(showtimes)


@router.get(
    "/api/v1/cinemas/{cinema_id:int}/showtimes",
    query=DateQuery,
    response=list[ShowtimeOut],
    cache=CATALOG,
)
async def cinema_showtimes(call: Call) -> JSON:
    """Get Cinema Showtimes: upcoming, or those of one day (date=YYYY-MM-DD, UTC)."""
    query: DateQuery = call.query
    cinema_id: int = call.params["cinema_id"]
    start, end = window(query, clock_now(call))
    f = ShowtimeFilters(cinema_id=cinema_id, starts_from=start, starts_before=end)
    showtimes = await respond(call, f, query)
    if not showtimes and not await catalog_read(call, discovery.cinema_exists, cinema_id):
        raise NotFound("Cinema not found")
    return public(showtimes)
