"""Finding movies and cinemas: search, filters, trending, recommendations, cinema listings.

Every list is one query with a total ordering (a unique id breaks ties), so pages are stable.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from db.pool import Executor, ReplicaReads

MOVIE_FIELDS = (
    "id, title, description, duration_minutes, genre, language, rating, age_rating,"
    " release_date, director, poster_url, trailer_url, created_at, updated_at"
)
MOVIE_COLUMNS = ", ".join(f"m.{name.strip()}" for name in MOVIE_FIELDS.split(","))
CINEMA_COLUMNS = (
    "c.id, c.name, c.address, c.city, c.phone, c.email, c.description, c.amenities,"
    " c.created_at, c.updated_at"
)
# Typo tolerance: how much of the query's trigrams must appear in some stretch of the title.
WORD_SIMILARITY = 0.5
TEXT_QUERY = "websearch_to_tsquery('english', {q})"
DEFAULT_ORDER = {"relevance": "desc", "rating": "desc", "release_date": "desc", "title": "asc"}


@dataclass
class Where:
    """AND-ed conditions with numbered parameters, built in order."""

    args: list[Any] = field(default_factory=list)
    clauses: list[str] = field(default_factory=list)

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, template: str, *values: Any) -> None:
        self.clauses.append(template.format(*(self.param(v) for v in values)))

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses) or "true"


@dataclass
class MovieFilters:
    genre: str | None = None
    language: str | None = None
    min_rating: float | None = None
    max_duration: int | None = None
    release_date_from: dt.date | None = None
    release_date_to: dt.date | None = None
    age_rating: str | None = None


def filter_movies(where: Where, f: MovieFilters) -> None:
    if f.genre is not None:
        where.add("movie_genres(m.genre) @> ARRAY[lower(trim({}::text))]", f.genre)
    if f.language is not None:
        where.add("lower(m.language) = lower({})", f.language)
    if f.min_rating is not None:
        where.add("m.rating >= {}::numeric", f.min_rating)
    if f.max_duration is not None:
        where.add("m.duration_minutes <= {}", f.max_duration)
    if f.release_date_from is not None:
        where.add("m.release_date >= {}", f.release_date_from)
    if f.release_date_to is not None:
        where.add("m.release_date <= {}", f.release_date_to)
    if f.age_rating is not None:
        where.add("upper(m.age_rating) = upper({})", f.age_rating)


# What a list sorts on besides relevance, over the movies' columns (alias m); the movie's id
# breaks ties. A search keeps it beside each hit (``key``) to sort its hits before reading rows.
SORT_KEYS = {"rating": "m.rating", "release_date": "m.release_date", "title": "lower(m.title)"}
NULLS = {"rating": " NULLS LAST", "release_date": " NULLS LAST", "title": ""}


def sort_direction(sort_by: str, order: str | None) -> str:
    """ASC or DESC: the order asked for, else the sort's default."""
    return (order or DEFAULT_ORDER[sort_by]).upper()


def movie_order(sort_by: str, order: str | None) -> str:
    """ORDER BY of a list without a query: relevance is the rating."""
    direction = sort_direction(sort_by, order)
    if sort_by == "relevance":
        return f"m.rating {direction} NULLS LAST, m.id"
    return f"{SORT_KEYS[sort_by]} {direction}{NULLS[sort_by]}, m.id"


def hit_order(sort_by: str, order: str | None, h: str) -> str:
    """ORDER BY of a search's hits (columns id, tier, score, key of ``h``): relevance is the
    tier (full text, then typo matches) and the score within it."""
    direction = sort_direction(sort_by, order)
    if sort_by == "relevance":
        flip = "DESC" if direction == "ASC" else "ASC"
        return f"{h}tier {flip}, {h}score {direction}, {h}id"
    return f"{h}key {direction}{NULLS[sort_by]}, {h}id"


def search_sql(
    q: str | None, filters: MovieFilters, sort_by: str, order: str | None, skip: int, limit: int
) -> tuple[str, list[Any]]:
    """Full-text matches first (ranked), then trigram title matches (by similarity).

    A common word matches thousands of movies: the hits (id, tier, score and the sort key, the
    filters applied as they are found) are sorted and cut to the page before the page's rows
    are read, so a search reads twenty rows, not every hit's.
    """
    where = Where()
    if q is None:
        filter_movies(where, filters)
        sql = (
            f"SELECT {MOVIE_COLUMNS}, NULL::int AS tier, NULL::real AS score FROM movies m"
            f" WHERE {where.sql} ORDER BY {movie_order(sort_by, order)}"
            f" OFFSET {where.param(skip)} LIMIT {where.param(limit)}"
        )
        return sql, where.args
    p = where.param(q)
    tsq = TEXT_QUERY.format(q=p)
    filter_movies(where, filters)
    matching = "".join(f" AND {clause}" for clause in where.clauses)
    key = SORT_KEYS.get(sort_by, "NULL")
    fuzzy_matching = matching
    if sort_by == "relevance" and sort_direction(sort_by, order) == "DESC":
        # The typo matches come after every full-text one: none reaches a page that the
        # full-text matches fill, so then their scan is skipped (a one-time filter).
        fuzzy_matching += f" AND (SELECT count(*) FROM fts) < {where.param(skip + limit)}"
    sql = (
        f"WITH fts AS (SELECT m.id, ts_rank(m.search_vector, {tsq}, 1) AS score, {key} AS key"
        f" FROM movies m WHERE m.search_vector @@ {tsq}{matching}),"
        f" fuzzy AS (SELECT m.id, word_similarity(lower({p}), lower(m.title)) AS score,"
        f" {key} AS key FROM movies m WHERE lower(m.title) %> lower({p}){fuzzy_matching}"
        " AND m.id NOT IN (SELECT id FROM fts)),"
        " hits AS (SELECT id, 0 AS tier, score, key FROM fts"
        " UNION ALL SELECT id, 1 AS tier, score, key FROM fuzzy),"
        f" page AS (SELECT id, tier, score, key FROM hits ORDER BY {hit_order(sort_by, order, '')}"
        f" OFFSET {where.param(skip)} LIMIT {where.param(limit)})"
        f" SELECT {MOVIE_COLUMNS}, h.tier, h.score FROM page h JOIN movies m ON m.id = h.id"
        f" ORDER BY {hit_order(sort_by, order, 'h.')}"
    )
    return sql, where.args


async def search_movies(
    pool: asyncpg.Pool[Any],
    q: str | None,
    filters: MovieFilters,
    sort_by: str,
    order: str | None,
    skip: int,
    limit: int,
) -> list[asyncpg.Record]:
    sql, args = search_sql(q, filters, sort_by, order, skip, limit)
    if q is None:
        return await pool.fetch(sql, *args)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL pg_trgm.word_similarity_threshold = {WORD_SIMILARITY}")
        return await conn.fetch(sql, *args)


async def record_search(db: Executor, user_id: int, query: str) -> None:
    """Remember a signed-in user's search (the profile's search history)."""
    # No history table (its migration not applied), or the account was deleted meanwhile.
    with contextlib.suppress(asyncpg.UndefinedTableError, asyncpg.ForeignKeyViolationError):
        await db.execute(
            "INSERT INTO search_history (user_id, query) VALUES ($1, $2)", user_id, query
        )


# Today as a UTC calendar day, as every day of the API is: PostgreSQL's current_date is the day
# in the session's TimeZone, so a database set to another zone moved "coming soon" by a day.
TODAY_UTC = "(now() AT TIME ZONE 'UTC')::date"


async def coming_soon(db: Executor, skip: int, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {MOVIE_COLUMNS} FROM movies m WHERE m.release_date > {TODAY_UTC}"
        " ORDER BY m.release_date, m.id OFFSET $1 LIMIT $2",
        skip,
        limit,
    )


# Tickets sold per movie over the last 7 days, as trending and recommendations rank movies:
# counted by ``recent_sales`` (an aggregate over every such ticket, ~90 ms at 300,000 a week),
# kept per process by ``SalesTally`` and handed to the ranking queries as two arrays, so a page
# of trending or recommendations costs a join of those arrays with the movies.
SALES_SQL = (
    "SELECT s.movie_id, count(*)::int AS sold FROM tickets t"
    " JOIN screenings s ON s.id = t.screening_id"
    " WHERE t.status IN ('pending', 'confirmed') AND t.booked_at > now() - interval '7 days'"
    " GROUP BY s.movie_id"
)


@dataclass(frozen=True, slots=True)
class Sales:
    """Tickets sold per movie over the last 7 days: ``sold[i]`` of ``movie_ids[i]``."""

    movie_ids: list[int]
    sold: list[int]


async def recent_sales(db: Executor) -> Sales:
    rows = await db.fetch(SALES_SQL)
    return Sales([row["movie_id"] for row in rows], [row["sold"] for row in rows])


def sales_cte(movie_ids: str, sold: str) -> str:
    """The ``sales (movie_id, sold)`` CTE over a ``Sales`` passed as two array parameters."""
    arrays = f"unnest({movie_ids}::bigint[], {sold}::int[])"
    return f"sales AS (SELECT * FROM {arrays} sa(movie_id, sold))"


class SalesTally:
    """``recent_sales`` on ``reads`` kept for ``max_age`` seconds (SEATLOCK_SALES_CACHE_SECONDS;
    0: counted on every call). A count is at most ``max_age`` old, from when its query started;
    the movies it ranks are always read fresh, so a renamed or deleted movie shows at once. Calls
    that find the tally stale while it is being counted wait for that count (one query per
    process however many ask). The count runs as a task of its own: a caller that goes away does
    not cancel it for the others, and a count that fails is not kept (each later caller counts
    again)."""

    def __init__(
        self, reads: ReplicaReads, max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.reads = reads
        self.max_age = max_age
        self._clock = clock
        self._sales: Sales | None = None
        self._counted_at = 0.0
        self._flight: asyncio.Task[Sales] | None = None

    async def current(self) -> Sales:
        if self.max_age <= 0:
            return await self.reads.read(recent_sales)
        sales = self._sales
        if sales is not None and self._clock() - self._counted_at < self.max_age:
            return sales
        if self._flight is None:
            self._flight = asyncio.ensure_future(self._count())
            self._flight.add_done_callback(_retrieved)
        return await asyncio.shield(self._flight)

    async def _count(self) -> Sales:
        started = self._clock()
        try:
            sales = await self.reads.read(recent_sales)
        finally:
            self._flight = None
        self._sales, self._counted_at = sales, started
        return sales


def _retrieved(task: asyncio.Task[Sales]) -> None:
    # Every waiter may be gone (cancelled requests): the failure is theirs, not worth a warning
    # that nobody retrieved it.
    if not task.cancelled():
        task.exception()


async def trending(db: Executor, sales: Sales, skip: int, limit: int) -> list[asyncpg.Record]:
    """Tickets sold in the last 7 days, ties by rating; unsold movies follow, by rating.

    Only the first ``skip + limit`` unsold movies can reach the page: they are read in the
    rating index's order, so a page does not sort the whole catalog.
    """
    return await db.fetch(
        f"WITH {sales_cte('$3', '$4')},"
        " unsold AS (SELECT m.id, 0 AS sold, m.rating FROM movies m"
        " WHERE NOT EXISTS (SELECT 1 FROM sales sa WHERE sa.movie_id = m.id)"
        " ORDER BY m.rating DESC NULLS LAST, m.id LIMIT $1::bigint + $2),"
        " ranked AS (SELECT sa.movie_id AS id, sa.sold, m.rating FROM sales sa"
        " JOIN movies m ON m.id = sa.movie_id UNION ALL SELECT id, sold, rating FROM unsold),"
        " page AS (SELECT id, sold, rating FROM ranked"
        " ORDER BY sold DESC, rating DESC NULLS LAST, id OFFSET $1 LIMIT $2)"
        f" SELECT {MOVIE_COLUMNS}, p.sold AS tickets_sold FROM page p JOIN movies m ON m.id = p.id"
        " ORDER BY p.sold DESC, p.rating DESC NULLS LAST, p.id",
        skip,
        limit,
        sales.movie_ids,
        sales.sold,
    )


async def search_cinemas(
    db: Executor, name: str | None, city: str | None, amenity: str | None, skip: int, limit: int
) -> list[asyncpg.Record]:
    where = Where()
    if name is not None:
        where.add("lower(c.name) LIKE '%' || {} || '%'", like_escape(name.lower()))
    if city is not None:
        where.add("lower(c.city) = lower(trim({}))", city)
    if amenity is not None:
        where.add(
            "EXISTS (SELECT 1 FROM unnest(c.amenities) a WHERE lower(a) = lower({}))", amenity
        )
    return await db.fetch(
        f"SELECT {CINEMA_COLUMNS} FROM cinemas c WHERE {where.sql}"
        f" ORDER BY lower(c.name), c.id OFFSET {where.param(skip)} LIMIT {where.param(limit)}",
        *where.args,
    )


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def cinema_amenities(db: Executor, cinema_id: int) -> list[str] | None:
    row = await db.fetchrow("SELECT amenities FROM cinemas WHERE id = $1", cinema_id)
    return None if row is None else list(row["amenities"])


async def cinema_exists(db: Executor, cinema_id: int) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM cinemas WHERE id = $1)", cinema_id))


async def movie_exists(db: Executor, movie_id: int) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM movies WHERE id = $1)", movie_id))


async def cinema_movies(
    db: Executor, cinema_id: int, skip: int, limit: int
) -> list[asyncpg.Record]:
    """Movies with upcoming screenings at a cinema, soonest first."""
    return await db.fetch(
        f"SELECT {MOVIE_COLUMNS}, min(s.starts_at) AS next_showtime,"
        " count(*)::int AS upcoming_showtimes"
        " FROM screenings s JOIN rooms r ON r.id = s.room_id JOIN movies m ON m.id = s.movie_id"
        " WHERE r.cinema_id = $1 AND s.starts_at > now()"
        " GROUP BY m.id ORDER BY next_showtime, m.id OFFSET $2 LIMIT $3",
        cinema_id,
        skip,
        limit,
    )


# A new user has no signals: every score is 0 and the order is plain popularity among movies
# showing soon or coming soon. Signals add points; movies the user already bought are left out.
RECOMMEND_SQL = """
WITH {sales},
pref AS (
    SELECT lower(trim(g)) AS genre FROM users u, jsonb_array_elements_text(
        CASE WHEN jsonb_typeof(u.preferences -> 'genres') = 'array'
             THEN u.preferences -> 'genres' ELSE '[]'::jsonb END) g
    WHERE u.id = $1),
bought AS (
    SELECT DISTINCT s.movie_id FROM tickets t JOIN screenings s ON s.id = t.screening_id
    WHERE t.user_id = $1 AND t.status IN ('pending', 'confirmed')),
liked AS (SELECT movie_id FROM bought {reviewed}),
liked_genres AS (
    SELECT DISTINCT g FROM movies m JOIN liked l ON l.movie_id = m.id,
        unnest(movie_genres(m.genre)) g),
searches AS ({searches}),
favored AS (
    SELECT DISTINCT s.movie_id FROM favorite_cinemas f JOIN rooms r ON r.cinema_id = f.cinema_id
    JOIN screenings s ON s.room_id = r.id
    WHERE f.user_id = $1 AND s.starts_at > now()),
candidates AS (
    SELECT movie_id AS id FROM screenings WHERE starts_at > now()
    UNION SELECT id FROM movies WHERE release_date > {today}),
scored AS (
    SELECT m.id,
        m.id IN (SELECT movie_id FROM favored) AS favorite_cinema,
        movie_genres(m.genre) && ARRAY(SELECT genre FROM pref) AS preferred_genre,
        movie_genres(m.genre) && ARRAY(SELECT g FROM liked_genres) AS liked_genre,
        EXISTS (SELECT 1 FROM searches h WHERE m.search_vector
                @@ websearch_to_tsquery('english', h.query)) AS searched
    FROM movies m JOIN candidates c ON c.id = m.id
    WHERE m.id NOT IN (SELECT movie_id FROM bought))
SELECT {movie_columns}, coalesce(sa.sold, 0) AS tickets_sold,
    x.favorite_cinema, x.preferred_genre, x.liked_genre, x.searched,
    3 * x.favorite_cinema::int + 2 * x.preferred_genre::int + 2 * x.liked_genre::int
        + 2 * x.searched::int AS score
FROM scored x JOIN movies m ON m.id = x.id LEFT JOIN sales sa ON sa.movie_id = m.id
ORDER BY score DESC, tickets_sold DESC, m.rating DESC NULLS LAST, m.id
OFFSET $2 LIMIT $3
"""
# Reviews are rated 1..5: a 4 or a 5 means the user liked the film.
REVIEWED = "UNION SELECT movie_id FROM reviews WHERE user_id = $1 AND rating >= 4"
SEARCHES = (
    "SELECT query FROM search_history WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT 10"
)
NO_SEARCHES = "SELECT NULL::text AS query WHERE false"


async def recommended(
    db: Executor, sales: Sales, user_id: int, skip: int, limit: int
) -> list[asyncpg.Record]:
    """Movies for this user from favorites, tickets, reviews, preferences and searches."""
    args = (user_id, skip, limit, sales.movie_ids, sales.sold)
    try:
        return await db.fetch(recommend_sql(with_others=True), *args)
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        # Reviews and search history come from another migration (0005): go on without them.
        return await db.fetch(recommend_sql(with_others=False), *args)


def recommend_sql(*, with_others: bool) -> str:
    return RECOMMEND_SQL.format(
        sales=sales_cte("$4", "$5"),
        movie_columns=MOVIE_COLUMNS,
        reviewed=REVIEWED if with_others else "",
        searches=SEARCHES if with_others else NO_SEARCHES,
        today=TODAY_UTC,
    )


SHOWTIME_SELECT = (
    "SELECT s.id, s.movie_id, s.room_id, r.cinema_id, s.starts_at, s.ends_at, s.price,"
    " m.title AS movie_title, m.duration_minutes, m.poster_url, m.age_rating,"
    " c.name AS cinema_name, c.city AS cinema_city, c.address AS cinema_address,"
    " r.name AS room_name, r.room_type"
    " FROM screenings s JOIN rooms r ON r.id = s.room_id JOIN cinemas c ON c.id = r.cinema_id"
    " JOIN movies m ON m.id = s.movie_id"
)


@dataclass
class ShowtimeFilters:
    movie_id: int | None = None
    cinema_id: int | None = None
    starts_from: dt.datetime | None = None  # inclusive
    starts_before: dt.datetime | None = None  # exclusive


async def list_showtimes(
    db: Executor, f: ShowtimeFilters, skip: int, limit: int
) -> list[asyncpg.Record]:
    where = Where()
    if f.movie_id is not None:
        where.add("s.movie_id = {}", f.movie_id)
    if f.cinema_id is not None:
        where.add("r.cinema_id = {}", f.cinema_id)
    if f.starts_from is not None:
        where.add("s.starts_at >= {}", f.starts_from)
    if f.starts_before is not None:
        where.add("s.starts_at < {}", f.starts_before)
    return await db.fetch(
        f"{SHOWTIME_SELECT} WHERE {where.sql} ORDER BY s.starts_at, s.id"
        f" OFFSET {where.param(skip)} LIMIT {where.param(limit)}",
        *where.args,
    )


async def get_showtime(db: Executor, showtime_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(f"{SHOWTIME_SELECT} WHERE s.id = $1", showtime_id)
