"""Sessions trusted per process: no Redis read once confirmed, revocations reach every process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from seatlock import keys
from tests.support import Account, login

ME = "/api/v1/auth/me"
LOGOUT = "/api/v1/auth/logout"
CHANGE = "/api/v1/auth/change-password"
REFRESH = "/api/v1/auth/refresh-token"
REVOKED = {"detail": "Session has been revoked"}


async def me(base_url: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url) as c:
        return await c.get(ME, headers={"Authorization": f"Bearer {token}"})


async def until_refused(base_url: str, token: str, seconds: float = 3.0) -> httpx.Response:
    """The pub/sub message takes a moment to reach another process: poll for it."""
    deadline = time.monotonic() + seconds
    while True:
        r = await me(base_url, token)
        if r.status_code != 200 or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.02)


async def session_key(redis: Redis) -> str:
    [key] = await redis.keys(keys.session("*"))
    return key.decode() if isinstance(key, bytes) else str(key)


async def cut_revocation_feeds(redis: Redis) -> None:
    """Cut the revocation subscribers (client tracking on): the event hubs' are not ours."""
    for info in await redis.client_list():
        if "t" in info["flags"]:
            await redis.client_kill_filter(_id=info["id"])


async def test_a_confirmed_session_is_not_read_from_redis_again(
    client: httpx.AsyncClient, redis: Redis, user: Account
) -> None:
    assert (await client.get(ME, headers=user.headers)).status_code == 200
    # Written behind the server's back (no publish): only a Redis read would see it.
    await redis.set(await session_key(redis), b"0")
    assert (await client.get(ME, headers=user.headers)).status_code == 200


async def test_logout_reaches_another_process(
    client: httpx.AsyncClient, make_server: Any, user: Account
) -> None:
    other = make_server()
    assert (await me(other.url, user.token)).status_code == 200  # trusted there now
    assert (await client.post(LOGOUT, headers=user.headers)).status_code == 200
    r = await until_refused(other.url, user.token)
    assert (r.status_code, r.json()) == (401, REVOKED)


async def test_password_change_and_refresh_reuse_reach_another_process(
    client: httpx.AsyncClient, db: asyncpg.Connection, make_server: Any, user: Account
) -> None:
    other = make_server()
    second = await login(client, user.email, user.password)
    third = await login(client, user.email, user.password)
    for token in (user.token, second["access_token"], third["access_token"]):
        assert (await me(other.url, token)).status_code == 200
    body = {"current_password": user.password, "new_password": "An0ther-secret!"}
    assert (await client.put(CHANGE, json=body, headers=user.headers)).status_code == 200
    assert (await until_refused(other.url, second["access_token"])).status_code == 401
    # The session that changed the password lives on; a refresh token used twice ends it.
    assert (await me(other.url, user.token)).status_code == 200
    refresh = {"refresh_token": user.refresh_token}
    assert (await client.post(REFRESH, json=refresh)).status_code == 200
    # Past the grace window, in which a duplicate would get the same pair instead.
    await db.execute("UPDATE refresh_tokens SET used_at = used_at - interval '1 minute'")
    assert (await client.post(REFRESH, json=refresh)).status_code == 401
    assert (await until_refused(other.url, user.token)).status_code == 401


async def test_a_lost_subscription_rechecks_every_session(
    client: httpx.AsyncClient, redis: Redis, make_server: Any, user: Account
) -> None:
    other = make_server()
    assert (await me(other.url, user.token)).status_code == 200
    await redis.set(await session_key(redis), b"0")  # a revocation missed while disconnected
    await cut_revocation_feeds(redis)
    r = await until_refused(other.url, user.token, seconds=5)
    assert (r.status_code, r.json()) == (401, REVOKED)


async def test_revoked_in_postgres_during_a_flush_is_refused_by_every_process(
    client: httpx.AsyncClient, redis: Redis, db: Any, make_server: Any, user: Account
) -> None:
    other = make_server()
    assert (await me(other.url, user.token)).status_code == 200
    await redis.flushall()
    await db.execute("UPDATE auth_sessions SET revoked_at = now() WHERE user_id = $1", user.id)
    for base_url in (other.url, str(client.base_url)):
        r = await me(base_url, user.token)
        assert (r.status_code, r.json()) == (401, REVOKED)


async def test_a_redis_restored_from_before_a_logout_does_not_bring_the_session_back(
    client: httpx.AsyncClient, redis: Redis, make_server: Any, user: Account
) -> None:
    # A Redis restarted from a snapshot older than the logout has the session's "1" again: a
    # process started since must not take the token for a live session's.
    assert (await client.get(ME, headers=user.headers)).status_code == 200
    key = await session_key(redis)
    assert (await client.post(LOGOUT, headers=user.headers)).status_code == 200
    await redis.set(key, b"1", ex=3600)  # what the restore put back
    r = await me(make_server().url, user.token)
    assert (r.status_code, r.json()) == (401, REVOKED)


async def test_a_feed_back_on_a_restored_redis_learns_the_revocations_it_lost(
    client: httpx.AsyncClient, redis: Redis, db: Any, make_server: Any, user: Account
) -> None:
    # The revocation's "0" and its message were lost with Redis (restored from an older
    # snapshot, which cut every subscription): PostgreSQL's record is read once the feed is back.
    other = make_server()
    assert (await me(other.url, user.token)).status_code == 200
    key = await session_key(redis)
    await db.execute("UPDATE auth_sessions SET revoked_at = now() WHERE user_id = $1", user.id)
    await redis.set(key, b"1", ex=3600)
    await cut_revocation_feeds(redis)
    r = await until_refused(other.url, user.token, seconds=5)
    assert (r.status_code, r.json()) == (401, REVOKED)
