from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests import factories as make
from tests.support import Account

FULL = {
    "name": "Roxy",
    "address": "1 Main Street",
    "city": "Springfield",
    "phone": "+1 555 0100",
    "email": "hello@roxy.example",
    "description": "Since 1931.",
    "amenities": ["parking", "imax"],
}


async def test_create_and_get(client: httpx.AsyncClient, admin: Account) -> None:
    r = await client.post("/api/v1/cinemas/", json=FULL, headers=admin.headers)
    assert r.status_code == 201, r.text
    cinema = r.json()
    assert {k: cinema[k] for k in FULL} == FULL
    assert cinema["created_at"].endswith("Z")
    r = await client.get(f"/api/v1/cinemas/{cinema['id']}")
    assert r.status_code == 200
    assert r.json() == cinema


async def test_defaults_for_optional_fields(client: httpx.AsyncClient, admin: Account) -> None:
    r = await client.post("/api/v1/cinemas/", json={"name": "Tiny"}, headers=admin.headers)
    assert r.status_code == 201
    got = r.json()
    assert (got["address"], got["city"], got["phone"], got["amenities"]) == ("", "", None, [])


async def test_bad_input_is_422_and_stores_nothing(
    client: httpx.AsyncClient, admin: Account
) -> None:
    for body in (
        {},
        {"name": ""},
        {"name": "X", "email": "not-an-email"},
        {"name": "X", "amenities": "parking"},
        {"name": "X", "amenities": [""]},
        {"name": "nul\u0000"},  # PostgreSQL text cannot hold NUL: 422, not 500
        {"name": "X", "city": "\u0000"},
        {"name": "X", "amenities": ["a\u0000"]},
        {"name": "X", "email": "a\u0000@b.example"},
    ):
        r = await client.post("/api/v1/cinemas/", json=body, headers=admin.headers)
        assert r.status_code == 422, (body, r.text)
    r = await client.post(
        "/api/v1/cinemas/",
        content=b"{nope",
        headers={**admin.headers, "content-type": "application/json"},
    )
    assert r.status_code == 422  # malformed JSON: FastAPI's json_invalid
    assert [p["type"] for p in r.json()["detail"]] == ["json_invalid"]
    assert (await client.get("/api/v1/cinemas/")).json() == []


async def test_list_is_paginated_in_creation_order(
    client: httpx.AsyncClient, admin: Account
) -> None:
    for name in ("A", "B", "C"):
        await client.post("/api/v1/cinemas/", json={"name": name}, headers=admin.headers)
    names = [c["name"] for c in (await client.get("/api/v1/cinemas/")).json()]
    assert names == ["A", "B", "C"]
    r = await client.get("/api/v1/cinemas/", params={"skip": 1, "limit": 1})
    assert [c["name"] for c in r.json()] == ["B"]
    r = await client.get("/api/v1/cinemas", params={"limit": 200})
    assert r.status_code == 200
    for params in ({"limit": 201}, {"limit": 0}, {"skip": -1}, {"skip": "x"}):
        r = await client.get("/api/v1/cinemas/", params=params)
        assert r.status_code == 422, params
        assert "detail" in r.json()


async def test_patch_changes_only_what_is_sent(client: httpx.AsyncClient, admin: Account) -> None:
    cinema = (await client.post("/api/v1/cinemas/", json=FULL, headers=admin.headers)).json()
    url = f"/api/v1/cinemas/{cinema['id']}"
    await asyncio.sleep(0.01)
    r = await client.patch(url, json={"city": "Shelbyville", "phone": None}, headers=admin.headers)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["city"] == "Shelbyville"
    assert got["phone"] is None
    assert {k: got[k] for k in ("name", "address", "email", "amenities")} == {
        k: FULL[k] for k in ("name", "address", "email", "amenities")
    }
    assert got["updated_at"] > cinema["updated_at"]
    assert (await client.get(url)).json() == got
    assert (await client.patch(url, json={}, headers=admin.headers)).json() == got
    r = await client.patch(url, json={"name": None}, headers=admin.headers)
    assert r.status_code == 422
    r = await client.patch("/api/v1/cinemas/987654", json={"city": "X"}, headers=admin.headers)
    assert r.status_code == 404
    assert r.json() == {"detail": "Cinema not found"}


async def test_unknown_cinema_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/cinemas/987654")
    assert r.status_code == 404
    assert r.json() == {"detail": "Cinema not found"}
    assert (await client.get(f"/api/v1/cinemas/{2**63}")).status_code == 404


async def test_delete_cascades_to_rooms_and_screenings(
    client: httpx.AsyncClient, admin: Account, db: asyncpg.Connection
) -> None:
    cinema = (await client.post("/api/v1/cinemas/", json=FULL, headers=admin.headers)).json()
    room_id = await make.room(db, cinema["id"], rows="AB")
    screening_id = await make.screening(db, await make.movie(db), room_id)
    r = await client.delete(f"/api/v1/cinemas/{cinema['id']}", headers=admin.headers)
    assert r.status_code == 204
    assert r.content == b""
    assert (await client.get(f"/api/v1/cinemas/{cinema['id']}")).status_code == 404
    assert (await client.get(f"/api/v1/rooms/{room_id}")).status_code == 404
    assert (await client.get(f"/api/v1/screenings/{screening_id}")).status_code == 404
    r = await client.delete(f"/api/v1/cinemas/{cinema['id']}", headers=admin.headers)
    assert r.status_code == 404


async def test_delete_is_refused_once_tickets_were_sold(
    client: httpx.AsyncClient, admin: Account, user: Account, db: asyncpg.Connection
) -> None:
    cinema = (await client.post("/api/v1/cinemas/", json=FULL, headers=admin.headers)).json()
    room_id = await make.room(db, cinema["id"], rows="AB")
    screening_id = await make.screening(db, await make.movie(db), room_id)
    await make.ticket(db, user.id, screening_id)
    r = await client.delete(f"/api/v1/cinemas/{cinema['id']}", headers=admin.headers)
    assert r.status_code == 409
    assert r.json() == {"detail": "Cinema has sold tickets and cannot be deleted"}
    assert (await client.get(f"/api/v1/rooms/{room_id}")).json()["capacity"] == 6
    assert (await client.get(f"/api/v1/screenings/{screening_id}")).status_code == 200
