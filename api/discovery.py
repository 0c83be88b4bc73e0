"""Discovery: search and filter movies, trending, coming soon, recommendations, cinema finder."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec

from api.caching import CATALOG
from api.cinemas import CinemaOut
from api.movies import MovieOut
from api.reads import catalog_read
from api.rendering import JSON
from api.routing import MAX_ID, Call, Router
from api.schemas import Page
from db import discovery
from db.discovery import MovieFilters
from seatlock.errors import NotFound, ValidationFailed

router = Router("Discovery")

PUBLIC_CACHE = {"Cache-Control": "public, max-age=30"}
PRIVATE = {"Cache-Control": "private, no-store"}

Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]
# Linear-time pattern (no NUL: PostgreSQL text cannot hold one); blank is checked in code.
Term = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]


class SearchHit(MovieOut):
    match: Literal["text", "fuzzy"] | None = None  # how a search found it
    relevance: float | None = None


class TrendingMovie(MovieOut):
    tickets_sold: int = 0


class RecommendedMovie(MovieOut):
    tickets_sold: int = 0
    reasons: list[str] = msgspec.field(default_factory=list)


class CinemaMovie(MovieOut):
    next_showtime: dt.datetime | None = None
    upcoming_showtimes: int = 0


class AmenitiesOut(msgspec.Struct):
    cinema_id: int
    amenities: list[str]


class FilterQuery(Page):
    genre: Term | None = None
    language: Term | None = None
    min_rating: Annotated[float, msgspec.Meta(ge=0, le=10)] | None = None
    max_duration: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    release_date_from: dt.date | None = None
    release_date_to: dt.date | None = None
    age_rating: Term | None = None


class SearchQuery(Page, kw_only=True):
    q: Term


SortBy = Literal["relevance", "rating", "release_date", "title"]


class AdvancedQuery(FilterQuery):
    q: Term | None = None
    sort_by: SortBy = "relevance"
    order: Literal["asc", "desc"] | None = None


class CinemaSearchQuery(Page):
    name: Term | None = None
    city: Term | None = None
    amenity: Term | None = None


def public(value: Any) -> JSON:
    """A public catalog read: shared caches may keep it for 30 seconds."""
    return JSON(value, headers=PUBLIC_CACHE)


def rows_to(rows: list[Any], kind: type[Any]) -> list[Any]:
    return [msgspec.convert(dict(r), kind) for r in rows]


def not_blank(text: str, name: str) -> str:
    if not text.strip():
        raise ValidationFailed(f"`{name}` must not be blank")
    return text.strip()


def filters_of(query: FilterQuery) -> MovieFilters:
    if (
        query.release_date_from is not None
        and query.release_date_to is not None
        and query.release_date_from > query.release_date_to
    ):
        raise ValidationFailed("`release_date_from` must not be after `release_date_to`")
    return MovieFilters(
        genre=query.genre,
        language=query.language,
        min_rating=query.min_rating,
        max_duration=query.max_duration,
        release_date_from=query.release_date_from,
        release_date_to=query.release_date_to,
        age_rating=query.age_rating,
    )


def search_hits(rows: list[Any]) -> list[SearchHit]:
    hits = []
    for row in rows:
        hit = msgspec.convert(dict(row), SearchHit)
        if row["tier"] is not None:
            hit.match = "text" if row["tier"] == 0 else "fuzzy"
            hit.relevance = round(float(row["score"]), 6)
        hits.append(hit)
    return hits


async def run_search(
    call: Call, q: str | None, query: FilterQuery, sort: SortBy, order: str | None
) -> JSON:
    rows = await catalog_read(
        call, discovery.search_movies, q, filters_of(query), sort, order, query.skip, query.limit
    )
    hits = search_hits(rows)
    if call.principal is None:
        return public(hits)
    if q is not None and query.skip == 0:  # paging through results is still one search
        await discovery.record_search(call.services.db, call.principal.user_id, q)
    return JSON(hits, headers=PRIVATE)


# -- movies ---------------------------------------------------------------------------------------


@router.get("/api/v1/movies/coming-soon", query=Page, response=list[MovieOut], cache=CATALOG)
async def coming_soon(call: Call) -> JSON:
    """Get Coming Soon Movies: release date in the future, soonest first."""
    page: Page = call.query
    rows = await catalog_read(call, discovery.coming_soon, page.skip, page.limit)
    return public(rows_to(rows, MovieOut))


@router.get("/api/v1/movies/trending", query=Page, response=list[TrendingMovie], cache=CATALOG)
async def trending(call: Call) -> JSON:
    """Get Trending Movies: most tickets sold in the last 7 days, ties by rating."""
    page: Page = call.query
    sales = await call.services.sales.current()
    rows = await catalog_read(call, discovery.trending, sales, page.skip, page.limit)
    return public(rows_to(rows, TrendingMovie))


REASONS = ("favorite_cinema", "preferred_genre", "liked_genre", "searched")


@router.get(
    "/api/v1/movies/recommended",
    access="user",
    query=Page,
    response=list[RecommendedMovie],
    cache=CATALOG,
)
async def recommended(call: Call) -> list[RecommendedMovie]:
    """Get Recommended Movies: from favorites, tickets, reviews, preferences and searches."""
    page: Page = call.query
    sales = await call.services.sales.current()
    rows = await discovery.recommended(
        call.services.db, sales, call.user.user_id, page.skip, page.limit
    )
    movies = rows_to(rows, RecommendedMovie)
    for movie, row in zip(movies, rows, strict=True):
        movie.reasons = [r for r in REASONS if row[r]] or ["popular"]
    return movies


@router.get(
    "/api/v1/movies/search",
    access="optional",
    query=SearchQuery,
    response=list[SearchHit],
    cache=CATALOG,
)
async def search(call: Call) -> JSON:
    """Search Movies: full-text over title, cast, genre and description, tolerant of typos."""
    query: SearchQuery = call.query
    q = not_blank(query.q, "q")
    return await run_search(
        call, q, FilterQuery(skip=query.skip, limit=query.limit), "relevance", None
    )


@router.get("/api/v1/movies/filter", query=FilterQuery, response=list[MovieOut], cache=CATALOG)
async def filter_movies(call: Call) -> JSON:
    """Filter Movies by Criteria: genre, language, rating, duration, release dates, age rating."""
    query: FilterQuery = call.query
    rows = await catalog_read(
        call,
        discovery.search_movies,
        None,
        filters_of(query),
        "relevance",
        None,
        query.skip,
        query.limit,
    )
    return public(rows_to(rows, MovieOut))


@router.get(
    "/api/v1/movies/advanced-search",
    access="optional",
    query=AdvancedQuery,
    response=list[SearchHit],
    cache=CATALOG,
)
async def advanced_search(call: Call) -> JSON:
    """Advanced Search Movies: a query, the filters, and a sort order."""
    query: AdvancedQuery = call.query
    q = None if query.q is None else not_blank(query.q, "q")
    return await run_search(call, q, query, query.sort_by, query.order)


# -- cinemas --------------------------------------------------------------------------------------


@router.get(
    "/api/v1/cinemas/search", query=CinemaSearchQuery, response=list[CinemaOut], cache=CATALOG
)
async def search_cinemas(call: Call) -> JSON:
    """Search Cinemas by name (part of it), city and amenity."""
    query: CinemaSearchQuery = call.query
    rows = await catalog_read(
        call,
        discovery.search_cinemas,
        query.name,
        query.city,
        query.amenity,
        query.skip,
        query.limit,
    )
    return public(rows_to(rows, CinemaOut))


@router.get("/api/v1/cinemas/{cinema_id:int}/amenities", response=AmenitiesOut, cache=CATALOG)
async def cinema_amenities(call: Call) -> JSON:
    """Get Cinema Amenities."""
    cinema_id: int = call.params["cinema_id"]
    amenities = await catalog_read(call, discovery.cinema_amenities, cinema_id)
    if amenities is None:
        raise NotFound("Cinema not found")
    return public(AmenitiesOut(cinema_id, amenities))


@router.get(
    "/api/v1/cinemas/{cinema_id:int}/movies", query=Page, response=list[CinemaMovie], cache=CATALOG
)
async def cinema_movies(call: Call) -> JSON:
    """Get Cinema Movies: movies with upcoming screenings there, soonest first."""
    page: Page = call.query
    cinema_id: int = call.params["cinema_id"]
    rows = await catalog_read(call, discovery.cinema_movies, cinema_id, page.skip, page.limit)
    if not rows and not await catalog_read(call, discovery.cinema_exists, cinema_id):
        raise NotFound("Cinema not found")
    return public(rows_to(rows, CinemaMovie))
