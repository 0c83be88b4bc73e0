"""The guide's "Movies" group: create, list, read, update and delete movies."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any

import asyncpg
import msgspec
from msgspec import UNSET, UnsetType

from api.answercache import catalog_changed
from api.caching import CATALOG
from api.cinemas import Text, Title, present
from api.reads import catalog_read
from api.routing import Call, Router
from api.schemas import Page, Url
from api.screenings import forget_screenings
from db import catalog

router = Router("Movies")

Line = Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[^\x00]*$")]
Minutes = Annotated[int, msgspec.Meta(ge=1, le=1000)]
Rating = Annotated[float, msgspec.Meta(ge=0, le=10)]


class MovieIn(msgspec.Struct):
    title: Title
    duration_minutes: Minutes
    description: Text = ""
    genre: Line = ""
    language: Line = "en"
    rating: Rating | None = None
    age_rating: Line | None = None
    release_date: dt.date | None = None
    director: Line | None = None
    poster_url: Url | None = None
    trailer_url: Url | None = None


class MoviePatch(msgspec.Struct):
    """Only the fields present change; ``null`` clears the optional ones."""

    title: Title | UnsetType = UNSET
    duration_minutes: Minutes | UnsetType = UNSET
    description: Text | UnsetType = UNSET
    genre: Line | UnsetType = UNSET
    language: Line | UnsetType = UNSET
    rating: Rating | UnsetType | None = UNSET
    age_rating: Line | UnsetType | None = UNSET
    release_date: dt.date | UnsetType | None = UNSET
    director: Line | UnsetType | None = UNSET
    poster_url: Url | UnsetType | None = UNSET
    trailer_url: Url | UnsetType | None = UNSET


class MovieOut(msgspec.Struct):
    id: int
    title: str
    description: str
    duration_minutes: int
    genre: str
    language: str
    rating: float | None
    age_rating: str | None
    release_date: dt.date | None
    director: str | None
    poster_url: str | None
    trailer_url: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


def movie_out(row: asyncpg.Record) -> MovieOut:
    rating = row["rating"]
    return MovieOut(**{**row, "rating": None if rating is None else float(rating)})


def movie_columns(struct: msgspec.Struct) -> dict[str, Any]:
    fields = present(struct)
    if fields.get("rating") is not None:
        fields["rating"] = Decimal(str(fields["rating"]))
    return fields


@router.post("/api/v1/movies/", access="admin", body=MovieIn, status=201, response=MovieOut)
async def create_movie(call: Call) -> MovieOut:
    """Create a movie."""
    row = await catalog.create_movie(call.services.db, movie_columns(call.body))
    catalog_changed(call.scope)
    return movie_out(row)


@router.get("/api/v1/movies/", query=Page, response=list[MovieOut], cache=CATALOG)
async def list_movies(call: Call) -> list[MovieOut]:
    """List movies, oldest first."""
    page: Page = call.query
    rows = await catalog_read(call, catalog.list_movies, page.skip, page.limit)
    return [movie_out(row) for row in rows]


@router.get("/api/v1/movies/{movie_id:int}", response=MovieOut, cache=CATALOG)
async def get_movie(call: Call) -> MovieOut:
    """Get a movie."""
    return movie_out(await catalog_read(call, catalog.get_movie, call.params["movie_id"]))


@router.patch("/api/v1/movies/{movie_id:int}", access="admin", body=MoviePatch, response=MovieOut)
async def update_movie(call: Call) -> MovieOut:
    """Update some fields of a movie."""
    changes, movie_id = movie_columns(call.body), call.params["movie_id"]
    if not changes:
        return movie_out(await catalog.get_movie(call.services.db, movie_id))
    row = await catalog.update_movie(call.services.db, movie_id, changes)
    catalog_changed(call.scope)
    return movie_out(row)


@router.delete("/api/v1/movies/{movie_id:int}", errors=(409,), access="admin", status=204)
async def delete_movie(call: Call) -> None:
    """Delete a movie with its screenings; refused (409) once tickets were sold."""
    screening_ids = await catalog.delete_movie(call.services.db, call.params["movie_id"])
    catalog_changed(call.scope)
    await forget_screenings(call, screening_ids)  # after the commit above
