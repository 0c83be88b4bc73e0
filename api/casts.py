"""Cast: the people of a movie (actors with their characters, and the crew)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from api.answercache import catalog_changed
from api.caching import CATALOG
from api.discovery import Id, public, rows_to
from api.reads import catalog_read
from api.rendering import JSON
from api.routing import Call, Router
from api.schemas import NAMED, Page, Url
from db import casts
from seatlock.errors import NotFound, ValidationFailed

router = Router("Cast")

Role = Literal[
    "actor", "director", "writer", "producer", "composer", "cinematographer", "editor", "other"
]
NoNul = r"^[^\x00]*$"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NAMED)]
Character = Annotated[str, msgspec.Meta(max_length=200, pattern=NoNul)]
Bio = Annotated[str, msgspec.Meta(max_length=5000, pattern=NoNul)]
Billing = Annotated[int, msgspec.Meta(ge=0, le=100_000)]


class CastIn(msgspec.Struct):
    movie_id: Id
    name: Name
    role: Role = "actor"
    character_name: Character | None = None
    billing_order: Billing = 0
    photo_url: Url | None = None
    bio: Bio | None = None


class CastUpdate(msgspec.Struct):
    """Only the fields sent change; ``null`` clears an optional one."""

    movie_id: Id | UnsetType = UNSET
    name: Name | UnsetType = UNSET
    role: Role | UnsetType = UNSET
    character_name: Character | UnsetType | None = UNSET
    billing_order: Billing | UnsetType = UNSET
    photo_url: Url | UnsetType | None = UNSET
    bio: Bio | UnsetType | None = UNSET


class CastOut(msgspec.Struct):
    id: int
    movie_id: int
    name: str
    role: str
    character_name: str | None
    billing_order: int
    photo_url: str | None
    bio: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class MovieCastOut(msgspec.Struct):
    movie_id: int
    title: str
    director: str | None
    cast: list[CastOut]  # actors, in billing order
    crew: list[CastOut]  # everyone else, in billing order


class CastQuery(Page):
    movie_id: Id | None = None
    role: Role | None = None


def sent(struct: msgspec.Struct) -> dict[str, Any]:
    return {k: v for k, v in msgspec.structs.asdict(struct).items() if v is not UNSET}


def cast_out(row: Any) -> CastOut:
    return msgspec.convert(dict(row), CastOut)


@router.post(
    "/api/v1/casts/", errors=(404,), access="admin", body=CastIn, status=201, response=CastOut
)
async def create_cast_member(call: Call) -> CastOut:
    """Create Cast Member."""
    row = await casts.create_member(call.services.db, sent(call.body))
    catalog_changed(call.scope)
    return cast_out(row)


@router.get("/api/v1/casts/", query=CastQuery, response=list[CastOut], cache=CATALOG)
async def list_cast_members(call: Call) -> JSON:
    """List Cast Members, optionally of one movie or one role."""
    q: CastQuery = call.query
    rows = await catalog_read(call, casts.list_members, q.movie_id, q.role, q.skip, q.limit)
    return public(rows_to(rows, CastOut))


@router.get("/api/v1/casts/{cast_id:int}", response=CastOut, cache=CATALOG)
async def get_cast_member(call: Call) -> JSON:
    """Get Cast Member."""
    row = await catalog_read(call, casts.get_member, call.params["cast_id"])
    if row is None:
        raise NotFound("Cast member not found")
    return public(cast_out(row))


@router.put("/api/v1/casts/{cast_id:int}", access="admin", body=CastUpdate, response=CastOut)
async def update_cast_member(call: Call) -> CastOut:
    """Update Cast Member."""
    fields = sent(call.body)
    if not fields:
        raise ValidationFailed("No fields to update")
    row = await casts.update_member(call.services.db, call.params["cast_id"], fields)
    catalog_changed(call.scope)
    return cast_out(row)


@router.delete("/api/v1/casts/{cast_id:int}", access="admin", status=204)
async def delete_cast_member(call: Call) -> None:
    """Delete Cast Member."""
    await casts.delete_member(call.services.db, call.params["cast_id"])
    catalog_changed(call.scope)


@router.get("/api/v1/casts/movie/{movie_id:int}", response=list[CastOut], cache=CATALOG)
async def movie_cast_members(call: Call) -> JSON:
    """Get Movie Cast Members, in billing order."""
    _, members = await catalog_read(call, casts.movie_cast, call.params["movie_id"])
    return public([cast_out(m) for m in members])


@router.get("/api/v1/movies/{movie_id:int}/cast", response=MovieCastOut, cache=CATALOG)
async def movie_cast_detailed(call: Call) -> JSON:
    """Get Movie Cast (Detailed): the actors and the crew, each in billing order."""
    movie, members = await catalog_read(call, casts.movie_cast, call.params["movie_id"])
    people = [cast_out(m) for m in members]
    return public(
        MovieCastOut(
            movie_id=movie["m_id"],
            title=movie["m_title"],
            director=movie["m_director"],
            cast=[p for p in people if p.role == "actor"],
            crew=[p for p in people if p.role != "actor"],
        )
    )
