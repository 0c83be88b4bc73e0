"""Sessions: logout, change-password, refresh-token rotation and reuse, the PostgreSQL fallback."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import jwt
from redis.asyncio import Redis

from api.auth import session_opened
from seatlock import keys
from seatlock.accounts.tokens import digest
from tests.support import PASSWORD, Account, login, make_account

ME = "/api/v1/auth/me"
LOGOUT = "/api/v1/auth/logout"
CHANGE = "/api/v1/auth/change-password"
REFRESH = "/api/v1/auth/refresh-token"
NEW_PASSWORD = "An0ther-secret!"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": token})


async def me_status(client: httpx.AsyncClient, access_token: str) -> int:
    return (await client.get(ME, headers=bearer(access_token))).status_code


async def test_logout_revokes_access_and_refresh_at_once(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert await me_status(client, user.token) == 200  # cached "1" in Redis first
    r = await client.post(LOGOUT, headers=user.headers)
    assert r.status_code == 200
    assert r.json() == {"message": "Successfully logged out"}
    r = await client.get(ME, headers=user.headers)
    assert r.status_code == 401
    assert r.json() == {"detail": "Session has been revoked"}
    assert (await refresh(client, user.refresh_token)).status_code == 401


async def test_logout_leaves_other_sessions_alone(client: httpx.AsyncClient, user: Account) -> None:
    second = await login(client, user.email)
    assert (await client.post(LOGOUT, headers=user.headers)).status_code == 200
    assert await me_status(client, second["access_token"]) == 200
    assert (await refresh(client, second["refresh_token"])).status_code == 200


async def test_logout_needs_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.post(LOGOUT)).status_code == 401


async def test_change_password_revokes_only_the_other_sessions(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    other_session = await login(client, user.email)
    assert await me_status(client, other_session["access_token"]) == 200
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    r = await client.put(CHANGE, json=body, headers=user.headers)
    assert r.status_code == 200, r.text
    assert await me_status(client, other_session["access_token"]) == 401
    assert (await refresh(client, other_session["refresh_token"])).status_code == 401
    assert await me_status(client, user.token) == 200
    assert (await refresh(client, user.refresh_token)).status_code == 200
    assert await me_status(client, other_user.token) == 200
    await login(client, user.email, NEW_PASSWORD)
    r = await client.post("/api/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 401


async def test_change_password_with_wrong_current_is_400(
    client: httpx.AsyncClient, user: Account
) -> None:
    body = {"current_password": "Wrong-pass1", "new_password": NEW_PASSWORD}
    r = await client.put(CHANGE, json=body, headers=user.headers)
    assert r.status_code == 400
    assert r.json() == {"detail": "Incorrect current password"}
    await login(client, user.email, PASSWORD)


async def test_change_password_checks_the_new_one(client: httpx.AsyncClient, user: Account) -> None:
    for new in ("weak", "b" * 80 + "1", PASSWORD):
        body = {"current_password": PASSWORD, "new_password": new}
        r = await client.put(CHANGE, json=body, headers=user.headers)
        assert r.status_code in (400, 422), new
    r = await client.put(CHANGE, json={"new_password": NEW_PASSWORD}, headers=user.headers)
    assert r.status_code == 422
    assert (await client.put(CHANGE, json={})).status_code == 401
    await login(client, user.email, PASSWORD)


async def test_refresh_rotates_within_the_session(client: httpx.AsyncClient, user: Account) -> None:
    r = await refresh(client, user.refresh_token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["refresh_token"] != user.refresh_token
    assert await me_status(client, body["access_token"]) == 200
    assert await me_status(client, user.token) == 200  # same session, not revoked
    again = await refresh(client, body["refresh_token"])
    assert again.status_code == 200
    assert again.json()["refresh_token"] not in (user.refresh_token, body["refresh_token"])


async def test_refresh_accepts_an_expired_bearer_header(
    client: httpx.AsyncClient, user: Account
) -> None:
    headers = bearer("expired-or-garbage")
    r = await client.post(REFRESH, json={"refresh_token": user.refresh_token}, headers=headers)
    assert r.status_code == 200


async def past_the_grace_window(db: asyncpg.Connection) -> None:
    """What waiting out SEATLOCK_REFRESH_GRACE_SECONDS does to the spent tokens."""
    await db.execute(
        "UPDATE refresh_tokens SET used_at = used_at - interval '1 minute'"
        " WHERE used_at IS NOT NULL"
    )


async def test_reusing_a_refresh_token_revokes_the_family(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    latest = (await refresh(client, user.refresh_token)).json()
    assert await me_status(client, latest["access_token"]) == 200  # Redis now caches "1"
    await past_the_grace_window(db)
    r = await refresh(client, user.refresh_token)  # replayed: someone else holds a copy
    assert r.status_code == 401
    assert "revoked" in r.json()["detail"]
    assert (await refresh(client, latest["refresh_token"])).status_code == 401
    assert await me_status(client, latest["access_token"]) == 401
    assert await me_status(client, user.token) == 401
    assert await me_status(client, other_user.token) == 200


async def test_concurrent_refreshes_rotate_once_and_share_the_pair(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    results = await asyncio.gather(*(refresh(client, user.refresh_token) for _ in range(5)))
    assert [r.status_code for r in results] == [200] * 5, [r.text for r in results]
    # One rotation; the duplicates, inside the grace window, got the winner's pair.
    assert len({(r.json()["access_token"], r.json()["refresh_token"]) for r in results}) == 1
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == 2
    winner = results[0].json()
    assert await me_status(client, winner["access_token"]) == 200
    assert (await refresh(client, winner["refresh_token"])).status_code == 200


async def test_a_duplicate_after_the_grace_window_still_revokes(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    first = (await refresh(client, user.refresh_token)).json()
    assert (await refresh(client, user.refresh_token)).json() == first  # within the window
    await past_the_grace_window(db)
    r = await refresh(client, user.refresh_token)
    assert r.status_code == 401
    assert "revoked" in r.json()["detail"]
    assert await me_status(client, first["access_token"]) == 401


async def test_no_grace_after_logout(client: httpx.AsyncClient, user: Account) -> None:
    first = (await refresh(client, user.refresh_token)).json()
    await client.post(LOGOUT, headers=bearer(first["access_token"]))
    assert (await refresh(client, user.refresh_token)).status_code == 401


async def test_a_lost_grace_pair_counts_as_reuse(
    client: httpx.AsyncClient, redis: Redis, user: Account
) -> None:
    first = (await refresh(client, user.refresh_token)).json()
    await redis.delete(keys.refresh_grace(digest(user.refresh_token)))
    assert (await refresh(client, user.refresh_token)).status_code == 401
    assert await me_status(client, first["access_token"]) == 401


async def test_the_grace_pair_is_sealed_in_redis(
    client: httpx.AsyncClient, redis: Redis, user: Account
) -> None:
    first = (await refresh(client, user.refresh_token)).json()
    sealed = await redis.get(keys.refresh_grace(digest(user.refresh_token)))
    assert (
        sealed is not None
        and 0 < await redis.ttl(keys.refresh_grace(digest(user.refresh_token))) <= 10
    )
    for secret in (first["access_token"], first["refresh_token"], user.refresh_token):
        assert secret.encode() not in sealed
        assert secret.encode()[:12] not in sealed


async def test_grace_zero_revokes_at_once(make_server: Any) -> None:
    server = make_server(refresh_grace_seconds=0)
    async with httpx.AsyncClient(base_url=server.url) as client:
        tokens = await login(client, (await make_account(client, "z@example.com", "Z")).email)
        results = await asyncio.gather(
            *(refresh(client, tokens["refresh_token"]) for _ in range(3))
        )
        assert sorted(r.status_code for r in results) == [200, 401, 401]


async def test_refresh_tokens_are_stored_hashed(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    stored = await db.fetch("SELECT token_hash FROM refresh_tokens")
    assert [row["token_hash"] for row in stored] == [digest(user.refresh_token)]
    assert user.refresh_token not in str(stored)


async def test_expired_refresh_token_is_401(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    await db.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    r = await refresh(client, user.refresh_token)
    assert r.status_code == 401
    assert r.json() == {"detail": "Invalid or expired refresh token"}


async def test_refresh_expiry_follows_the_setting(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    days = await db.fetchval(
        "SELECT extract(epoch FROM expires_at - issued_at) / 86400 FROM refresh_tokens"
    )
    assert round(float(days)) == 14


async def test_refresh_refused_for_a_disabled_user(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    await db.execute("UPDATE users SET is_active = false WHERE id = $1", user.id)
    assert (await refresh(client, user.refresh_token)).status_code == 401


async def test_bad_refresh_bodies(client: httpx.AsyncClient) -> None:
    bodies: list[Any] = [{"refresh_token": "unknown"}, {"refresh_token": ""}, {}, {"x": 1}]
    statuses = [(await client.post(REFRESH, json=b)).status_code for b in bodies]
    assert statuses == [401, 422, 422, 422]


async def test_revocation_seen_from_postgres_after_redis_flush(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    assert await me_status(client, user.token) == 200
    await redis.flushall()
    await db.execute("UPDATE auth_sessions SET revoked_at = now() WHERE user_id = $1", user.id)
    r = await client.get(ME, headers=user.headers)
    assert r.status_code == 401
    assert r.json() == {"detail": "Session has been revoked"}
    sessions = await redis.keys(keys.session("*"))
    assert [await redis.get(k) for k in sessions] == [b"0"]  # PostgreSQL's answer is cached


async def test_active_session_survives_a_redis_flush(
    client: httpx.AsyncClient, redis: Redis, user: Account
) -> None:
    await redis.flushall()
    assert await me_status(client, user.token) == 200
    assert await me_status(client, user.token) == 200


async def test_a_new_session_is_known_to_redis_before_its_first_use(
    client: httpx.AsyncClient, redis: Redis, user: Account
) -> None:
    """Its first request then asks Redis only, not PostgreSQL (a burst of fresh logins)."""
    tokens = await login(client, user.email)
    session_id = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]
    assert await redis.get(keys.session(session_id)) == b"1"
    assert 0 < await redis.ttl(keys.session(session_id)) <= 3600


async def test_priming_a_session_never_overwrites_a_revocation(
    client: httpx.AsyncClient, redis: Redis, user: Account
) -> None:
    r = await client.post("/api/v1/auth/logout", headers=user.headers)
    assert r.status_code == 200
    session_id = jwt.decode(user.token, options={"verify_signature": False})["sid"]
    services: Any = SimpleNamespace(redis=redis)  # session_opened only talks to Redis
    await session_opened(services, session_id)
    assert await redis.get(keys.session(session_id)) == b"0"
    assert await me_status(client, user.token) == 401
