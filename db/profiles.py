"""User profiles, account deletion and search history in PostgreSQL."""

from __future__ import annotations

from typing import Any

import asyncpg

from db.users import USER_COLUMNS

ANONYMOUS_NAME = "Deleted user"


async def update_profile(
    db: asyncpg.Pool, user_id: int, changes: dict[str, Any]
) -> asyncpg.Record | None:
    """Set the given columns (a subset of full_name, phone, bio); None when the user is gone."""
    allowed = [c for c in ("full_name", "phone", "bio") if c in changes]
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(allowed, start=2))
    prefix = f"{sets}, " if sets else ""
    return await db.fetchrow(
        f"UPDATE users SET {prefix}updated_at = now()"
        f" WHERE id = $1 AND deleted_at IS NULL RETURNING {USER_COLUMNS}",
        user_id,
        *(changes[c] for c in allowed),
    )


async def set_preferences(
    db: asyncpg.Pool, user_id: int, preferences: dict[str, Any]
) -> asyncpg.Record | None:
    return await db.fetchrow(
        "UPDATE users SET preferences = $2, updated_at = now()"
        f" WHERE id = $1 AND deleted_at IS NULL RETURNING {USER_COLUMNS}",
        user_id,
        preferences,
    )


async def missing_cinemas(db: asyncpg.Pool, cinema_ids: list[int]) -> list[int]:
    rows = await db.fetch(
        "SELECT x FROM unnest($1::bigint[]) AS x"
        " WHERE NOT EXISTS (SELECT 1 FROM cinemas c WHERE c.id = x) ORDER BY x",
        cinema_ids,
    )
    return [int(r["x"]) for r in rows]


async def replace_picture_url(
    db: asyncpg.Pool, user_id: int, url: str
) -> tuple[asyncpg.Record, str | None] | None:
    """Set the picture URL; return the user and the URL it replaced, or None if the user is gone.

    The row lock makes concurrent uploads queue, so each one learns exactly which URL it
    replaced and no stored file is left behind or deleted while still in use.
    """
    async with db.acquire() as conn, conn.transaction():
        old = await conn.fetchrow(
            "SELECT profile_picture_url FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
            user_id,
        )
        if old is None:
            return None
        row = await conn.fetchrow(
            "UPDATE users SET profile_picture_url = $2, updated_at = now()"
            f" WHERE id = $1 RETURNING {USER_COLUMNS}",
            user_id,
            url,
        )
        assert row is not None
        return row, old["profile_picture_url"]


async def public_profile(db: asyncpg.Pool, user_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT u.id, u.full_name, u.profile_picture_url, u.created_at,"
        " (SELECT count(*) FROM reviews r WHERE r.user_id = u.id) AS review_count"
        " FROM users u WHERE u.id = $1 AND u.deleted_at IS NULL AND u.is_active",
        user_id,
    )


async def anonymise_user(
    db: asyncpg.Pool, user_id: int, unusable_hash: str
) -> tuple[list[str], str | None] | None:
    """Erase the personal data of an account, keeping its tickets, bookings and reviews.

    Returns the ids of the sessions revoked and the picture URL removed, or None when the
    account was already gone. One transaction: either all of it happens or none.
    """
    async with db.acquire() as conn, conn.transaction():
        old = await conn.fetchrow(
            "SELECT profile_picture_url FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
            user_id,
        )
        if old is None:
            return None
        await conn.execute(
            "UPDATE users SET email = 'deleted-' || id || '@invalid', full_name = $2,"
            " phone = NULL, bio = NULL, profile_picture_url = NULL, preferences = '{}'::jsonb,"
            " password_hash = $3, is_active = false, deleted_at = now(), updated_at = now()"
            " WHERE id = $1",
            user_id,
            ANONYMOUS_NAME,
            unusable_hash,
        )
        await conn.execute("DELETE FROM search_history WHERE user_id = $1", user_id)
        await conn.execute("DELETE FROM password_resets WHERE user_id = $1", user_id)
        sessions = await conn.fetch(
            "UPDATE auth_sessions SET revoked_at = now()"
            " WHERE user_id = $1 AND revoked_at IS NULL RETURNING id",
            user_id,
        )
        return [str(r["id"]) for r in sessions], old["profile_picture_url"]


# Search history ------------------------------------------------------------------------------

HISTORY_COLUMNS = "id, query, created_at"


async def list_history(
    db: asyncpg.Pool, user_id: int, skip: int, limit: int
) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {HISTORY_COLUMNS} FROM search_history WHERE user_id = $1"
        " ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT $3",
        user_id,
        skip,
        limit,
    )


async def add_history(db: asyncpg.Pool, user_id: int, query: str) -> asyncpg.Record:
    row = await db.fetchrow(
        f"INSERT INTO search_history (user_id, query) VALUES ($1, $2) RETURNING {HISTORY_COLUMNS}",
        user_id,
        query,
    )
    assert row is not None
    return row


async def delete_history_entry(db: asyncpg.Pool, user_id: int, entry_id: int) -> bool:
    status = await db.execute(
        "DELETE FROM search_history WHERE id = $1 AND user_id = $2", entry_id, user_id
    )
    return bool(status != "DELETE 0")


async def clear_history(db: asyncpg.Pool, user_id: int) -> int:
    status = await db.execute("DELETE FROM search_history WHERE user_id = $1", user_id)
    return int(status.split()[-1])
