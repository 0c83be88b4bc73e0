"""Emails in Unicode NFKC: a look-alike spelling is the same account, never a second one."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import httpx

from db.users import get_by_email
from seatlock.accounts import emails
from tests.support import PASSWORD, Account

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
MIGRATION = Path(__file__).parents[2] / "db" / "migrations" / "0008_normalised_emails.sql"
FULL_WIDTH = "\uff41lice@example.com"  # FULLWIDTH LATIN SMALL LETTER A, then "lice"


def register(email: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD, "full_name": "Look-alike"}


async def test_a_full_width_look_alike_is_the_same_account(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert user.email == "alice@example.com"
    r = await client.post(REGISTER, json=register(FULL_WIDTH))
    assert r.status_code == 409, r.text
    assert r.json() == {"detail": "Email already registered"}
    upper = "\uff21LICE@EXAMPLE.COM"  # full width and upper case
    assert (await client.post(REGISTER, json=register(upper))).status_code == 409


async def test_a_look_alike_logs_in_as_the_account(
    client: httpx.AsyncClient, user: Account
) -> None:
    r = await client.post(LOGIN, json={"email": FULL_WIDTH, "password": PASSWORD})
    assert r.status_code == 200, r.text
    me = await client.get("/api/v1/auth/me", headers=bearer(r.json()["access_token"]))
    assert me.json()["id"] == user.id


async def test_new_addresses_are_stored_in_nfkc(client: httpx.AsyncClient) -> None:
    r = await client.post(REGISTER, json=register("\uff22ob@Example.com"))  # full-width B
    assert r.status_code == 201, r.text
    assert r.json()["email"] == "Bob@Example.com"  # look-alike folded, case kept


async def test_nfkc_that_breaks_the_address_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post(REGISTER, json=register("eve\uff20evil@example.com"))  # full-width @
    assert r.status_code == 422
    assert "detail" in r.json()


async def test_the_migration_normalises_existing_rows_unless_they_collide(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    rows = [("\uff44an@example.com", "Dan"), ("\uff41lice@example.com", "Twin")]
    for email, name in rows:  # rows as an older server could have written them
        await db.execute(
            "INSERT INTO users (email, password_hash, full_name) VALUES ($1, 'x', $2)", email, name
        )
    await db.execute(MIGRATION.read_text())
    stored = {r["full_name"]: r["email"] for r in await db.fetch("SELECT * FROM users")}
    assert stored["Dan"] == "dan@example.com"
    assert stored["Twin"] == FULL_WIDTH  # would collide with alice: left for an operator
    found = await get_by_email(db, FULL_WIDTH)
    assert found is not None and found["id"] == user.id


def test_counter_key_folds_case_and_width() -> None:
    assert emails.key(" \uff21lice@Example.COM ") == "alice@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_whitespace_and_control_characters_are_refused_as_the_schema_says(
    client: httpx.AsyncClient,
) -> None:
    """The published pattern and the server's check agree on characters where Python's and
    ECMAScript's \\s differ (\\x1c-\\x1f and \\x85 in Python's only, \\ufeff in ECMAScript's)."""
    schema = (await client.get("/openapi.json")).json()
    published = schema["components"]["schemas"]["RegisterIn"]["properties"]["email"]["pattern"]
    for odd in ("\x1e", "\x85", "\ufeff", "\u00a0", "\u2028", "\x7f"):
        assert re.match(published, f"odd{odd}one@example.com") is None
        r = await client.post(REGISTER, json=register(f"odd{odd}one@example.com"))
        assert r.status_code == 422, (repr(odd), r.text)
    assert (await client.post(REGISTER, json=register("plain.one@example.com"))).status_code == 201
