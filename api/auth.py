"""Resolving the caller of a request from its bearer token.

A token is checked without any round trip on the hot path: its signature once per process, its
expiry on every use, and its session against the sessions this process trusts
(seatlock/accounts/sessions.py). Otherwise the session's state comes from Redis; when Redis does
not know the session (first use, or Redis lost its data) PostgreSQL answers once and Redis
remembers.

Revocation writes PostgreSQL first (the record), then Redis (the cache every process reads) and
publishes it to every process (``publish_revocations``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from redis.asyncio.cluster import RedisCluster

from seatlock import keys
from seatlock.accounts.sessions import CHANNEL
from seatlock.accounts.tokens import Principal
from seatlock.engine.transport import REDIS_DOWN
from seatlock.errors import Forbidden, NotAuthenticated
from seatlock.settings import IPNetwork

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from seatlock.services.container import Services

SESSION_CACHE_SECONDS = 3600


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of the first Authorization header (raw ASGI headers), if it is a bearer one."""
    for name, value in headers:
        if name == b"authorization":
            # The scheme is what precedes the first space, in any case: "bearer" and that space
            # are the first 7 bytes (bytes.lower() is ASCII-only, as is every "bearer" spelling).
            if value[:7].lower() != b"bearer ":
                return None
            return value[7:].decode("latin-1").strip() or None
    return None


async def authenticate(token: str | None, services: Services, access: str) -> Principal | None:
    """The caller for an endpoint of the given access level; raises when it is not allowed."""
    if access == "public":
        return None
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
    if services.sessions.trusts(principal.session_id):
        return principal
    if not await session_is_active(services, principal.session_id):
        raise NotAuthenticated("Session has been revoked")
    return principal


async def session_is_active(services: Services, session_id: str) -> bool:
    trust = services.sessions
    if session_id in trust.revoked:
        return False
    epoch = trust.epoch
    active = await _session_state(services, session_id)
    if active:
        trust.confirm(session_id, epoch)
    return active


async def _session_state(services: Services, session_id: str) -> bool:
    # Through the engine's transport, as the seat scripts go: one pipelined connection, where a
    # crowd of new sessions (a release day: every user's first request in every process) would
    # queue for the connection pool's few connections. When the key's Redis does not answer (a
    # cluster node failing over: the session keys of many users live there), PostgreSQL, which
    # decides, answers: a request that needs no seat of that node is served, not a 503.
    transport, key = services.engine.transport, keys.session(session_id)
    cached, remember = None, True
    try:
        cached = await transport.command("GET", key)
    except REDIS_DOWN:
        remember = False  # asked of PostgreSQL, and not written back
    if cached is not None:
        return bool(cached == b"1")
    row = await services.db.fetchrow(
        "SELECT revoked_at IS NULL AND expires_at > now() AS active, expires_at"
        " FROM auth_sessions WHERE id = $1",
        session_id,
    )
    active = bool(row and row["active"])
    if not remember:
        return active
    ttl = SESSION_CACHE_SECONDS
    if row and active:
        ttl = max(1, min(ttl, int(row["expires_at"].timestamp() - time.time())))
    # NX: a revocation that landed between our read and this write has already set "0"; a
    # plain SET would overwrite it with the stale "1" and let the session live on.
    state = b"1" if active else b"0"
    with contextlib.suppress(*REDIS_DOWN):  # the answer stands; the next check asks again
        await transport.command("SET", key, state, "EX", ttl, "NX")
    return active


async def session_opened(services: Services, session_id: str) -> None:
    """Tell Redis of a session PostgreSQL just created, so its first use asks Redis only.

    NX, as in ``_session_state``: a revocation's "0" is never overwritten. A revocation committed
    before this session existed cannot concern it; one committed after writes its "0" over ours.
    """
    await services.redis.set(keys.session(session_id), b"1", ex=SESSION_CACHE_SECONDS, nx=True)


async def remember_session(services: Services, session_id: str, active: bool) -> None:
    """Tell Redis a session's new state right after PostgreSQL recorded it."""
    await remember_sessions(services, [session_id], active)


async def remember_sessions(services: Services, session_ids: Iterable[str], active: bool) -> None:
    ids = list(session_ids)
    if not active:
        await publish_revocations(services, ids)
    elif ids:
        async with services.redis.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.set(keys.session(session_id), b"1", ex=SESSION_CACHE_SECONDS)
            await pipe.execute()


async def publish_revocations(services: Services, session_ids: list[str]) -> None:
    """Every revocation goes through here, after PostgreSQL committed it.

    This process stops trusting the sessions before anything is awaited; Redis stores "0" for
    processes that check it, then the channel tells the others (seatlock/accounts/sessions.py).
    """
    if not session_ids:
        return
    services.sessions.revoke(session_ids)
    cluster = isinstance(services.redis, RedisCluster)
    async with services.redis.pipeline(transaction=False) as pipe:
        for session_id in session_ids:
            pipe.set(keys.session(session_id), b"0", ex=SESSION_CACHE_SECONDS)
        if not cluster:
            pipe.publish(CHANNEL, " ".join(session_ids))
        await pipe.execute()
    if cluster:  # a cluster pipeline refuses PUBLISH: it follows the writes, one round trip later
        await services.redis.publish(CHANNEL, " ".join(session_ids))


def client_address(conn: HTTPConnection, trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy.

    Behind trusted proxies (``SEATLOCK_TRUSTED_PROXIES``) the right-most X-Forwarded-For entry
    that is not itself a trusted proxy is the client: entries to its left were written by the
    client and prove nothing, so a client cannot pick its address by header (the login
    throttle counts by this address). uvicorn's own proxy-headers handling is off
    (seatlock/server/cli.py), so this setting alone decides.
    """
    address = conn.client.host if conn.client else "unknown"
    if not _is_trusted(address, trusted):
        return address
    for hop in reversed(_forwarded_for(conn)):
        try:
            hop = str(ipaddress.ip_address(hop))
        except ValueError:
            return address  # garbage from a proxy: the last sound hop speaks for the client
        if not _is_trusted(hop, trusted):
            return hop
        address = hop
    return address


def _forwarded_for(conn: HTTPConnection) -> list[str]:
    # Several X-Forwarded-For headers are one list, in order (RFC 9110 field lines).
    values = conn.headers.getlist("x-forwarded-for")
    return [hop.strip() for value in values for hop in value.split(",") if hop.strip()]


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    if not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
