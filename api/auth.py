"""Resolving the caller of a request from its bearer token.

A token is checked without a database round trip on the hot path: the signature and expiry in
process, then its session's state in Redis. When Redis does not know the session (first use, or
Redis lost its data) PostgreSQL answers once and Redis remembers.

Revocation writes PostgreSQL first (the record), then Redis (the cache every request reads).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from seatlock import keys
from seatlock.errors import Forbidden, NotAuthenticated
from seatlock.tokens import Principal

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from api.state import Services

SESSION_CACHE_SECONDS = 3600


def bearer_token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def authenticate(conn: HTTPConnection, services: Services, access: str) -> Principal | None:
    """The caller for an endpoint of the given access level; raises when it is not allowed."""
    if access == "public":
        return None
    token = bearer_token(conn)
    if token is None:
        if access == "optional":
            return None
        raise NotAuthenticated("Not authenticated")
    principal = await principal_from_token(token, services)
    if access == "admin" and not principal.is_admin:
        raise Forbidden("Admin privileges required")
    return principal


async def principal_from_token(token: str, services: Services) -> Principal:
    principal = services.tokens.decode(token)
    if not await session_is_active(services, principal.session_id):
        raise NotAuthenticated("Session has been revoked")
    return principal


async def session_is_active(services: Services, session_id: str) -> bool:
    cached = await services.redis.get(keys.session(session_id))
    if cached is not None:
        return bool(cached == b"1")
    row = await services.db.fetchrow(
        "SELECT revoked_at IS NULL AND expires_at > now() AS active, expires_at"
        " FROM auth_sessions WHERE id = $1",
        session_id,
    )
    active = bool(row and row["active"])
    ttl = SESSION_CACHE_SECONDS
    if row and active:
        ttl = max(1, min(ttl, int(row["expires_at"].timestamp() - time.time())))
    # NX: a revocation that landed between our read and this write has already set "0"; a
    # plain SET would overwrite it with the stale "1" and let the session live on.
    await services.redis.set(keys.session(session_id), b"1" if active else b"0", ex=ttl, nx=True)
    return active


async def remember_session(services: Services, session_id: str, active: bool) -> None:
    """Tell Redis a session's new state right after PostgreSQL recorded it."""
    await remember_sessions(services, [session_id], active)


async def remember_sessions(services: Services, session_ids: Iterable[str], active: bool) -> None:
    async with services.redis.pipeline(transaction=False) as pipe:
        for session_id in session_ids:
            pipe.set(keys.session(session_id), b"1" if active else b"0", ex=SESSION_CACHE_SECONDS)
        await pipe.execute()


def client_address(conn: HTTPConnection) -> str:
    """The peer address (uvicorn resolves X-Forwarded-For from its trusted proxies)."""
    return conn.client.host if conn.client else "unknown"
