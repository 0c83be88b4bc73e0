"""Failed-login throttling, counted in Redis per (account, address), per address and per account.

The test servers trust X-Forwarded-For from 127.0.0.1 (``SEATLOCK_TRUSTED_PROXIES``), which
lets one test client speak for several addresses; ``untrusting`` servers do not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import pytest
from redis.asyncio import Redis

from seatlock import keys
from seatlock.settings import Settings
from tests.support import PASSWORD, Account, LiveServer, make_account

LOGIN = "/api/v1/auth/login"
WRONG = "Wrong-pass-1"
LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def server(base_settings: Settings) -> Iterator[LiveServer]:
    """This module's servers trust the loopback peer as their proxy."""
    live = LiveServer(base_settings.replace(trusted_proxies=LOOPBACK))
    live.start()
    yield live
    live.stop()


@pytest.fixture
def make_server(make_server: Callable[..., LiveServer]) -> Callable[..., LiveServer]:
    def start(**changes: object) -> LiveServer:
        return make_server(**{"trusted_proxies": LOOPBACK} | changes)

    return start


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


async def test_account_locked_after_max_failures_from_one_address(
    client: httpx.AsyncClient, user: Account
) -> None:
    await fail(client, user.email, 5)
    r = await attempt(client, user.email, PASSWORD)
    assert r.status_code == 429
    assert r.json() == {"detail": "Too many failed login attempts; try again later"}
    assert 890 <= int(r.headers["Retry-After"]) <= 900
    # Per account and address: another spelling of the email from there, the same lock.
    assert (await attempt(client, "ALICE@example.com", PASSWORD)).status_code == 429


async def test_failures_from_one_address_do_not_lock_out_the_owner_elsewhere(
    client: httpx.AsyncClient, user: Account
) -> None:
    await fail(client, user.email, 5, address="10.6.6.6")
    assert (await attempt(client, user.email, address="10.6.6.6")).status_code == 429
    assert (await attempt(client, user.email, PASSWORD, "10.9.9.9")).status_code == 200


async def test_the_account_wide_limit_stops_guesses_spread_over_addresses(
    make_server: object,
) -> None:
    server: LiveServer = make_server(login_max_failures_per_account=6)  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=server.url) as client:
        owner = await make_account(client, "spread@example.com", "Spread")
        for n in range(3):
            await fail(client, owner.email, 2, address=f"10.8.0.{n}")
        r = await attempt(client, owner.email, PASSWORD, "10.8.1.1")
        assert r.status_code == 429
        assert 0 < int(r.headers["Retry-After"]) <= 900


async def test_refused_attempts_do_not_count_towards_the_account_wide_limit(
    make_server: object,
) -> None:
    server: LiveServer = make_server(login_max_failures_per_account=8)  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=server.url) as client:
        owner = await make_account(client, "hammered@example.com", "Hammered")
        await fail(client, owner.email, 5, address="10.5.5.5")
        for _ in range(20):  # refused up front: never reach the password check
            assert (await attempt(client, owner.email, address="10.5.5.5")).status_code == 429
        assert (await attempt(client, owner.email, PASSWORD, "10.9.9.9")).status_code == 200


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
    assert await redis.exists(keys.login_failures_pair(user.email, "10.0.0.1")) == 0
    await fail(client, user.email, 5)
    assert (await attempt(client, user.email, PASSWORD)).status_code == 429


async def test_the_window_is_a_redis_ttl(
    client: httpx.AsyncClient, redis: Redis, user: Account
) -> None:
    await fail(client, user.email, 5)
    key = keys.login_failures_pair(user.email, "10.0.0.1")
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


async def test_an_untrusted_peer_cannot_rotate_its_address_by_header(make_server: object) -> None:
    server: LiveServer = make_server(  # type: ignore[operator]
        trusted_proxies="", login_max_failures_per_ip=3
    )
    async with httpx.AsyncClient(base_url=server.url) as client:
        owner = await make_account(client, "rotated@example.com", "Rotated")
        for n in range(3):  # a fresh X-Forwarded-For each time, other accounts each time
            await fail(client, f"guess{n}@example.com", 1, address=f"10.4.0.{n}")
        r = await attempt(client, owner.email, PASSWORD, "10.4.9.9")
        assert r.status_code == 429  # all of them were the loopback peer


async def test_a_trusted_proxy_names_the_client(
    client: httpx.AsyncClient, redis: Redis, user: Account
) -> None:
    # The right-most hop that is not a trusted proxy is the client; what it wrote to the left
    # of it (here "6.6.6.6") proves nothing.
    headers = {"X-Forwarded-For": f"6.6.6.6, 10.3.3.3, {LOOPBACK}"}
    r = await client.post(LOGIN, json={"email": user.email, "password": WRONG}, headers=headers)
    assert r.status_code == 401
    assert int(await redis.get(keys.login_failures_address("10.3.3.3")) or 0) == 1
    assert await redis.exists(keys.login_failures_address("6.6.6.6")) == 0
    assert await redis.exists(keys.login_failures_address(LOOPBACK)) == 0


async def test_strangers_cannot_lock_the_owner_out_of_where_the_owner_signs_in(
    make_server: object,
) -> None:
    server: LiveServer = make_server(login_max_failures_per_account=6)  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=server.url) as client:
        owner = await make_account(client, "known@example.com", "Known")
        assert (await attempt(client, owner.email, PASSWORD, "10.7.7.7")).status_code == 200
        for n in range(3):  # guesses spread over addresses run the account-wide limit down
            await fail(client, owner.email, 2, address=f"10.8.0.{n}")
        assert (await attempt(client, owner.email, PASSWORD, "10.8.1.1")).status_code == 429
        # From where the owner signed in, the owner is let in; a guess there still fails.
        assert (await attempt(client, owner.email, PASSWORD, "10.7.7.7")).status_code == 200
        assert (await attempt(client, owner.email, address="10.7.7.7")).status_code == 401


async def test_wrong_current_passwords_count_as_failed_sign_ins(
    client: httpx.AsyncClient, user: Account
) -> None:
    headers = {**user.headers, "X-Forwarded-For": "10.0.0.7"}
    change = "/api/v1/auth/change-password"
    guess = {"current_password": WRONG, "new_password": "Another-pass-123"}
    for _ in range(5):
        r = await client.put(change, json=guess, headers=headers)
        assert r.status_code == 400
        assert r.json() == {"detail": "Incorrect current password"}
    right = {"current_password": PASSWORD, "new_password": "Another-pass-123"}
    r = await client.put(change, json=right, headers=headers)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > 0
    # The same count as the sign-ins of the account from that address.
    assert (await attempt(client, user.email, PASSWORD, "10.0.0.7")).status_code == 429
    assert (await attempt(client, user.email, PASSWORD, "10.0.0.8")).status_code == 200
