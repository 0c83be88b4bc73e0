"""Cast members: admin CRUD, public reads, the detailed movie cast, and search by cast name."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from tests import factories as make
from tests.support import PUBLIC, Account, ids

URL = "/api/v1/casts/"


def member(movie_id: int, name: str, **extra: Any) -> dict[str, Any]:
    return {"movie_id": movie_id, "name": name, **extra}


async def create(client: httpx.AsyncClient, admin: Account, body: dict[str, Any]) -> Any:
    r = await client.post(URL, json=body, headers=admin.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def test_create_read_update_delete(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account
) -> None:
    movie = await make.movie(db, "Heat")
    body = member(
        movie,
        "Al Pacino",
        role="actor",
        character_name="Vincent Hanna",
        billing_order=1,
        photo_url="https://img.example/pacino.jpg",
        bio="Actor.",
    )
    made = await create(client, admin, body)
    assert {k: made[k] for k in body} == body
    assert made["created_at"].endswith("Z")
    r = await client.get(f"{URL}{made['id']}")
    assert r.status_code == 200
    assert r.json() == made
    assert r.headers["cache-control"] == PUBLIC

    r = await client.put(
        f"{URL}{made['id']}", json={"character_name": None, "bio": "Legend."}, headers=admin.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["character_name"] is None
    assert r.json()["bio"] == "Legend."
    assert r.json()["name"] == "Al Pacino"  # unsent fields stay

    r = await client.delete(f"{URL}{made['id']}", headers=admin.headers)
    assert r.status_code == 204
    assert r.content == b""
    assert (await client.get(f"{URL}{made['id']}")).status_code == 404
    r = await client.delete(f"{URL}{made['id']}", headers=admin.headers)
    assert r.status_code == 404
    assert r.json() == {"detail": "Cast member not found"}


async def test_defaults(client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account) -> None:
    movie = await make.movie(db, "Heat")
    made = await create(client, admin, member(movie, "Extra"))
    assert (made["role"], made["billing_order"], made["character_name"]) == ("actor", 0, None)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", URL), ("PUT", f"{URL}1"), ("DELETE", f"{URL}1")],
)
async def test_writes_are_admin_only(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, method: str, path: str
) -> None:
    movie = await make.movie(db, "Heat")
    body = member(movie, "Al Pacino")
    r = await client.request(method, path, json=body)
    assert r.status_code == 401
    assert r.json() == {"detail": "Not authenticated"}
    r = await client.request(method, path, json=body, headers=user.headers)
    assert r.status_code == 403
    assert r.json() == {"detail": "Admin privileges required"}
    assert await db.fetchval("SELECT count(*) FROM cast_members") == 0


async def test_bad_input(client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account) -> None:
    movie = await make.movie(db, "Heat")
    h = admin.headers
    for body in (
        {"name": "No movie"},
        member(movie, ""),
        member(movie, "X", role="stuntman"),
        member(movie, "X", billing_order=-1),
        member(movie, "X", photo_url="javascript:alert(1)"),
        member(movie, "X\x00"),
        member(movie, "x" * 201),
        member(2**63, "X"),
    ):
        r = await client.post(URL, json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
    r = await client.post(URL, json=member(movie + 1000, "X"), headers=h)
    assert r.status_code == 404
    assert r.json() == {"detail": "Movie not found"}
    r = await client.post(URL, content=b"{nope", headers=h)
    assert r.status_code == 422  # malformed JSON, as FastAPI answers it
    made = await create(client, admin, member(movie, "Al Pacino"))
    path = f"{URL}{made['id']}"
    assert (await client.put(path, json={}, headers=h)).status_code == 422
    assert (await client.put(path, json={"name": None}, headers=h)).status_code == 422
    r = await client.put(path, json={"movie_id": movie + 1000}, headers=h)
    assert r.status_code == 404
    r = await client.put(f"{URL}{made['id'] + 1000}", json={"name": "Y"}, headers=h)
    assert r.status_code == 404
    assert r.json() == {"detail": "Cast member not found"}
    assert (await client.get(path)).json() == made  # nothing changed
    assert (await client.get(f"{URL}99999999999999999999")).status_code == 404


async def test_list_filter_and_paginate(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account
) -> None:
    heat, alien = await make.movie(db, "Heat"), await make.movie(db, "Alien")
    de_niro = await create(client, admin, member(heat, "Robert De Niro", billing_order=2))
    pacino = await create(client, admin, member(heat, "Al Pacino", billing_order=1))
    mann = await create(client, admin, member(heat, "Michael Mann", role="director"))
    weaver = await create(client, admin, member(alien, "Sigourney Weaver", billing_order=1))
    r = await client.get(URL)
    assert r.headers["cache-control"] == PUBLIC
    by_movie = [mann["id"], pacino["id"], de_niro["id"]]
    heat_first = heat < alien
    assert ids(r) == ([*by_movie, weaver["id"]] if heat_first else [weaver["id"], *by_movie])
    assert ids(await client.get(URL, params={"movie_id": heat})) == by_movie
    assert ids(await client.get(URL, params={"movie_id": heat, "skip": 1, "limit": 1})) == [
        pacino["id"]
    ]
    assert ids(await client.get(URL, params={"role": "director"})) == [mann["id"]]
    assert (await client.get(URL, params={"movie_id": "x"})).status_code == 422
    assert (await client.get(URL, params={"movie_id": 2**64})).status_code == 422
    r = await client.get(f"{URL}movie/{heat}")
    assert ids(r) == by_movie
    assert r.headers["cache-control"] == PUBLIC
    assert (await client.get(f"{URL}movie/{alien + heat}")).status_code == 404
    empty = await make.movie(db, "Empty")
    assert ids(await client.get(f"{URL}movie/{empty}")) == []


async def test_detailed_movie_cast(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account
) -> None:
    heat = await make.movie(db, "Heat", director="Michael Mann")
    pacino = await create(client, admin, member(heat, "Al Pacino", character_name="Hanna"))
    mann = await create(client, admin, member(heat, "Michael Mann", role="director", bio="Bio"))
    r = await client.get(f"/api/v1/movies/{heat}/cast")
    assert r.status_code == 200
    assert r.headers["cache-control"] == PUBLIC
    assert r.json() == {
        "movie_id": heat,
        "title": "Heat",
        "director": "Michael Mann",
        "cast": [pacino],
        "crew": [mann],
    }
    r = await client.get(f"/api/v1/movies/{heat + 1000}/cast")
    assert r.status_code == 404
    assert r.json() == {"detail": "Movie not found"}


async def test_search_finds_movies_by_cast_name(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account
) -> None:
    heat, other = await make.movie(db, "Heat"), await make.movie(db, "Other")
    made = await create(client, admin, member(heat, "Val Kilmer"))
    search = "/api/v1/movies/search"
    assert ids(await client.get(search, params={"q": "kilmer"})) == [heat]
    r = await client.put(f"{URL}{made['id']}", json={"movie_id": other}, headers=admin.headers)
    assert r.status_code == 200
    assert ids(await client.get(search, params={"q": "kilmer"})) == [other]
    await client.delete(f"{URL}{made['id']}", headers=admin.headers)
    assert ids(await client.get(search, params={"q": "kilmer"})) == []
    # Deleting a movie takes its cast with it.
    await create(client, admin, member(heat, "Tom Sizemore"))
    await db.execute("DELETE FROM movies WHERE id = $1", heat)
    assert await db.fetchval("SELECT count(*) FROM cast_members") == 0
