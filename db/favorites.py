"""A user's favorite cinemas."""

from __future__ import annotations

import asyncpg

from db.discovery import CINEMA_COLUMNS
from db.pool import Executor
from seatlock.errors import NotFound


async def add(db: Executor, user_id: int, cinema_id: int) -> None:
    """Idempotent: a cinema already in the favorites stays there, unchanged."""
    try:
        row = await db.fetchrow(
            "WITH c AS (SELECT id FROM cinemas WHERE id = $2),"
            " ins AS (INSERT INTO favorite_cinemas (user_id, cinema_id)"
            " SELECT $1, id FROM c ON CONFLICT DO NOTHING)"
            " SELECT EXISTS (SELECT 1 FROM c) AS found",
            user_id,
            cinema_id,
        )
    except asyncpg.ForeignKeyViolationError:
        # The cinema (or the account) was deleted between our read and our insert.
        raise NotFound("Cinema not found") from None
    if row is None or not row["found"]:
        raise NotFound("Cinema not found")


async def remove(db: Executor, user_id: int, cinema_id: int) -> None:
    row = await db.fetchrow(
        "WITH d AS (DELETE FROM favorite_cinemas WHERE user_id = $1 AND cinema_id = $2)"
        " SELECT EXISTS (SELECT 1 FROM cinemas WHERE id = $2) AS found",
        user_id,
        cinema_id,
    )
    if row is None or not row["found"]:
        raise NotFound("Cinema not found")


async def list_favorites(db: Executor, user_id: int, skip: int, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {CINEMA_COLUMNS}, f.created_at AS favorited_at FROM favorite_cinemas f"
        " JOIN cinemas c ON c.id = f.cinema_id WHERE f.user_id = $1"
        " ORDER BY f.created_at DESC, c.id DESC OFFSET $2 LIMIT $3",
        user_id,
        skip,
        limit,
    )
