"""The guide's "Cinemas" group: create, list, read, update and delete cinemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from api.answercache import catalog_changed
from api.caching import CATALOG
from api.reads import catalog_read
from api.routing import Call, Router
from api.schemas import NAMED, Email, Page
from api.screenings import forget_screenings
from db import catalog

router = Router("Cinemas")

# Text types of the catalog. PostgreSQL text cannot hold NUL, so it is refused here (422).
NO_NUL = r"^[^\x00]*$"
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NAMED)]
Line = Annotated[str, msgspec.Meta(max_length=500, pattern=NO_NUL)]
Text = Annotated[str, msgspec.Meta(max_length=5000, pattern=NO_NUL)]
Amenity = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NO_NUL)]
Amenities = Annotated[list[Amenity], msgspec.Meta(max_length=100)]


class CinemaIn(msgspec.Struct):
    name: Title
    address: Line = ""
    city: Line = ""
    phone: Line | None = None
    email: Email | None = None
    description: Text | None = None
    amenities: Amenities = []


class CinemaPatch(msgspec.Struct):
    """Only the fields present change; ``null`` clears phone, email or description."""

    name: Title | UnsetType = UNSET
    address: Line | UnsetType = UNSET
    city: Line | UnsetType = UNSET
    phone: Line | UnsetType | None = UNSET
    email: Email | UnsetType | None = UNSET
    description: Text | UnsetType | None = UNSET
    amenities: Amenities | UnsetType = UNSET


class CinemaOut(msgspec.Struct):
    id: int
    name: str
    address: str
    city: str
    phone: str | None
    email: str | None
    description: str | None
    amenities: list[str]
    created_at: datetime
    updated_at: datetime


def present(struct: msgspec.Struct) -> dict[str, Any]:
    """The fields of a body that were sent (not UNSET), by column name."""
    return {k: v for k, v in msgspec.structs.asdict(struct).items() if v is not UNSET}


@router.post("/api/v1/cinemas/", access="admin", body=CinemaIn, status=201, response=CinemaOut)
async def create_cinema(call: Call) -> CinemaOut:
    """Create a cinema."""
    row = await catalog.create_cinema(call.services.db, present(call.body))
    catalog_changed(call.scope)
    return CinemaOut(**row)


@router.get("/api/v1/cinemas/", query=Page, response=list[CinemaOut], cache=CATALOG)
async def list_cinemas(call: Call) -> list[CinemaOut]:
    """List cinemas, oldest first."""
    page: Page = call.query
    rows = await catalog_read(call, catalog.list_cinemas, page.skip, page.limit)
    return [CinemaOut(**row) for row in rows]


@router.get("/api/v1/cinemas/{cinema_id:int}", response=CinemaOut, cache=CATALOG)
async def get_cinema(call: Call) -> CinemaOut:
    """Get a cinema."""
    return CinemaOut(**await catalog_read(call, catalog.get_cinema, call.params["cinema_id"]))


@router.patch(
    "/api/v1/cinemas/{cinema_id:int}", access="admin", body=CinemaPatch, response=CinemaOut
)
async def update_cinema(call: Call) -> CinemaOut:
    """Update some fields of a cinema."""
    changes, cinema_id = present(call.body), call.params["cinema_id"]
    if not changes:
        return CinemaOut(**await catalog.get_cinema(call.services.db, cinema_id))
    row = await catalog.update_cinema(call.services.db, cinema_id, changes)
    catalog_changed(call.scope)
    return CinemaOut(**row)


@router.delete("/api/v1/cinemas/{cinema_id:int}", errors=(409,), access="admin", status=204)
async def delete_cinema(call: Call) -> None:
    """Delete a cinema with its rooms and screenings; refused (409) once tickets were sold."""
    screening_ids = await catalog.delete_cinema(call.services.db, call.params["cinema_id"])
    catalog_changed(call.scope)
    await forget_screenings(call, screening_ids)  # after the commit above
