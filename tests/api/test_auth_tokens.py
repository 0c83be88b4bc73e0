"""Access tokens at the door: anything but an HS256 token we signed, unexpired, for a live
session, is a 401 with ``{"detail": ...}``.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest

from seatlock.accounts.tokens import TokenCodec
from tests.conftest import TEST_SECRET
from tests.support import Account

ME = "/api/v1/auth/me"


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def me_with(client: httpx.AsyncClient, header: str) -> httpx.Response:
    return await client.get(ME, headers={"Authorization": header})


async def assert_refused(client: httpx.AsyncClient, token: str) -> None:
    r = await me_with(client, f"Bearer {token}")
    assert r.status_code == 401, r.text
    assert set(r.json()) == {"detail"}
    assert r.headers["WWW-Authenticate"] == "Bearer"


async def test_a_good_token_passes(client: httpx.AsyncClient, user: Account) -> None:
    assert (await me_with(client, f"Bearer {user.token}")).status_code == 200
    assert (await me_with(client, f"bearer  {user.token}")).status_code == 200


async def test_forged_signature(client: httpx.AsyncClient, user: Account) -> None:
    head, body, signature = user.token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    await assert_refused(client, f"{head}.{body}.{flipped}")


async def test_tampered_claims_keep_no_signature(client: httpx.AsyncClient, user: Account) -> None:
    head, _, signature = user.token.split(".")
    claims = claims_of(user.token) | {"role": "admin"}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    await assert_refused(client, f"{head}.{body.decode()}.{signature}")


async def test_alg_none(client: httpx.AsyncClient, user: Account) -> None:
    token = jwt.encode(claims_of(user.token), None, algorithm="none")  # type: ignore[arg-type]
    await assert_refused(client, token)


async def test_other_hmac_algorithm_with_our_secret(
    client: httpx.AsyncClient, user: Account
) -> None:
    await assert_refused(client, jwt.encode(claims_of(user.token), TEST_SECRET, algorithm="HS384"))


async def test_signed_with_another_secret(client: httpx.AsyncClient, user: Account) -> None:
    sid = claims_of(user.token)["sid"]
    other = TokenCodec("another-secret-" + "y" * 40, 15)
    await assert_refused(client, other.issue(user.id, "admin", sid))


async def test_expired(client: httpx.AsyncClient, user: Account) -> None:
    sid = claims_of(user.token)["sid"]
    token = TokenCodec(TEST_SECRET, 15).issue(user.id, "user", sid, now=time.time() - 16 * 60)
    r = await me_with(client, f"Bearer {token}")
    assert r.status_code == 401
    assert r.json() == {"detail": "Token has expired"}


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "sid"])
async def test_required_claims(client: httpx.AsyncClient, user: Account, missing: str) -> None:
    claims = claims_of(user.token)
    del claims[missing]
    await assert_refused(client, jwt.encode(claims, TEST_SECRET, algorithm="HS256"))


@pytest.mark.parametrize("changes", [{"typ": "refresh"}, {"sub": "not-a-number"}, {"sid": "x"}])
async def test_wrong_claims(
    client: httpx.AsyncClient, user: Account, changes: dict[str, str]
) -> None:
    claims = claims_of(user.token) | changes
    await assert_refused(client, jwt.encode(claims, TEST_SECRET, algorithm="HS256"))


@pytest.mark.parametrize(
    "header", ["Bearer garbage", "Bearer a.b.c", "Bearer ....", "Bearer", "Basic dXNlcjpwYXNz", "x"]
)
async def test_garbage_headers(client: httpx.AsyncClient, header: str) -> None:
    r = await me_with(client, header)
    assert r.status_code == 401
    assert set(r.json()) == {"detail"}
