"""Register, login, me, and the admin created by ``seatlock create-admin``."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from db.users import ensure_admin
from tests.support import PASSWORD, Account, LiveServer, login

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"


def new_user(**changes: Any) -> dict[str, Any]:
    return {"email": "carol@example.com", "password": PASSWORD, "full_name": "Carol"} | changes


async def test_register_returns_the_user(client: httpx.AsyncClient) -> None:
    r = await client.post(REGISTER, json=new_user(email="  Carol@Example.com "))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["email"] == "Carol@Example.com"  # trimmed, case kept
    assert body["full_name"] == "Carol"
    assert body["role"] == "user"
    assert body["is_active"] is True
    assert body["created_at"].endswith(("Z", "+00:00"))
    assert "password" not in r.text and "$2b$" not in r.text


async def test_duplicate_email_is_409_whatever_the_case(client: httpx.AsyncClient) -> None:
    assert (await client.post(REGISTER, json=new_user())).status_code == 201
    r = await client.post(REGISTER, json=new_user(email=" CAROL@example.COM"))
    assert r.status_code == 409
    assert r.json() == {"detail": "Email already registered"}


@pytest.mark.parametrize("invisible", ["\u200b", "\u200d", "\u202e", "\u2060", "\xad"])
async def test_an_email_with_a_character_that_shows_nothing_is_refused(
    client: httpx.AsyncClient, invisible: str
) -> None:
    """It would make a second account that looks like another's."""
    assert (await client.post(REGISTER, json=new_user())).status_code == 201
    for email in (f"carol@example.com{invisible}", f"ca{invisible}rol@example.com"):
        r = await client.post(REGISTER, json=new_user(email=email))
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "email"]
    r = await client.post(REGISTER, json=new_user(email="josé@example.com"))
    assert r.status_code == 201, r.text  # letters beyond ASCII are not refused


@pytest.mark.parametrize(
    "changes",
    [
        {"password": "short1!"},
        {"password": "onlyletters"},
        {"password": "1234567890"},
        {"password": "a1" + "x" * 71},  # 73 bytes: past what bcrypt hashes
        {"password": "é1" * 25},  # 50 characters, 75 bytes
        {"password": "abc\x00def123"},
        {"email": "not-an-email"},
        {"email": "a@b"},
        {"email": "x" * 250 + "@example.com"},
        {"email": "nul\x00@example.com"},
        {"full_name": ""},
        {"full_name": "   "},
        {"full_name": "Nul\x00Name"},
        {"email": 42},
        {"password": None},
        {"full_name": ["Carol"]},
    ],
)
async def test_bad_registrations_are_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, changes: dict[str, Any]
) -> None:
    r = await client.post(REGISTER, json=new_user(**changes))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    if isinstance(detail, list):  # the body's shape: FastAPI's list, naming the field
        assert [p["loc"] for p in detail] == [["body", *changes]]
    else:  # a rule beyond the shape (passwords.py check_strength, a blank name): a text
        assert isinstance(detail, str) and detail
    assert await db.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize("missing", ["email", "password", "full_name"])
async def test_missing_field_is_422(client: httpx.AsyncClient, missing: str) -> None:
    body = new_user()
    del body[missing]
    r = await client.post(REGISTER, json=body)
    assert r.status_code == 422
    [problem] = r.json()["detail"]
    assert (problem["type"], problem["loc"], problem["msg"]) == (
        "missing",
        ["body", missing],
        "Field required",
    )


@pytest.mark.parametrize("raw", [b"", b"[]", b'"x"', b"{not json", b'{"email": "\\ud800"}'])
async def test_malformed_bodies_are_4xx(client: httpx.AsyncClient, raw: bytes) -> None:
    r = await client.post(REGISTER, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text  # malformed JSON too, as FastAPI
    assert "detail" in r.json()


async def test_password_of_exactly_72_bytes_works(client: httpx.AsyncClient) -> None:
    password = "a1" + "x" * 70
    assert (await client.post(REGISTER, json=new_user(password=password))).status_code == 201
    assert (await login(client, "carol@example.com", password))["access_token"]


async def test_login_json_returns_both_tokens(client: httpx.AsyncClient, user: Account) -> None:
    r = await client.post(LOGIN, json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    assert len(body["refresh_token"]) >= 40


async def test_login_form_uses_username(client: httpx.AsyncClient, user: Account) -> None:
    r = await client.post(LOGIN, data={"username": "ALICE@example.com ", "password": PASSWORD})
    assert r.status_code == 200, r.text
    me = await client.get(ME, headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert me.json()["id"] == user.id


@pytest.mark.parametrize(
    "body",
    [
        {"email": "alice@example.com", "password": "Wrong-pass1"},
        {"email": "nobody@example.com", "password": PASSWORD},
        {"email": "alice@example.com", "password": PASSWORD + "x" * 80},
    ],
)
async def test_wrong_credentials_are_401(
    client: httpx.AsyncClient, user: Account, body: dict[str, str]
) -> None:
    r = await client.post(LOGIN, json=body)
    assert r.status_code == 401
    assert r.json() == {"detail": "Incorrect email or password"}


@pytest.mark.parametrize(
    "body", [{"password": PASSWORD}, {"email": "alice@example.com"}, {"email": 1, "password": "x"}]
)
async def test_incomplete_login_is_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert (await client.post(LOGIN, json=body)).status_code == 422


async def test_disabled_and_deleted_users_cannot_log_in(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    await db.execute("UPDATE users SET is_active = false WHERE id = $1", user.id)
    await db.execute("UPDATE users SET deleted_at = now() WHERE id = $1", other_user.id)
    for account in (user, other_user):
        r = await client.post(LOGIN, json={"email": account.email, "password": PASSWORD})
        assert r.status_code == 401


async def test_me_returns_the_caller(client: httpx.AsyncClient, user: Account) -> None:
    r = await client.get(ME, headers=user.headers)
    assert r.status_code == 200
    assert r.json()["id"] == user.id
    assert r.json()["email"] == user.email


async def test_openapi_documents_the_auth_shapes(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    for path, method in [
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/auth/change-password", "put"),
        ("/api/v1/auth/refresh-token", "post"),
        ("/api/v1/auth/forgot-password", "post"),
        ("/api/v1/auth/reset-password", "post"),
    ]:
        assert method in paths[path], path
    schemas = doc["components"]["schemas"]
    assert set(schemas["TokenOut"]["required"]) >= {"access_token", "refresh_token"}
    assert "refresh_token" in schemas["RefreshIn"]["properties"]
    assert "new_password" in schemas["ResetPasswordIn"]["properties"]


async def test_ensure_admin_creates_an_admin_who_can_log_in(
    client: httpx.AsyncClient, server: LiveServer, db: asyncpg.Connection
) -> None:
    user_id = await ensure_admin(db, "root@example.com", "Adm1n-password", rounds=4)
    tokens = await login(client, "ROOT@example.com", "Adm1n-password")
    r = await client.get(ME, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.json()["id"] == user_id
    assert r.json()["role"] == "admin"


async def test_ensure_admin_promotes_an_existing_account(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    assert await ensure_admin(db, user.email, "N3w-admin-pass", rounds=4) == user.id
    tokens = await login(client, user.email, "N3w-admin-pass")
    r = await client.get(ME, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.json()["role"] == "admin"
