"""Users and auth sessions in PostgreSQL."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from seatlock.errors import Conflict
from seatlock.passwords import hash_password

if TYPE_CHECKING:
    from api.state import Services

logger = logging.getLogger(__name__)

USER_COLUMNS = (
    "id, email, full_name, role, is_active, phone, bio, profile_picture_url, preferences,"
    " created_at, updated_at"
)


async def create_user(
    db: asyncpg.Pool | asyncpg.Connection,
    email: str,
    password_hash: str,
    full_name: str,
    role: str = "user",
) -> asyncpg.Record:
    try:
        row = await db.fetchrow(
            f"INSERT INTO users (email, password_hash, full_name, role) VALUES ($1, $2, $3, $4)"
            f" RETURNING {USER_COLUMNS}",
            email,
            password_hash,
            full_name,
            role,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("Email already registered") from None
    assert row is not None
    return row


async def get_by_email(db: asyncpg.Pool, email: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {USER_COLUMNS}, password_hash FROM users"
        " WHERE lower(email) = lower($1) AND deleted_at IS NULL",
        email,
    )


async def get_by_id(db: asyncpg.Pool, user_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL", user_id
    )


async def ensure_admin(db: asyncpg.Pool, email: str, password: str, rounds: int) -> int:
    """Create the admin, or make an existing account admin and set its password; return its id."""
    hashed = await hash_password(password, rounds)
    row = await db.fetchrow(
        "UPDATE users SET role = 'admin', password_hash = $2, updated_at = now()"
        " WHERE lower(email) = lower($1) AND deleted_at IS NULL RETURNING id",
        email,
        hashed,
    )
    if row is None:
        row = await create_user(db, email, hashed, "Administrator", role="admin")
    return int(row["id"])


async def ensure_admin_from_settings(services: Services) -> None:
    s = services.settings
    if s.admin_email and s.admin_password:
        exists = await services.db.fetchval(
            "SELECT true FROM users WHERE lower(email) = lower($1) AND role = 'admin'",
            s.admin_email,
        )
        if not exists:
            await ensure_admin(services.db, s.admin_email, s.admin_password, s.bcrypt_rounds)
            logger.info("created admin account %s", s.admin_email)


async def open_session(db: asyncpg.Pool | asyncpg.Connection, user_id: int, days: int) -> str:
    session_id = secrets.token_urlsafe(18)
    await db.execute(
        "INSERT INTO auth_sessions (id, user_id, expires_at) VALUES ($1, $2, $3)",
        session_id,
        user_id,
        datetime.now(UTC) + timedelta(days=days),
    )
    return session_id
