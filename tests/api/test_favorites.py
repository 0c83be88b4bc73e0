"""Favorite cinemas: add (idempotent), remove, list; each user sees only their own."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tests import factories as make
from tests.support import Account, ids

LIST = "/api/v1/cinemas/favorites"


def fav(cinema_id: int) -> str:
    return f"/api/v1/cinemas/{cinema_id}/favorite"


async def test_add_list_remove(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    rex, odeon = await make.cinema(db, "Grand Rex"), await make.cinema(db, "Odeon")
    h = user.headers
    r = await client.post(fav(rex), headers=h)
    assert r.status_code == 200
    assert r.json() == {"message": "Cinema added to favorites"}
    assert (await client.post(fav(rex), headers=h)).status_code == 200  # twice: no error
    assert (await client.post(fav(odeon), headers=h)).status_code == 200
    r = await client.get(LIST, headers=h)
    assert ids(r) == [odeon, rex]  # most recent first
    assert r.json()[0]["name"] == "Odeon"
    assert r.json()[0]["favorited_at"].endswith("Z")
    assert "public" not in r.headers.get("cache-control", "")
    assert ids(await client.get(LIST, params={"skip": 1}, headers=h)) == [rex]
    assert ids(await client.get(LIST, headers=other_user.headers)) == []
    assert await db.fetchval("SELECT count(*) FROM favorite_cinemas") == 2

    r = await client.delete(fav(rex), headers=h)
    assert r.status_code == 204
    assert (await client.delete(fav(rex), headers=h)).status_code == 204  # twice: no error
    assert ids(await client.get(LIST, headers=h)) == [odeon]
    # Another user removing it changes nothing for this one.
    assert (await client.delete(fav(odeon), headers=other_user.headers)).status_code == 204
    assert ids(await client.get(LIST, headers=h)) == [odeon]


async def test_unknown_cinema_is_404(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    missing = await make.cinema(db, "Gone") + 1000
    for method in ("POST", "DELETE"):
        r = await client.request(method, fav(missing), headers=user.headers)
        assert r.status_code == 404
        assert r.json() == {"detail": "Cinema not found"}
        r = await client.request(method, fav(2**63), headers=user.headers)
        assert r.status_code == 404
    assert (
        await client.post("/api/v1/cinemas/abc/favorite", headers=user.headers)
    ).status_code in (
        404,
        405,
    )
    assert await db.fetchval("SELECT count(*) FROM favorite_cinemas") == 0


async def test_deleted_cinema_leaves_the_favorites(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    rex = await make.cinema(db, "Grand Rex")
    await client.post(fav(rex), headers=user.headers)
    await db.execute("DELETE FROM cinemas WHERE id = $1", rex)
    assert ids(await client.get(LIST, headers=user.headers)) == []


@pytest.mark.parametrize(("method", "path"), [("POST", fav(1)), ("DELETE", fav(1)), ("GET", LIST)])
async def test_needs_a_token(client: httpx.AsyncClient, method: str, path: str) -> None:
    r = await client.request(method, path)
    assert r.status_code == 401
    assert r.json() == {"detail": "Not authenticated"}
    bad = {"Authorization": "Bearer not-a-token"}
    assert (await client.request(method, path, headers=bad)).status_code == 401


async def test_list_validates_pagination(client: httpx.AsyncClient, user: Account) -> None:
    for params in ({"limit": 201}, {"skip": -1}):
        r = await client.get(LIST, params=params, headers=user.headers)
        assert r.status_code == 422
