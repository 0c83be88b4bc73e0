"""Favorites: the cinemas a signed-in user keeps at hand."""

from __future__ import annotations

import datetime as dt

from api.cinemas import CinemaOut
from api.discovery import rows_to
from api.routing import Call, Router
from api.schemas import Message, Page
from db import favorites

router = Router("Favorites")


class FavoriteCinema(CinemaOut):
    favorited_at: dt.datetime | None = None


@router.post("/api/v1/cinemas/{cinema_id:int}/favorite", access="user", response=Message)
async def add_favorite(call: Call) -> Message:
    """Add Cinema To Favorites (adding it again changes nothing)."""
    await favorites.add(call.services.db, call.user.user_id, call.params["cinema_id"])
    return Message("Cinema added to favorites")


@router.delete("/api/v1/cinemas/{cinema_id:int}/favorite", access="user", status=204)
async def remove_favorite(call: Call) -> None:
    """Remove Cinema From Favorites (removing one that is not there changes nothing)."""
    await favorites.remove(call.services.db, call.user.user_id, call.params["cinema_id"])


@router.get("/api/v1/cinemas/favorites", access="user", query=Page, response=list[FavoriteCinema])
async def list_favorites(call: Call) -> list[FavoriteCinema]:
    """Get User Favorite Cinemas, most recently added first."""
    page: Page = call.query
    rows = await favorites.list_favorites(
        call.services.db, call.user.user_id, page.skip, page.limit
    )
    return rows_to(rows, FavoriteCinema)
