"""Users and auth sessions in PostgreSQL."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from db.pool import Conn, Executor
from seatlock.accounts import emails
from seatlock.accounts.passwords import hash_password
from seatlock.accounts.tokens import digest
from seatlock.errors import Conflict, InvalidInput

logger = logging.getLogger(__name__)

EMAIL_TAKEN = "Email already registered"
INVALID_RESET_TOKEN = "Invalid or expired reset token"
USER_COLUMNS = (
    "id, email, full_name, role, is_active, phone, bio, profile_picture_url, preferences,"
    " created_at, updated_at"
)


async def create_user(
    db: Executor,
    email: str,
    password_hash: str,
    full_name: str,
    role: str = "user",
) -> asyncpg.Record:
    """A new account under the NFKC spelling of ``email`` (seatlock/accounts/emails.py)."""
    email = emails.canonical(email)
    try:
        row: asyncpg.Record | None = await db.fetchrow(
            f"INSERT INTO users (email, password_hash, full_name, role) VALUES ($1, $2, $3, $4)"
            f" RETURNING {USER_COLUMNS}",
            email,
            password_hash,
            full_name,
            role,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(EMAIL_TAKEN) from None
    assert row is not None
    return row


async def get_by_email(db: Executor, email: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {USER_COLUMNS}, password_hash FROM users"
        " WHERE lower(email) = lower($1) AND deleted_at IS NULL",
        emails.normalise(email),
    )


async def get_by_id(db: Executor, user_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL", user_id
    )


async def ensure_admin(db: Executor, email: str, password: str, rounds: int) -> int:
    """Create the admin, or make an existing account admin and set its password; return its id."""
    hashed = await hash_password(password, rounds)
    row = await db.fetchrow(
        "UPDATE users SET role = 'admin', password_hash = $2, updated_at = now()"
        " WHERE lower(email) = lower($1) AND deleted_at IS NULL RETURNING id",
        emails.normalise(email),
        hashed,
    )
    if row is None:
        row = await create_user(db, email, hashed, "Administrator", role="admin")
    return int(row["id"])


async def ensure_configured_admin(db: asyncpg.Pool, email: str, password: str, rounds: int) -> None:
    """The admin named by the settings exists (created at start-up when missing)."""
    exists = await db.fetchval(
        "SELECT true FROM users WHERE lower(email) = lower($1) AND role = 'admin'",
        emails.normalise(email),
    )
    if not exists:
        await ensure_admin(db, email, password, rounds)
        logger.info("created admin account %s", email)


async def get_credentials(db: asyncpg.Pool, user_id: int) -> tuple[str, str] | None:
    """The email and password hash of an active account."""
    row = await db.fetchrow(
        "SELECT email, password_hash FROM users WHERE id = $1 AND is_active AND deleted_at IS NULL",
        user_id,
    )
    return None if row is None else (row["email"], row["password_hash"])


async def email_registered(db: Executor, email: str) -> bool:
    """Whether an account has ``email`` already, by the unique index's rule (``lower()`` of the
    NFKC spelling): asked before a registration pays for its password hash."""
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1))",
            emails.canonical(email),
        )
    )


async def reset_token_usable(db: asyncpg.Pool, token: str) -> bool:
    """Whether ``reset_password`` would take this token now: asked before the new password is
    hashed, so made-up tokens cost a lookup, not a hash (``reset_password`` decides)."""
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM password_resets r JOIN users u ON u.id = r.user_id"
            " WHERE r.token_hash = $1 AND r.used_at IS NULL AND r.expires_at > now()"
            " AND u.is_active AND u.deleted_at IS NULL)",
            digest(token),
        )
    )


# Sessions and refresh tokens. A session is one sign-in; access tokens name it (``sid``) and its
# refresh tokens rotate inside it. Callers tell Redis (api/auth.py) after these functions commit.


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What presenting a refresh token did: rotated it, or revoked its session on reuse."""

    session_id: str
    user_id: int
    role: str
    refresh_token: str | None  # None: the token had been used before
    in_grace: bool = False  # used before, within the grace window: nothing was revoked


# Called with the rotation inside its transaction, before COMMIT (see rotate_refresh_token).
BeforeCommit = Callable[[Refreshed], Awaitable[None]]


async def start_session(
    db: asyncpg.Pool, user_id: int, verified_hash: str, days: int
) -> tuple[str, str] | None:
    """Open a session and its first refresh token; None if the account changed meanwhile."""
    session_id = secrets.token_urlsafe(18)
    async with db.acquire() as conn, conn.transaction():
        # FOR SHARE waits for a concurrent password change, reset or disabling to commit and
        # then re-checks the row: a login that verified the old password cannot open a session
        # that the change's revocation would miss.
        opened = await conn.fetchval(
            "INSERT INTO auth_sessions (id, user_id, expires_at)"
            " SELECT $1, id, $3 FROM users WHERE id = $2 AND password_hash = $4"
            " AND is_active AND deleted_at IS NULL FOR SHARE RETURNING true",
            session_id,
            user_id,
            _days_from_now(days),
            verified_hash,
        )
        if not opened:
            return None
        refresh = await _add_refresh_token(conn, session_id, days)
    return session_id, refresh


async def rotate_refresh_token(
    db: asyncpg.Pool,
    token: str,
    days: int,
    grace_seconds: int = 0,
    before_commit: BeforeCommit | None = None,
) -> Refreshed | None:
    """Spend a refresh token for a new one in the same session; None if it is not valid.

    A token spent more than ``grace_seconds`` ago means two parties hold it (a stolen copy or a
    replay), so the whole session is revoked. Within the window it is a concurrent duplicate:
    ``in_grace`` is set, nothing is revoked, and the caller hands out the pair that
    ``before_commit`` kept (seatlock/accounts/grace.py). Row locks make concurrent
    presentations of one token take turns: exactly one rotates it; ``before_commit`` runs
    before its COMMIT, so a duplicate that waited on the lock finds the pair already kept.
    """
    async with db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT rt.session_id, rt.used_at IS NOT NULL AS used, rt.expires_at > now() AS fresh,"
            " rt.used_at > clock_timestamp() - make_interval(secs => $2) AS in_grace,"
            " s.revoked_at IS NULL AND s.expires_at > now() AS live, u.id AS user_id, u.role,"
            " u.is_active AND u.deleted_at IS NULL AS active"
            " FROM refresh_tokens rt JOIN auth_sessions s ON s.id = rt.session_id"
            " JOIN users u ON u.id = s.user_id WHERE rt.token_hash = $1 FOR UPDATE OF rt, s",
            digest(token),
            float(grace_seconds),
        )
        if row is None:
            return None
        session_id: str = row["session_id"]
        usable = row["fresh"] and row["live"] and row["active"]
        if row["used"] and row["in_grace"]:
            return (
                Refreshed(session_id, row["user_id"], row["role"], None, True) if usable else None
            )
        if row["used"]:
            await _revoke(conn, session_id)
            return Refreshed(session_id, row["user_id"], row["role"], None)
        if not usable:
            return None
        await conn.execute(
            "UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1", digest(token)
        )
        await conn.execute(
            "UPDATE auth_sessions SET expires_at = $2 WHERE id = $1",
            session_id,
            _days_from_now(days),
        )
        refresh = await _add_refresh_token(conn, session_id, days)
        done = Refreshed(session_id, row["user_id"], row["role"], refresh)
        if before_commit is not None:
            await before_commit(done)
    return done


async def revoke_session(db: asyncpg.Pool, session_id: str) -> None:
    await _revoke(db, session_id)


async def change_password(
    db: asyncpg.Pool, user_id: int, verified_hash: str, new_hash: str, keep_session: str
) -> list[str]:
    """Set a new password and revoke every other session; return the revoked session ids.

    The update only applies if the hash is still the one the caller verified, so two
    concurrent changes cannot both succeed on the strength of the same old password.
    """
    async with db.acquire() as conn, conn.transaction():
        changed = await conn.fetchval(
            "UPDATE users SET password_hash = $3, updated_at = now()"
            " WHERE id = $1 AND password_hash = $2 AND deleted_at IS NULL RETURNING true",
            user_id,
            verified_hash,
            new_hash,
        )
        if not changed:
            raise InvalidInput("Incorrect current password")
        return await _revoke_all(conn, user_id, keep_session)


async def create_password_reset(db: asyncpg.Pool, user_id: int, minutes: int) -> str:
    """A new single-use reset token for the user; only its digest is stored."""
    token = secrets.token_urlsafe(32)
    await db.execute(
        "INSERT INTO password_resets (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
        digest(token),
        user_id,
        datetime.now(UTC) + timedelta(minutes=minutes),
    )
    return token


async def reset_password(db: asyncpg.Pool, token: str, new_hash: str) -> list[str]:
    """Spend a reset token: set the password, revoke every session; return the revoked ids."""
    async with db.acquire() as conn, conn.transaction():
        # The conditional UPDATE is the single-use check: of two concurrent resets with one
        # token, the second waits for the first and then finds used_at set.
        user_id = await conn.fetchval(
            "UPDATE password_resets SET used_at = now()"
            " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING user_id",
            digest(token),
        )
        changed = user_id is not None and await conn.fetchval(
            "UPDATE users SET password_hash = $2, updated_at = now()"
            " WHERE id = $1 AND is_active AND deleted_at IS NULL RETURNING true",
            user_id,
            new_hash,
        )
        if not changed:
            raise InvalidInput(INVALID_RESET_TOKEN)
        await conn.execute(
            "UPDATE password_resets SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
            user_id,
        )
        return await _revoke_all(conn, user_id, None)


async def _add_refresh_token(conn: Conn, session_id: str, days: int) -> str:
    token = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
        digest(token),
        session_id,
        _days_from_now(days),
    )
    return token


async def _revoke(db: Executor, session_id: str) -> None:
    await db.execute(
        "UPDATE auth_sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        session_id,
    )


async def _revoke_all(conn: Conn, user_id: int, keep: str | None) -> list[str]:
    rows = await conn.fetch(
        "UPDATE auth_sessions SET revoked_at = now()"
        " WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2 RETURNING id",
        user_id,
        keep,
    )
    return [row["id"] for row in rows]


def _days_from_now(days: int) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


async def recently_revoked(db: Executor, seconds: float) -> list[str]:
    """The sessions revoked within the last ``seconds`` (their access tokens may still be out)."""
    rows = await db.fetch(
        "SELECT id FROM auth_sessions WHERE revoked_at > now() - make_interval(secs => $1)",
        seconds,
    )
    return [row["id"] for row in rows]


# Rows kept of sessions and reset tokens that can no longer be used: a sign-in and a password
# reset each add one, and nothing else ever removes them. Deleted in batches by
# seatlock/services/retention.py once ``kept_for`` has passed since they stopped counting.
PRUNE_SESSIONS = (
    "WITH dead AS (SELECT id FROM auth_sessions"
    " WHERE expires_at < now() - $1::interval OR revoked_at < now() - $1::interval"
    " LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " DELETE FROM auth_sessions s USING dead WHERE s.id = dead.id"
)
PRUNE_RESETS = (
    "WITH dead AS (SELECT token_hash FROM password_resets"
    " WHERE expires_at < now() - $1::interval LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " DELETE FROM password_resets r USING dead WHERE r.token_hash = dead.token_hash"
)


async def prune_credentials(db: Executor, kept_for: timedelta, batch: int) -> int:
    """Delete up to ``batch`` sessions and ``batch`` reset tokens that expired or were revoked
    more than ``kept_for`` ago (a session's refresh tokens go with it: ON DELETE CASCADE); how
    many rows went. A session gone is refused as a revoked one is (api/auth.py reads no row as
    not active), and a reset token gone as an expired one, so nothing answers differently.
    SKIP LOCKED: processes pruning at the same moment take different rows."""
    sessions = await db.execute(PRUNE_SESSIONS, kept_for, batch)
    resets = await db.execute(PRUNE_RESETS, kept_for, batch)
    return _deleted(sessions) + _deleted(resets)


def _deleted(status: str) -> int:
    """The row count of a ``DELETE n`` command status."""
    return int(status.rpartition(" ")[2] or 0)
