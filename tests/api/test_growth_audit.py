"""A server that runs for weeks keeps nothing without bound: per process, in Redis, in PostgreSQL.

Each test drives a path many times (or ages its rows) against the real servers and looks at the
structure it would grow.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from api import caching
from seatlock.engine.shards import ShardChannels
from tests import factories as make
from tests.support import LiveServer

AVAILABILITY = "/api/v1/seat-reservations/screening/{}/availability"


async def test_accept_encoding_values_kept_are_small(client: httpx.AsyncClient) -> None:
    """The parsed Accept-Encoding values a process keeps stay a few KB, whatever clients send:
    each distinct value was kept whole (up to the head's 64 KB), 256 of them at a time."""
    caching._chosen.clear()
    for n in range(300):
        value = f"gzip;q=0.5, x-made-up-{n}-" + "a" * 4000
        r = await client.get("/health/live", headers={"Accept-Encoding": value})
        assert r.status_code == 200
    await client.get("/health/live", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert sum(map(len, caching._chosen)) <= 64 * 1024
    assert caching._chosen.get(b"gzip, deflate, br") == "br"  # what browsers send is still kept


async def _dead_credentials(db: asyncpg.Connection) -> dict[str, Any]:
    """A user with sessions and reset tokens long dead, and live ones."""
    user_id = await make.buyer(db)
    now = datetime.now(UTC)
    sessions = {
        "expired": (now - timedelta(days=3), None),
        "revoked": (now + timedelta(days=10), now - timedelta(days=2)),
        "live": (now + timedelta(days=10), None),
        "just_revoked": (now + timedelta(days=10), now),  # its access tokens may still be out
        "just_expired": (now - timedelta(minutes=5), None),
    }
    ids = {name: secrets.token_urlsafe(18) for name in sessions}
    for name, (expires_at, revoked_at) in sessions.items():
        await db.execute(
            "INSERT INTO auth_sessions (id, user_id, expires_at, revoked_at)"
            " VALUES ($1, $2, $3, $4)",
            ids[name],
            user_id,
            expires_at,
            revoked_at,
        )
        for n in range(3):  # spent tokens of a rotating session, and its current one
            await db.execute(
                "INSERT INTO refresh_tokens (token_hash, session_id, expires_at, used_at)"
                " VALUES ($1, $2, $3, $4)",
                f"{name}-{n}",
                ids[name],
                expires_at,
                now if n < 2 else None,
            )
    resets = {"old": now - timedelta(days=2), "fresh": now + timedelta(minutes=30)}
    for name, expires_at in resets.items():
        await db.execute(
            "INSERT INTO password_resets (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
            name,
            user_id,
            expires_at,
        )
    return ids


async def _left(db: asyncpg.Connection) -> tuple[set[str], set[str], set[str]]:
    sessions = {r["id"] for r in await db.fetch("SELECT id FROM auth_sessions")}
    tokens = {r["token_hash"] for r in await db.fetch("SELECT token_hash FROM refresh_tokens")}
    resets = {r["token_hash"] for r in await db.fetch("SELECT token_hash FROM password_resets")}
    return sessions, tokens, resets


async def test_dead_sessions_and_reset_tokens_are_deleted(
    db: asyncpg.Connection, make_server: Any
) -> None:
    """Every sign-in left a session row (and a refresh token per rotation), every forgotten
    password a reset token, kept for ever; a server now deletes those dead for a day, and
    nothing live or only just dead."""
    ids = await _dead_credentials(db)
    make_server()  # prunes as it starts, then every hour
    kept = {"live", "just_revoked", "just_expired"}
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        sessions, tokens, resets = await _left(db)
        if sessions == {ids[name] for name in kept} or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert sessions == {ids[name] for name in kept}
    assert tokens == {f"{name}-{n}" for name in kept for n in range(3)}
    assert resets == {"fresh"}


async def test_a_past_screening_leaves_nothing_in_redis(
    client: httpx.AsyncClient, server: LiveServer, db: asyncpg.Connection, redis: Redis
) -> None:
    """A screening loaded into Redis (a seat map read, a hold) kept its keys (meta, seats,
    rows, sold, version) for ever: the sweep only took it off ``sl:screenings`` once it was
    long started, and every screening of every release day stayed in Redis. The sweep now
    unloads it, and a read loads it again."""
    show = await make.show(db, 200, starts_in=-timedelta(hours=3))
    assert (await client.get(AVAILABILITY.format(show.id))).status_code == 200
    tag = f"sl:{{scr:{show.id}}}:"
    assert await redis.exists(f"{tag}meta")
    # The server's sweep (every second) unlists a screening started long ago.
    for _ in range(50):
        if await redis.zscore("sl:screenings", show.id) is None:
            break
        await asyncio.sleep(0.1)
    assert await redis.zscore("sl:screenings", show.id) is None
    left = [key async for key in redis.scan_iter(match=f"{tag}*")]
    without_ttl = [key for key in left if await redis.pttl(key) == -1]
    assert without_ttl == []
    # Read again, it is loaded again, whole, and unloaded again by a later sweep.
    r = await client.get(AVAILABILITY.format(show.id))
    assert r.status_code == 200 and len(r.json()) == 200
    for _ in range(50):
        if not await redis.exists(f"{tag}meta"):
            break
        await asyncio.sleep(0.1)
    assert not await redis.exists(f"{tag}meta")


async def test_a_shard_channel_wait_given_up_leaves_no_entry() -> None:
    """A wait for a sharded channel that never went live (released first, its node gone) left
    its channel's empty waiter list behind, one per channel, for the process's life."""
    shards = ShardChannels(cast(Any, None), lambda _: None, lambda channel, live: None)
    for n in range(3):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(shards.confirmed(f"sl:{{scr:{n}}}:events"), 0.01)
    assert shards._waiters == {}
