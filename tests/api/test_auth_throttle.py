"""Failed-login throttling, counted in Redis per account and per client address.

uvicorn trusts X-Forwarded-For from 127.0.0.1, which lets one test client speak for several
addresses.
"""

from __future__ import annotations

import asyncio

import httpx
from redis.asyncio import Redis

from seatlock import keys
from tests.support import PASSWORD, Account, LiveServer, make_account

LOGIN = "/api/v1/auth/login"
WRONG = "Wrong-pass-1"


async def attempt(
    client: httpx.AsyncClient, email: str, password: str = WRONG, address: str = "10.0.0.1"
) -> httpx.Response:
    headers = {"X-Forwarded-For": address}
    return await client.post(LOGIN, json={"email": email, "password": password}, headers=headers)


async def fail(
    client: httpx.AsyncClient, email: str, times: int, address: str = "10.0.0.1"
) -> None:
    for _ in range(times):
        assert (await attempt(client, email, address=address)).status_code == 401


async def test_account_locked_after_max_failures(client: httpx.AsyncClient, user: Account) -> None:
    await fail(client, user.email, 5)
    r = await attempt(client, user.email, PASSWORD)
    assert r.status_code == 429
    assert r.json() == {"detail": "Too many failed login attempts; try again later"}
    assert 890 <= int(r.headers["Retry-After"]) <= 900
    # Per account: another address, another spelling of the email, the same lock.
    assert (await attempt(client, "ALICE@example.com", PASSWORD, "10.9.9.9")).status_code == 429


async def test_failures_below_the_limit_do_not_lock(
    client: httpx.AsyncClient, user: Account
) -> None:
    await fail(client, user.email, 4)
    assert (await attempt(client, user.email, PASSWORD)).status_code == 200


async def test_success_clears_the_account_counter(
    client: httpx.AsyncClient, redis: Redis, user: Account
) -> None:
    await fail(client, user.email, 4)
    assert (await attempt(client, user.email, PASSWORD)).status_code == 200
    assert await redis.exists(keys.login_failures_account(user.email)) == 0
    await fail(client, user.email, 5)
    assert (await attempt(client, user.email, PASSWORD)).status_code == 429


async def test_the_window_is_a_redis_ttl(
    client: httpx.AsyncClient, redis: Redis, user: Account
) -> None:
    await fail(client, user.email, 5)
    key = keys.login_failures_account(user.email)
    assert 890 <= await redis.ttl(key) <= 900
    await redis.delete(key)  # what the end of the window does
    assert (await attempt(client, user.email, PASSWORD)).status_code == 200


async def test_parallel_guesses_cannot_slip_past_the_limit(
    client: httpx.AsyncClient, user: Account
) -> None:
    results = await asyncio.gather(*(attempt(client, user.email) for _ in range(12)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [401] * 5 + [429] * 7


async def test_unknown_accounts_are_throttled_alike(client: httpx.AsyncClient) -> None:
    await fail(client, "ghost@example.com", 5)
    assert (await attempt(client, "ghost@example.com")).status_code == 429


async def test_per_address_limit_spans_accounts(make_server: object) -> None:
    server: LiveServer = make_server(login_max_failures_per_ip=3)  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=server.url) as client:
        victim = await make_account(client, "victim@example.com", "Victim")
        for email in ("a@example.com", "b@example.com", "c@example.com"):
            await fail(client, email, 1, address="10.6.6.6")
        r = await attempt(client, victim.email, PASSWORD, "10.6.6.6")
        assert r.status_code == 429
        assert 0 < int(r.headers["Retry-After"]) <= 900
        assert (await attempt(client, victim.email, PASSWORD, "10.7.7.7")).status_code == 200


async def test_successful_logins_do_not_count_against_the_address(make_server: object) -> None:
    server: LiveServer = make_server(login_max_failures_per_ip=2)  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=server.url) as client:
        account = await make_account(client, "busy@example.com", "Busy")
        for _ in range(4):
            assert (await attempt(client, account.email, PASSWORD, "10.1.1.1")).status_code == 200
