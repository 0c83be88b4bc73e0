"""Discovery: cinema finder, coming soon, trending, filters, advanced search, recommendations.

Catalog rows are made by direct SQL (tests/factories.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from db import discovery
from tests import factories as make
from tests.support import PUBLIC, Account, LiveServer, ids

NOW = dt.datetime.now(dt.UTC)
TODAY = NOW.date()

# -- pagination, shared by every list -------------------------------------------------------------

LISTS = [
    "/api/v1/cinemas/search",
    "/api/v1/movies/coming-soon",
    "/api/v1/movies/trending",
    "/api/v1/movies/filter",
    "/api/v1/movies/advanced-search",
    "/api/v1/showtimes/",
    "/api/v1/casts/",
]


@pytest.mark.parametrize("path", LISTS)
async def test_lists_validate_pagination(client: httpx.AsyncClient, path: str) -> None:
    for params in ({"limit": 201}, {"limit": 0}, {"skip": -1}, {"limit": "ten"}):
        r = await client.get(path, params=params)
        assert r.status_code == 422, (params, r.text)
        assert "detail" in r.json()
    r = await client.get(path, params={"limit": 200})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == PUBLIC


async def test_pages_are_stable_with_ties(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    soon = TODAY + dt.timedelta(days=5)
    made = [await make.movie(db, "Same", rating=7, release_date=soon) for _ in range(7)]
    seen: list[int] = []
    for skip in range(0, 7, 2):
        seen += ids(
            await client.get("/api/v1/movies/coming-soon", params={"skip": skip, "limit": 2})
        )
    assert seen == sorted(made)


# -- cinemas -------------------------------------------------------------------------------------


async def test_search_cinemas_by_name_city_and_amenity(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    grand = await make.cinema(db, "Grand Rex", "Paris", ["IMAX", "Parking"])
    odeon = await make.cinema(db, "Odeon Leicester", "London", ["imax"])
    small = await make.cinema(db, "Le 100% Cinema", "paris", [])
    url = "/api/v1/cinemas/search"
    assert ids(await client.get(url)) == [grand, small, odeon]  # by name
    assert ids(await client.get(url, params={"name": "REX"})) == [grand]
    assert ids(await client.get(url, params={"city": "Paris"})) == [grand, small]
    assert ids(await client.get(url, params={"amenity": "imax"})) == [grand, odeon]
    assert ids(await client.get(url, params={"city": "paris", "amenity": "IMAX"})) == [grand]
    # LIKE wildcards in the input are plain characters.
    assert ids(await client.get(url, params={"name": "100%"})) == [small]
    assert ids(await client.get(url, params={"name": "%"})) == [small]
    assert ids(await client.get(url, params={"name": "_"})) == []
    body = (await client.get(url, params={"name": "grand"})).json()[0]
    assert body["amenities"] == ["IMAX", "Parking"]
    assert body["city"] == "Paris"
    assert (await client.get(url, params={"name": ""})).status_code == 422
    assert (await client.get(url, params={"name": "a\x00b"})).status_code == 422


async def test_cinema_amenities(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    cinema = await make.cinema(db, "Grand Rex", amenities=["IMAX", "Bar"])
    r = await client.get(f"/api/v1/cinemas/{cinema}/amenities")
    assert r.status_code == 200
    assert r.json() == {"cinema_id": cinema, "amenities": ["IMAX", "Bar"]}
    assert r.headers["cache-control"] == PUBLIC
    r = await client.get(f"/api/v1/cinemas/{cinema + 1000}/amenities")
    assert r.status_code == 404
    assert r.json() == {"detail": "Cinema not found"}


async def test_cinema_movies_lists_upcoming_screenings_only(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    cinema = await make.cinema(db, "Grand Rex")
    elsewhere = await make.room(db, await make.cinema(db, "Other"))
    room, room2 = await make.room(db, cinema), await make.room(db, cinema, "Hall 2")
    later, sooner, past, other = [await make.movie(db, t) for t in ("Later", "Sooner", "Past", "X")]
    await make.screening(db, later, room, NOW + dt.timedelta(days=3))
    await make.screening(db, later, room2, NOW + dt.timedelta(days=4))
    await make.screening(db, sooner, room, NOW + dt.timedelta(days=1))
    await make.screening(db, past, room, NOW - dt.timedelta(days=1))
    await make.screening(db, other, elsewhere, NOW + dt.timedelta(days=1))
    r = await client.get(f"/api/v1/cinemas/{cinema}/movies")
    assert ids(r) == [sooner, later]
    assert r.json()[1]["upcoming_showtimes"] == 2
    assert r.headers["cache-control"] == PUBLIC
    assert ids(await client.get(f"/api/v1/cinemas/{cinema}/movies", params={"skip": 1})) == [later]
    empty = await make.cinema(db, "Empty")
    assert ids(await client.get(f"/api/v1/cinemas/{empty}/movies")) == []
    r = await client.get(f"/api/v1/cinemas/{empty + 1000}/movies")
    assert r.status_code == 404
    assert (await client.get("/api/v1/cinemas/99999999999999999999/movies")).status_code == 404


# -- movies --------------------------------------------------------------------------------------


async def test_coming_soon_is_future_releases_soonest_first(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    far = await make.movie(db, "Far", release_date=TODAY + dt.timedelta(days=60))
    near = await make.movie(db, "Near", release_date=TODAY + dt.timedelta(days=2))
    await make.movie(db, "Out", release_date=TODAY - dt.timedelta(days=2))
    await make.movie(db, "Today", release_date=TODAY)
    await make.movie(db, "Undated")
    r = await client.get("/api/v1/movies/coming-soon")
    assert ids(r) == [near, far]
    assert r.headers["cache-control"] == PUBLIC
    assert r.json()[0]["release_date"] == str(TODAY + dt.timedelta(days=2))


async def test_trending_counts_last_week_sales_ties_by_rating(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    room = await make.room(db, await make.cinema(db, "Grand Rex"))
    hit, tie_low, tie_high, old, cancelled, unsold = [
        await make.movie(db, title, rating=rating)
        for title, rating in (
            ("Hit", 5),
            ("TieLow", 6),
            ("TieHigh", 8),
            ("Old", 9.9),
            ("Cancelled", 9.8),
            ("Unsold", 9.7),
        )
    ]
    starts = NOW + dt.timedelta(days=1)
    for movie, count, status, at in (
        (hit, 3, "confirmed", NOW),
        # Pending counts too: booked now, within its payment deadline (the server's unpaid
        # expiry would cancel one booked days ago at any moment, and the count with it).
        (tie_low, 1, "pending", dt.datetime.now(dt.UTC)),
        (tie_high, 1, "confirmed", NOW - dt.timedelta(days=6)),  # still within the week
        (old, 5, "confirmed", NOW - dt.timedelta(days=8)),
        (cancelled, 5, "cancelled", NOW),
    ):
        screening = await make.screening(db, movie, room, starts)
        starts += dt.timedelta(hours=3)
        await make.sold_seats(db, user.id, screening, count, status, at)
    unrated = await make.movie(db, "Unrated")
    r = await client.get("/api/v1/movies/trending")
    assert ids(r) == [hit, tie_high, tie_low, old, cancelled, unsold, unrated]
    assert [m["tickets_sold"] for m in r.json()] == [3, 1, 1, 0, 0, 0, 0]
    assert r.headers["cache-control"] == PUBLIC
    for limit in (1, 2):  # every page is its slice of the whole list
        pages = [
            await client.get("/api/v1/movies/trending", params={"skip": skip, "limit": limit})
            for skip in range(8)
        ]
        assert [ids(page) for page in pages] == [ids(r)[skip : skip + limit] for skip in range(8)]


def sold(r: httpx.Response) -> list[tuple[str, int]]:
    assert r.status_code == 200, r.text
    return [(m["title"], m["tickets_sold"]) for m in r.json()]


async def test_trending_ranks_by_a_kept_count_of_sales_and_reads_movies_fresh(
    make_server: Callable[..., LiveServer],
    db: asyncpg.Connection,
    user: Account,
    other_user: Account,
    sales_counts: list[int],
) -> None:
    room = await make.room(db, await make.cinema(db, "Grand Rex"))
    heat, ronin = await make.movie(db, "Heat", rating=5), await make.movie(db, "Ronin", rating=9)
    heat_show = await make.screening(db, heat, room, NOW + dt.timedelta(days=1))
    ronin_show = await make.screening(db, ronin, room, NOW + dt.timedelta(days=2))
    await make.sold_seats(db, other_user.id, heat_show, 2)
    ttl = 1.5
    live = make_server(sales_cache_seconds=ttl)
    async with httpx.AsyncClient(base_url=live.url, headers=user.headers, timeout=15) as c:
        counted_at = time.monotonic()
        # Signed in, and at once from many: one count, shared.
        first = await asyncio.gather(*(c.get("/api/v1/movies/trending") for _ in range(8)))
        assert {tuple(sold(r)) for r in first} == {(("Heat", 2), ("Ronin", 0))}
        assert len(sales_counts) == 1
        await make.sold_seats(db, other_user.id, ronin_show, 3)
        await db.execute("UPDATE movies SET title = 'Heat 2' WHERE id = $1", heat)
        again = await c.get("/api/v1/movies/trending")
        if time.monotonic() - counted_at < ttl:  # a slow machine may take longer than the TTL
            # The count is the kept one; the movie is what it is now.
            assert sold(again) == [("Heat 2", 2), ("Ronin", 0)]
            assert len(sales_counts) == 1
        await asyncio.sleep(max(0.0, counted_at + ttl + 0.05 - time.monotonic()))
        assert sold(await c.get("/api/v1/movies/trending")) == [("Ronin", 3), ("Heat 2", 2)]
        # Recommendations (the reader bought nothing: plain popularity) rank by the same count.
        assert sold(await c.get("/api/v1/movies/recommended")) == [("Ronin", 3), ("Heat 2", 2)]
        assert len(sales_counts) == 2


async def test_a_failed_count_of_sales_is_not_kept(
    make_server: Callable[..., LiveServer],
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await make.movie(db, "Heat")
    real, failures = discovery.recent_sales, [1]

    async def failing_once(pool: Any) -> discovery.Sales:
        if failures:
            failures.pop()
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
        return await real(pool)

    monkeypatch.setattr(discovery, "recent_sales", failing_once)
    live = make_server(sales_cache_seconds=60)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as c:
        down = await c.get("/api/v1/movies/trending")
        assert down.status_code == 503, down.text
        assert "retry-after" in down.headers
        assert sold(await c.get("/api/v1/movies/trending")) == [("Heat", 0)]


async def test_filter_by_every_criterion(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    drama = await make.movie(
        db,
        "Drama One",
        genre="Drama, Crime",
        language="fr",
        rating=8.1,
        duration_minutes=95,
        release_date=dt.date(2020, 5, 1),
        age_rating="PG-13",
    )
    action = await make.movie(
        db,
        "Action One",
        genre="Action",
        language="en",
        rating=6.0,
        duration_minutes=150,
        release_date=dt.date(2023, 1, 1),
        age_rating="R",
    )
    unrated = await make.movie(db, "Unrated", genre="crime", release_date=None)
    url = "/api/v1/movies/filter"
    assert set(ids(await client.get(url))) == {drama, action, unrated}
    assert ids(await client.get(url, params={"genre": "crime"})) == [drama, unrated]
    assert ids(await client.get(url, params={"genre": "Cri"})) == []
    assert ids(await client.get(url, params={"language": "FR"})) == [drama]
    assert ids(await client.get(url, params={"min_rating": 7})) == [drama]
    assert ids(await client.get(url, params={"max_duration": 120})) == [drama, unrated]
    dates = {"release_date_from": "2021-01-01", "release_date_to": "2023-01-01"}
    assert ids(await client.get(url, params=dates)) == [action]
    assert ids(await client.get(url, params={"age_rating": "pg-13"})) == [drama]
    both: dict[str, Any] = {"genre": "crime", "max_duration": 100, "min_rating": 8}
    assert ids(await client.get(url, params=both)) == [drama]
    for bad in (
        {"min_rating": 11},
        {"min_rating": "good"},
        {"max_duration": 0},
        {"max_duration": 10**20},
        {"release_date_from": "2021-13-01"},
        {"release_date_from": "2024-01-01", "release_date_to": "2023-01-01"},
        {"genre": ""},
    ):
        r = await client.get(url, params=bad)
        assert r.status_code == 422, (bad, r.text)


async def test_advanced_search_sorts_and_filters(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    a = await make.movie(
        db, "Alpha Night", genre="Drama", rating=6, release_date=dt.date(2001, 1, 1)
    )
    b = await make.movie(
        db, "beta night", genre="Drama", rating=9, release_date=dt.date(1999, 1, 1)
    )
    c = await make.movie(db, "Gamma Night", genre="Comedy", rating=7, release_date=None)
    d = await make.movie(db, "Delta", genre="Drama", rating=8, description="a long night")
    url = "/api/v1/movies/advanced-search"
    r = await client.get(url, params={"q": "night"})
    # Title matches (weight A) outrank a description match (weight D).
    assert ids(r)[-1] == d
    assert {m["match"] for m in r.json()} == {"text"}
    assert ids(await client.get(url, params={"q": "night", "sort_by": "title"})) == [a, b, d, c]
    desc = {"q": "night", "sort_by": "title", "order": "desc"}
    assert ids(await client.get(url, params=desc)) == [c, d, b, a]
    assert ids(await client.get(url, params={"q": "night", "sort_by": "rating"})) == [b, d, c, a]
    by_date = {"q": "night", "sort_by": "release_date", "order": "asc"}
    assert ids(await client.get(url, params=by_date)) == [b, a, c, d]
    drama: dict[str, Any] = {"q": "night", "genre": "drama", "min_rating": 7}
    assert set(ids(await client.get(url, params=drama))) == {b, d}
    assert ids(await client.get(url, params={"genre": "comedy"})) == [c]
    assert ids(await client.get(url)) == [b, d, c, a]  # no query: best rated first
    for params in ({}, {"q": "night"}, {"q": "night", "sort_by": "title"}):  # pages of one
        whole = ids(await client.get(url, params=params))
        pages = [{**params, "skip": skip, "limit": 1} for skip in range(5)]
        got = [ids(await client.get(url, params=page)) for page in pages]
        assert got == [[movie] for movie in whole] + [[]], params
    for bad in ({"sort_by": "popularity"}, {"order": "up"}, {"q": "  "}, {"q": "x" * 201}):
        r = await client.get(url, params=bad)
        assert r.status_code == 422, (bad, r.text)


# -- recommendations -----------------------------------------------------------------------------


async def test_recommended_needs_a_token(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/movies/recommended")
    assert r.status_code == 401
    assert r.json() == {"detail": "Not authenticated"}
    bad = {"Authorization": "Bearer nope"}
    assert (await client.get("/api/v1/movies/recommended", headers=bad)).status_code == 401


async def test_recommended_for_a_new_user_is_popular_upcoming(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    room = await make.room(db, await make.cinema(db, "Grand Rex"))
    popular, quiet, coming = [
        await make.movie(db, t, rating=r) for t, r in (("Popular", 5), ("Quiet", 9), ("Coming", 1))
    ]
    await db.execute(
        "UPDATE movies SET release_date = $1 WHERE id = $2", TODAY + dt.timedelta(9), coming
    )
    await make.movie(db, "Not showing", rating=10)
    showing = await make.screening(db, popular, room, NOW + dt.timedelta(days=1))
    await make.screening(db, quiet, room, NOW + dt.timedelta(days=2))
    await make.sold_seats(db, other_user.id, showing, 4)
    r = await client.get("/api/v1/movies/recommended", headers=user.headers)
    assert ids(r) == [popular, quiet, coming]
    assert r.json()[0]["reasons"] == ["popular"]
    assert "public" not in r.headers.get("cache-control", "")


async def test_recommended_uses_favorites_preferences_tickets_and_searches(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    fav_cinema = await make.cinema(db, "Favorite")
    fav_room, room = (
        await make.room(db, fav_cinema),
        await make.room(db, await make.cinema(db, "Y")),
    )
    seen = await make.movie(db, "Seen", genre="Horror")
    at_fav = await make.movie(db, "At Favorite", genre="Comedy")
    horror = await make.movie(db, "Scary", genre="Horror", rating=1)
    western = await make.movie(db, "Dusty", genre="Western", rating=2)
    searched = await make.movie(db, "Submarine Story", genre="War", rating=3)
    plain = await make.movie(db, "Plain", genre="Comedy", rating=9)
    when = NOW + dt.timedelta(days=1)
    for i, (movie, hall) in enumerate(
        [
            (seen, room),
            (at_fav, fav_room),
            (horror, room),
            (western, room),
            (searched, room),
            (plain, room),
        ]
    ):
        screening = await make.screening(db, movie, hall, when + dt.timedelta(hours=3 * i))
        if movie == seen:
            await make.sold_seats(db, user.id, screening)
    await db.execute(
        'UPDATE users SET preferences = \'{"genres": ["western"]}\' WHERE id = $1', user.id
    )
    assert (
        await client.post(f"/api/v1/cinemas/{fav_cinema}/favorite", headers=user.headers)
    ).status_code == 200
    r = await client.get("/api/v1/movies/search", params={"q": "submarine"}, headers=user.headers)
    assert ids(r) == [searched]
    r = await client.get("/api/v1/movies/recommended", headers=user.headers)
    got = {m["id"]: m["reasons"] for m in r.json()}
    assert seen not in got  # already bought
    assert ids(r)[0] == at_fav
    assert got[at_fav] == ["favorite_cinema"]
    assert got[horror] == ["liked_genre"]
    assert got[western] == ["preferred_genre"]
    assert got[searched] == ["searched"]
    assert ids(r)[-1] == plain  # best rated, but no signal for it


async def test_recommended_survives_odd_preferences(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    room = await make.room(db, await make.cinema(db, "X"))
    movie = await make.movie(db, "Any")
    await make.screening(db, movie, room, NOW + dt.timedelta(days=1))
    for prefs in ('{"genres": "drama"}', '{"genres": [1, null]}', "[]", "{}"):
        await db.execute("UPDATE users SET preferences = $1::jsonb WHERE id = $2", prefs, user.id)
        r = await client.get("/api/v1/movies/recommended", headers=user.headers)
        assert ids(r) == [movie], prefs


async def test_recommended_uses_liked_reviews_when_there_are_reviews(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    if not await db.fetchval("SELECT to_regclass('public.reviews') IS NOT NULL"):
        pytest.skip("no reviews table in this schema")
    room = await make.room(db, await make.cinema(db, "X"))
    loved = await make.movie(db, "Loved", genre="Musical")
    hated = await make.movie(db, "Hated", genre="Horror")
    musical = await make.movie(db, "Sing", genre="Musical")
    horror = await make.movie(db, "Boo", genre="Horror", rating=9)
    for i, movie in enumerate((musical, horror)):
        await make.screening(db, movie, room, NOW + dt.timedelta(days=1 + i))
    await db.executemany(
        "INSERT INTO reviews (movie_id, user_id, rating, content) VALUES ($1, $2, $3, 'x')",
        [(loved, user.id, 5), (hated, user.id, 1)],
    )
    r = await client.get("/api/v1/movies/recommended", headers=user.headers)
    assert ids(r) == [musical, horror]
    assert [m["reasons"] for m in r.json()] == [["liked_genre"], ["popular"]]


async def test_coming_soon_goes_by_the_utc_day_whatever_the_database_time_zone(
    db: asyncpg.Connection,
) -> None:
    # Every day of the API is a UTC calendar day; PostgreSQL's current_date is the session's.
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    if now.hour < 12:  # a zone where it is still yesterday
        await db.execute("SET TIME ZONE 'Etc/GMT+12'")
        released, listed = today, False
    else:  # a zone where it is already tomorrow
        await db.execute("SET TIME ZONE 'Etc/GMT-14'")
        released, listed = today + dt.timedelta(days=1), True
    movie = await make.movie(db, "Edge", release_date=released)
    rows = await discovery.coming_soon(db, 0, 10)
    assert (movie in [row["id"] for row in rows]) is listed
