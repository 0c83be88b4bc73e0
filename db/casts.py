"""Cast and crew of movies: who played whom, who directed, wrote and produced."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import asyncpg

from db.pool import Executor
from seatlock.errors import NotFound

CAST_COLUMNS = (
    "id, movie_id, name, role, character_name, billing_order, photo_url, bio, created_at,"
    " updated_at"
)
CAST_ORDER = "movie_id, billing_order, id"
EDITABLE = ("movie_id", "name", "role", "character_name", "billing_order", "photo_url", "bio")


async def create_member(db: Executor, fields: Mapping[str, Any]) -> asyncpg.Record:
    names = [k for k in EDITABLE if k in fields]
    values = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    try:
        row = await db.fetchrow(
            f"INSERT INTO cast_members ({', '.join(names)}) VALUES ({values})"
            f" RETURNING {CAST_COLUMNS}",
            *(fields[k] for k in names),
        )
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("Movie not found") from None
    assert row is not None
    return cast(asyncpg.Record, row)


async def get_member(db: Executor, cast_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(f"SELECT {CAST_COLUMNS} FROM cast_members WHERE id = $1", cast_id)


async def list_members(
    db: Executor, movie_id: int | None, role: str | None, skip: int, limit: int
) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {CAST_COLUMNS} FROM cast_members"
        " WHERE ($1::bigint IS NULL OR movie_id = $1) AND ($2::text IS NULL OR role = $2)"
        f" ORDER BY {CAST_ORDER} OFFSET $3 LIMIT $4",
        movie_id,
        role,
        skip,
        limit,
    )


async def update_member(db: Executor, cast_id: int, fields: Mapping[str, Any]) -> asyncpg.Record:
    names = [k for k in EDITABLE if k in fields]
    sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(names, start=2))
    try:
        row = await db.fetchrow(
            f"UPDATE cast_members SET {sets}, updated_at = now() WHERE id = $1"
            f" RETURNING {CAST_COLUMNS}",
            cast_id,
            *(fields[k] for k in names),
        )
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("Movie not found") from None
    if row is None:
        raise NotFound("Cast member not found")
    return cast(asyncpg.Record, row)


async def delete_member(db: Executor, cast_id: int) -> None:
    status = await db.execute("DELETE FROM cast_members WHERE id = $1", cast_id)
    if status == "DELETE 0":
        raise NotFound("Cast member not found")


async def movie_cast(db: Executor, movie_id: int) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    """A movie (id, title, director) and its whole cast in billing order, in one round trip."""
    rows = await db.fetch(
        "SELECT m.id AS m_id, m.title AS m_title, m.director AS m_director,"
        " c.id, c.movie_id, c.name, c.role, c.character_name, c.billing_order, c.photo_url,"
        " c.bio, c.created_at, c.updated_at"
        " FROM movies m LEFT JOIN cast_members c ON c.movie_id = m.id WHERE m.id = $1"
        " ORDER BY c.billing_order, c.id",
        movie_id,
    )
    if not rows:
        raise NotFound("Movie not found")
    return rows[0], [r for r in rows if r["id"] is not None]
