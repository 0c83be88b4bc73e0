"""forgot-password and reset-password: one answer for every email, single-use expiring tokens."""

from __future__ import annotations

import asyncio
import contextlib
import re

import asyncpg
import httpx
import orjson
import pytest

from seatlock.accounts.mail import Mail, Mailer
from seatlock.accounts.tokens import digest
from tests.support import PASSWORD, Account, LiveServer, login

FORGOT = "/api/v1/auth/forgot-password"
RESET = "/api/v1/auth/reset-password"
ME = "/api/v1/auth/me"
NEW_PASSWORD = "Fresh-start-42"


async def outbox(server: LiveServer, count: int) -> list[Mail]:
    """The outbox once it holds ``count`` mails (they are sent after the response)."""
    mailer = Mailer(server.settings)
    for _ in range(200):
        with contextlib.suppress(orjson.JSONDecodeError):  # a mail file still being written
            mails = mailer.outbox()
            if len(mails) >= count:
                return mails
        await asyncio.sleep(0.01)
    return mailer.outbox()


async def reset_token(client: httpx.AsyncClient, server: LiveServer, email: str) -> str:
    before = len(Mailer(server.settings).outbox())
    assert (await client.post(FORGOT, json={"email": email})).status_code == 200
    mail = (await outbox(server, before + 1))[-1]
    match = re.search(r"token: (\S+)", mail.body)
    assert match is not None, mail.body
    return match.group(1)


async def test_same_answer_whether_or_not_the_email_exists(
    client: httpx.AsyncClient, server: LiveServer, user: Account
) -> None:
    known = await client.post(FORGOT, json={"email": user.email})
    unknown = await client.post(FORGOT, json={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert known.json() == unknown.json()
    await outbox(server, 1)
    await asyncio.sleep(0.1)  # give a (wrong) mail to nobody the time to show up
    mails = Mailer(server.settings).outbox()
    assert [(m.to, m.kind) for m in mails] == [(user.email, "password_reset")]


async def test_reset_sets_the_password_and_revokes_every_session(
    client: httpx.AsyncClient, server: LiveServer, user: Account
) -> None:
    second = await login(client, user.email)
    for access in (user.token, second["access_token"]):  # Redis now caches "1" for both
        assert (await client.get(ME, headers={"Authorization": f"Bearer {access}"})).is_success
    token = await reset_token(client, server, " ALICE@example.com")
    r = await client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert r.status_code == 200, r.text
    for access in (user.token, second["access_token"]):
        assert (
            await client.get(ME, headers={"Authorization": f"Bearer {access}"})
        ).status_code == 401
    r = await client.post("/api/v1/auth/refresh-token", json={"refresh_token": user.refresh_token})
    assert r.status_code == 401
    await login(client, user.email, NEW_PASSWORD)


async def test_a_reset_token_works_once(
    client: httpx.AsyncClient, server: LiveServer, user: Account
) -> None:
    token = await reset_token(client, server, user.email)
    first = await client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert first.status_code == 200
    again = await client.post(RESET, json={"token": token, "new_password": "Yet-another-1"})
    assert again.status_code == 400
    assert again.json() == {"detail": "Invalid or expired reset token"}
    await login(client, user.email, NEW_PASSWORD)


async def test_concurrent_resets_with_one_token_succeed_once(
    client: httpx.AsyncClient, server: LiveServer, user: Account
) -> None:
    token = await reset_token(client, server, user.email)
    passwords = [f"Racer-{i}-password" for i in range(4)]
    results = await asyncio.gather(
        *(client.post(RESET, json={"token": token, "new_password": p}) for p in passwords)
    )
    statuses = [r.status_code for r in results]
    assert sorted(statuses) == [200, 400, 400, 400]
    await login(client, user.email, passwords[statuses.index(200)])


async def test_a_reset_spends_the_other_outstanding_tokens(
    client: httpx.AsyncClient, server: LiveServer, user: Account
) -> None:
    first = await reset_token(client, server, user.email)
    second = await reset_token(client, server, user.email)
    assert (
        await client.post(RESET, json={"token": second, "new_password": NEW_PASSWORD})
    ).is_success
    r = await client.post(RESET, json={"token": first, "new_password": "Yet-another-1"})
    assert r.status_code == 400


async def test_expired_and_unknown_tokens_are_400(
    client: httpx.AsyncClient, server: LiveServer, db: asyncpg.Connection, user: Account
) -> None:
    token = await reset_token(client, server, user.email)
    await db.execute("UPDATE password_resets SET expires_at = now() - interval '1 second'")
    for candidate in (token, "no-such-token"):
        r = await client.post(RESET, json={"token": candidate, "new_password": NEW_PASSWORD})
        assert r.status_code == 400
    await login(client, user.email, PASSWORD)


async def test_reset_tokens_are_stored_hashed_and_expire_on_time(
    client: httpx.AsyncClient, server: LiveServer, db: asyncpg.Connection, user: Account
) -> None:
    token = await reset_token(client, server, user.email)
    row = await db.fetchrow(
        "SELECT token_hash, extract(epoch FROM expires_at - created_at) AS life"
        " FROM password_resets"
    )
    assert row is not None
    assert row["token_hash"] == digest(token)
    assert abs(float(row["life"]) - 30 * 60) < 5


async def test_weak_new_password_keeps_the_token(
    client: httpx.AsyncClient, server: LiveServer, user: Account
) -> None:
    token = await reset_token(client, server, user.email)
    r = await client.post(RESET, json={"token": token, "new_password": "weak"})
    assert r.status_code == 422
    r = await client.post(RESET, json={"token": token, "new_password": NEW_PASSWORD})
    assert r.status_code == 200


async def test_disabled_user_gets_no_mail(
    client: httpx.AsyncClient, server: LiveServer, db: asyncpg.Connection, user: Account
) -> None:
    await db.execute("UPDATE users SET is_active = false WHERE id = $1", user.id)
    assert (await client.post(FORGOT, json={"email": user.email})).status_code == 200
    await asyncio.sleep(0.2)
    assert Mailer(server.settings).outbox() == []


async def test_reset_mails_are_rate_limited_per_address(
    client: httpx.AsyncClient, server: LiveServer, user: Account
) -> None:
    for _ in range(5):
        assert (await client.post(FORGOT, json={"email": user.email})).status_code == 200
    await outbox(server, 3)
    await asyncio.sleep(0.2)
    assert len(Mailer(server.settings).outbox()) == 3


@pytest.mark.parametrize("body", [{}, {"email": "nope"}, {"email": None}, {"email": "a\x00@b.co"}])
async def test_forgot_password_validates_the_email(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    assert (await client.post(FORGOT, json=body)).status_code == 422


@pytest.mark.parametrize(
    "body", [{}, {"token": "x"}, {"new_password": NEW_PASSWORD}, {"token": "", "new_password": "x"}]
)
async def test_reset_password_validates_the_body(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    assert (await client.post(RESET, json=body)).status_code == 422


async def test_a_made_up_token_or_a_taken_email_costs_no_password_hash(
    make_server: object, user: Account
) -> None:
    """With the one hashing thread busy and no wait allowed, a request that needed a hash would
    be answered 503 (tests/api/test_password_lane.py); these are answered at once, without one."""
    server: LiveServer = make_server(  # type: ignore[operator]
        bcrypt_rounds=14, password_hash_threads=1, password_wait_seconds=0
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        busy = asyncio.create_task(
            client.post(
                "/api/v1/auth/register",
                json={"email": "slow@example.com", "password": PASSWORD, "full_name": "Slow"},
            )
        )
        await asyncio.sleep(0.4)  # the hash of that registration runs now (~1 s)
        made_up = {"token": "made-up-token-x", "new_password": NEW_PASSWORD}
        r = await client.post(RESET, json=made_up)
        assert (r.status_code, r.json()) == (400, {"detail": "Invalid or expired reset token"})
        taken = {"email": user.email.upper(), "password": PASSWORD, "full_name": "Again"}
        r = await client.post("/api/v1/auth/register", json=taken)
        assert (r.status_code, r.json()) == (409, {"detail": "Email already registered"})
        assert not busy.done()
        assert (await busy).status_code == 201
