from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from db.demo import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    AUDIENCE,
    DEMO_EMAIL,
    DEMO_PASSWORD,
    seed_demo,
)
from seatlock.accounts.passwords import hash_password
from seatlock.server.cli import prepare, seeds_demo
from seatlock.settings import Settings
from tests.support import LiveServer, login


async def counts(db: asyncpg.Connection) -> dict[str, int]:
    tables = ("cinemas", "rooms", "seats", "movies", "screenings", "users")
    return {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in tables}


async def test_seed_fills_an_empty_database_once(
    server: LiveServer, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    summary = await seed_demo(server.settings, only_if_empty=True)
    assert summary.startswith("demo data: 1 cinema, 3 rooms, 496 seats, 8 movies,")
    seeded = await counts(db)
    assert {k: v for k, v in seeded.items() if k != "screenings"} == {
        "cinemas": 1, "rooms": 3, "seats": 12 * 20 + 10 * 16 + 8 * 12, "movies": 8,
        "users": 2 + len(AUDIENCE),
    }  # fmt: skip
    assert seeded["screenings"] >= 3 * 6 * 3  # three rooms, six full days, three shows a day
    first, last = await db.fetchrow("SELECT min(starts_at), max(starts_at) FROM screenings")
    assert first > datetime.now(UTC)
    assert (last - first).days <= 7
    types = {r["seat_type"] for r in await db.fetch("SELECT DISTINCT seat_type FROM seats")}
    assert {"standard", "vip", "wheelchair"} <= types
    assert len((await client.get("/api/v1/screenings/", params={"limit": 200})).json()) > 20

    assert (await login(client, DEMO_EMAIL, DEMO_PASSWORD))["access_token"]
    tokens = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["role"] == "admin"

    # A living catalog: cast, reviews with likes, the demo user's favorite and searches.
    movie_id = (await client.get("/api/v1/movies/", params={"limit": 1})).json()[0]["id"]
    cast = (await client.get(f"/api/v1/movies/{movie_id}/cast")).json()
    assert len(cast["cast"]) == 3
    assert [c["role"] for c in cast["crew"]] == ["director"]
    summary = (await client.get(f"/api/v1/movies/{movie_id}/reviews/summary")).json()
    assert summary["count"] >= 2
    demo = await login(client, DEMO_EMAIL, DEMO_PASSWORD)
    headers = {"Authorization": f"Bearer {demo['access_token']}"}
    assert len((await client.get("/api/v1/cinemas/favorites", headers=headers)).json()) == 1
    history = await client.get("/api/v1/users/me/search-history", headers=headers)
    assert len(history.json()) == 3
    likes = await db.fetchval("SELECT count(*) FROM review_reactions WHERE reaction = 'like'")
    assert likes > 0

    assert "skipped" in await seed_demo(server.settings, only_if_empty=True)
    assert await counts(db) == seeded


async def test_seeding_again_adds_a_catalog_but_no_accounts(
    base_settings: Settings, db: asyncpg.Connection
) -> None:
    await seed_demo(base_settings, only_if_empty=False)
    await seed_demo(base_settings, only_if_empty=False)
    got = await counts(db)
    assert (got["cinemas"], got["movies"], got["users"]) == (2, 16, 2 + len(AUDIENCE))


async def test_concurrent_seeders_seed_once(
    base_settings: Settings, db: asyncpg.Connection
) -> None:
    results = await asyncio.gather(
        *(seed_demo(base_settings, only_if_empty=True) for _ in range(3))
    )
    assert sum("skipped" in r for r in results) == 2
    assert (await counts(db))["cinemas"] == 1


async def test_no_default_admin_when_one_is_configured(
    base_settings: Settings, db: asyncpg.Connection
) -> None:
    settings = base_settings.replace(admin_email="boss@example.com", admin_password="Boss-pass-1")
    await seed_demo(settings, only_if_empty=True)
    emails = {r["email"] for r in await db.fetch("SELECT email FROM users")}
    assert ADMIN_EMAIL not in emails
    assert DEMO_EMAIL in emails


async def test_seeding_survives_an_all_letters_random_password(
    base_settings: Settings, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("db.demo.secrets.token_urlsafe", lambda n: "onlyletters" * 3)
    await seed_demo(base_settings, only_if_empty=True)
    assert (await counts(db))["users"] >= 1 + len(AUDIENCE)


async def test_a_restart_keeps_the_password_the_configured_admin_chose(
    base_settings: Settings, db: asyncpg.Connection
) -> None:
    # The admin changed the configured password (it leaked, say): a restart must not set the
    # old one from SEATLOCK_ADMIN_PASSWORD again. ``seatlock create-admin`` does that, asked.
    settings = base_settings.replace(admin_email="boss@example.com", admin_password="Boss-pass-1")
    await prepare(settings, seed=False)
    query = "SELECT role, password_hash FROM users WHERE email = 'boss@example.com'"
    assert (await db.fetchrow(query))["role"] == "admin"
    chosen = await hash_password("Chosen-pass-2", 4)
    await db.execute("UPDATE users SET password_hash = $1 WHERE email = 'boss@example.com'", chosen)
    await prepare(settings, seed=False)  # the next start
    assert (await db.fetchrow(query))["password_hash"] == chosen


def test_demo_data_goes_only_into_the_database_seatlock_runs(base_settings: Settings) -> None:
    settings = base_settings.replace(seed_demo=True)
    redis, postgres = settings.redis_url, settings.database_url
    assert seeds_demo(settings.replace(redis_url="", database_url=""))
    assert seeds_demo(settings.replace(redis_url=redis, database_url=""))
    # A PostgreSQL of the operator's, beside an embedded Redis or not, is never seeded.
    assert not seeds_demo(settings.replace(redis_url="", database_url=postgres))
    assert not seeds_demo(settings.replace(redis_url=redis, database_url=postgres))
    assert not seeds_demo(settings.replace(redis_url="", database_url="", seed_demo=False))
