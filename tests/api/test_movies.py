from __future__ import annotations

import re

import asyncpg
import httpx

from tests import factories as make
from tests.support import Account

FULL = {
    "title": "The Long Night",
    "description": "A lighthouse keeper and a storm that will not end.",
    "duration_minutes": 128,
    "genre": "Drama",
    "language": "en",
    "rating": 7.8,
    "age_rating": "PG-13",
    "release_date": "2026-10-02",
    "director": "Maren Holt",
    "poster_url": "https://img.example/long-night.jpg",
    "trailer_url": "https://video.example/long-night",
}


async def create(client: httpx.AsyncClient, admin: Account, **changes: object) -> httpx.Response:
    return await client.post("/api/v1/movies/", json={**FULL, **changes}, headers=admin.headers)


async def test_create_and_get(client: httpx.AsyncClient, admin: Account) -> None:
    r = await create(client, admin)
    assert r.status_code == 201, r.text
    movie = r.json()
    assert {k: movie[k] for k in FULL} == FULL
    r = await client.get(f"/api/v1/movies/{movie['id']}")
    assert r.status_code == 200
    assert r.json() == movie


async def test_only_title_and_duration_are_required(
    client: httpx.AsyncClient, admin: Account
) -> None:
    body = {"title": "Short", "duration_minutes": 12}
    r = await client.post("/api/v1/movies/", json=body, headers=admin.headers)
    assert r.status_code == 201
    got = r.json()
    assert (got["language"], got["rating"], got["release_date"], got["genre"]) == (
        "en",
        None,
        None,
        "",
    )


async def test_bad_input_is_422_and_stores_nothing(
    client: httpx.AsyncClient, admin: Account
) -> None:
    for changes in (
        {"title": ""},
        {"duration_minutes": 0},
        {"duration_minutes": "long"},
        {"rating": 10.5},
        {"rating": -1},
        {"release_date": "02/10/2026"},
        {"poster_url": "javascript:alert(1)"},
        {"poster_url": "https://x.example/\u0000"},
        {"title": "nul\u0000"},
        {"description": "\u0000"},
    ):
        r = await create(client, admin, **changes)
        assert r.status_code == 422, (changes, r.text)
    r = await client.post("/api/v1/movies/", json={"title": "X"}, headers=admin.headers)
    assert r.status_code == 422
    assert (await client.get("/api/v1/movies/")).json() == []


async def test_list_is_paginated_in_a_stable_order(
    client: httpx.AsyncClient, admin: Account
) -> None:
    ids = [(await create(client, admin, title=t)).json()["id"] for t in ("C", "A", "B")]
    r = await client.get("/api/v1/movies/")
    assert [m["id"] for m in r.json()] == ids
    pages = [
        (await client.get("/api/v1/movies/", params={"skip": s, "limit": 2})).json() for s in (0, 2)
    ]
    assert [m["id"] for page in pages for m in page] == ids
    assert (await client.get("/api/v1/movies/", params={"limit": 201})).status_code == 422


async def test_patch_changes_only_what_is_sent(client: httpx.AsyncClient, admin: Account) -> None:
    movie = (await create(client, admin)).json()
    url = f"/api/v1/movies/{movie['id']}"
    r = await client.patch(url, json={"rating": 8.1, "director": None}, headers=admin.headers)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["rating"], got["director"]) == (8.1, None)
    assert {k: got[k] for k in ("title", "duration_minutes", "release_date")} == {
        k: FULL[k] for k in ("title", "duration_minutes", "release_date")
    }
    assert (await client.get(url)).json() == got
    for bad in ({"title": None}, {"duration_minutes": -5}, {"rating": 11}):
        assert (await client.patch(url, json=bad, headers=admin.headers)).status_code == 422
    assert (await client.get(url)).json() == got
    r = await client.patch("/api/v1/movies/987654", json={"rating": 1}, headers=admin.headers)
    assert r.status_code == 404
    assert r.json() == {"detail": "Movie not found"}


async def test_delete(
    client: httpx.AsyncClient, admin: Account, user: Account, db: asyncpg.Connection
) -> None:
    room_id = await make.room(db, await make.cinema(db), rows="AB")
    kept = (await create(client, admin, title="Sold")).json()
    gone = (await create(client, admin, title="Unsold")).json()
    sold_id = await make.screening(db, kept["id"], room_id)
    await make.ticket(db, user.id, sold_id)
    r = await client.delete(f"/api/v1/movies/{kept['id']}", headers=admin.headers)
    assert r.status_code == 409
    assert r.json() == {"detail": "Movie has sold tickets and cannot be deleted"}
    assert (await client.get(f"/api/v1/movies/{kept['id']}")).status_code == 200
    r = await client.delete(f"/api/v1/movies/{gone['id']}", headers=admin.headers)
    assert r.status_code == 204
    assert (await client.get(f"/api/v1/movies/{gone['id']}")).status_code == 404
    assert (
        await client.delete(f"/api/v1/movies/{gone['id']}", headers=admin.headers)
    ).status_code == 404


async def test_odd_characters_in_a_url_are_refused_as_the_schema_says(
    client: httpx.AsyncClient, admin: Account
) -> None:
    """The published pattern and the server's check agree where Python's and ECMAScript's \\s
    differ (\\x1c-\\x1f and \\x85 in Python's only, \\ufeff in ECMAScript's) and on control
    characters: a trailer URL with \\x1c in it was schema-valid and refused."""
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["MovieIn"]
    published = schema["properties"]["trailer_url"]["anyOf"][0]["pattern"]
    for odd in ("\x1c", "\x1f", "\x85", "\ufeff", "\u00a0", "\u2028", "\x01", "\x7f", " "):
        url = f"https://video.example/a{odd}b"
        assert re.match(published, url) is None, repr(odd)
        r = await create(client, admin, trailer_url=url)
        assert r.status_code == 422, (repr(odd), r.text)
    assert (await create(client, admin, trailer_url="https://v.example/é?x=1")).status_code == 201
