from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from db import catalog
from tests import factories as make
from tests.support import Account

SOON = (datetime.now(UTC) + timedelta(days=2)).replace(hour=12, minute=0, second=0, microsecond=0)


# -- builders through the admin API, as a client would ---------------------------------------------


async def new_cinema(client: httpx.AsyncClient, admin: Account, name: str = "Roxy") -> int:
    r = await client.post("/api/v1/cinemas/", json={"name": name}, headers=admin.headers)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def new_room(
    client: httpx.AsyncClient, admin: Account, cinema_id: int, name: str = "Hall 1", rows: int = 2
) -> int:
    r = await client.post(
        f"/api/v1/cinemas/{cinema_id}/rooms/", json={"name": name}, headers=admin.headers
    )
    assert r.status_code == 201, r.text
    room_id = int(r.json()["id"])
    grid = {"rows": ["A", "B", "C", "D"][:rows], "seats_per_row": 3}
    r = await client.post(f"/api/v1/rooms/{room_id}/seats/bulk", json=grid, headers=admin.headers)
    assert r.status_code == 201, r.text
    return room_id


async def new_movie(
    client: httpx.AsyncClient, admin: Account, title: str = "Heat", minutes: int = 100
) -> int:
    body = {"title": title, "duration_minutes": minutes}
    r = await client.post("/api/v1/movies/", json=body, headers=admin.headers)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def new_screening(
    client: httpx.AsyncClient,
    admin: Account,
    movie_id: int,
    room_id: int,
    starts_at: datetime = SOON,
    price: float = 9.5,
) -> dict[str, Any]:
    body = {"movie_id": movie_id, "room_id": room_id, "starts_at": starts_at.isoformat()}
    r = await client.post(
        "/api/v1/screenings/", json={**body, "price": price}, headers=admin.headers
    )
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def screening_world(client: httpx.AsyncClient, admin: Account) -> tuple[int, int, int]:
    cinema_id = await new_cinema(client, admin)
    room_id = await new_room(client, admin, cinema_id)
    movie_id = await new_movie(client, admin)
    return cinema_id, room_id, movie_id


# -- create -------------------------------------------------------------------------------------


async def test_create_defaults_ends_at_to_duration_plus_cleaning(
    client: httpx.AsyncClient, admin: Account
) -> None:
    cinema_id, room_id, movie_id = await screening_world(client, admin)
    s = await new_screening(client, admin, movie_id, room_id, price=12.25)
    assert datetime.fromisoformat(s["starts_at"]) == SOON
    assert datetime.fromisoformat(s["ends_at"]) == SOON + timedelta(minutes=100 + 15)
    assert s["price"] == 12.25
    assert (s["movie_title"], s["room_name"], s["cinema_id"]) == ("Heat", "Hall 1", cinema_id)
    r = await client.get(f"/api/v1/screenings/{s['id']}")
    assert r.status_code == 200
    assert r.json() == s


async def test_create_converts_offsets_to_utc_and_accepts_explicit_end(
    client: httpx.AsyncClient, admin: Account
) -> None:
    _, room_id, movie_id = await screening_world(client, admin)
    body = {
        "movie_id": movie_id,
        "room_id": room_id,
        "starts_at": "2031-03-01T20:00:00+02:00",
        "ends_at": "2031-03-01T23:00:00+02:00",
        "price": 8,
    }
    r = await client.post("/api/v1/screenings/", json=body, headers=admin.headers)
    assert r.status_code == 201, r.text
    assert r.json()["starts_at"] == "2031-03-01T18:00:00Z"
    assert r.json()["ends_at"] == "2031-03-01T21:00:00Z"


async def test_create_refuses_bad_input(client: httpx.AsyncClient, admin: Account) -> None:
    _, room_id, movie_id = await screening_world(client, admin)
    ok = {"movie_id": movie_id, "room_id": room_id, "starts_at": SOON.isoformat(), "price": 9}
    bad = [
        {**ok, "starts_at": "2031-03-01T20:00:00"},  # naive
        {**ok, "ends_at": (SOON - timedelta(hours=1)).isoformat()},
        {**ok, "price": -1},
        {**ok, "movie_id": 0},
        {**ok, "starts_at": "9999-12-31T23:00:00Z"},  # its end would not fit in a datetime
        {**ok, "starts_at": "0001-01-01T00:00:00+01:00"},
        {k: v for k, v in ok.items() if k != "price"},
    ]
    for body in bad:
        r = await client.post("/api/v1/screenings/", json=body, headers=admin.headers)
        assert r.status_code == 422, (body, r.text)
        assert "detail" in r.json()
    r = await client.get("/api/v1/screenings/", params={"upcoming": "false"})
    assert r.json() == []


async def test_unknown_movie_or_room_is_404(client: httpx.AsyncClient, admin: Account) -> None:
    _, room_id, movie_id = await screening_world(client, admin)
    base = {"starts_at": SOON.isoformat(), "price": 9}
    for ids in (
        {"movie_id": movie_id + 999, "room_id": room_id},
        {"movie_id": movie_id, "room_id": room_id + 999},
    ):
        r = await client.post("/api/v1/screenings/", json={**base, **ids}, headers=admin.headers)
        assert r.status_code == 404, r.text


async def test_overlap_in_one_room_is_409_back_to_back_is_fine(
    client: httpx.AsyncClient, admin: Account
) -> None:
    cinema_id, room_id, movie_id = await screening_world(client, admin)
    first = await new_screening(client, admin, movie_id, room_id)
    body = {"movie_id": movie_id, "room_id": room_id, "price": 9}
    during = SOON + timedelta(minutes=60)
    r = await client.post(
        "/api/v1/screenings/", json={**body, "starts_at": during.isoformat()}, headers=admin.headers
    )
    assert r.status_code == 409
    assert r.json()["detail"] == "The room already has a screening at that time"
    await new_screening(client, admin, movie_id, room_id, datetime.fromisoformat(first["ends_at"]))
    other_room = await new_room(client, admin, cinema_id, "Hall 2")
    await new_screening(client, admin, movie_id, other_room, during)


# -- read ---------------------------------------------------------------------------------------


async def test_list_filters_and_pages(client: httpx.AsyncClient, admin: Account) -> None:
    _, room_a, heat = await screening_world(client, admin)
    cinema_b = await new_cinema(client, admin, "Odeon")
    room_b = await new_room(client, admin, cinema_b)
    alien = await new_movie(client, admin, "Alien")
    day2 = SOON + timedelta(days=1)
    s1 = await new_screening(client, admin, heat, room_a)
    s2 = await new_screening(client, admin, alien, room_b)
    s3 = await new_screening(client, admin, heat, room_b, day2)
    past = datetime.now(UTC) - timedelta(days=1)
    s0 = await new_screening(client, admin, alien, room_a, past)

    async def ids(**params: Any) -> list[int]:
        r = await client.get("/api/v1/screenings/", params=params)
        assert r.status_code == 200, r.text
        return [s["id"] for s in r.json()]

    assert await ids() == [s1["id"], s2["id"], s3["id"]]  # by start time, then id
    assert await ids(upcoming="false") == [s0["id"], s1["id"], s2["id"], s3["id"]]
    assert await ids(movie_id=heat) == [s1["id"], s3["id"]]
    assert await ids(cinema_id=cinema_b) == [s2["id"], s3["id"]]
    assert await ids(date=day2.date().isoformat()) == [s3["id"]]
    assert await ids(date=past.date().isoformat(), upcoming="false") == [s0["id"]]
    assert await ids(cinema_id=cinema_b, movie_id=alien) == [s2["id"]]
    assert await ids(skip=1, limit=1) == [s2["id"]]
    assert await ids(date="9999-12-31") == []
    for bad in ({"limit": 201}, {"limit": 0}, {"skip": -1}, {"date": "tomorrow"}):
        r = await client.get("/api/v1/screenings/", params=bad)
        assert r.status_code == 422, bad


async def test_get_unknown_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/screenings/424242")
    assert r.status_code == 404
    assert r.json() == {"detail": "Screening not found"}


async def test_screening_layout_for_the_seat_engine(
    client: httpx.AsyncClient, admin: Account, db: asyncpg.Connection
) -> None:
    _, room_id, movie_id = await screening_world(client, admin)
    s = await new_screening(client, admin, movie_id, room_id)
    layout = await catalog.screening_layout(db, s["id"])
    assert layout is not None
    starts_at, seats = layout
    assert starts_at == SOON
    assert [(x["row_label"], x["seat_number"]) for x in seats] == [
        (row, n) for row in "AB" for n in (1, 2, 3)
    ]
    assert {x["room_id"] for x in seats} == {room_id}
    assert await catalog.screening_layout(db, s["id"] + 1000) is None


# -- update and delete --------------------------------------------------------------------------


async def test_put_replaces_and_checks_overlap(client: httpx.AsyncClient, admin: Account) -> None:
    _, room_id, movie_id = await screening_world(client, admin)
    alien = await new_movie(client, admin, "Alien", minutes=117)
    s1 = await new_screening(client, admin, movie_id, room_id)
    await new_screening(client, admin, movie_id, room_id, SOON + timedelta(hours=5))
    later = SOON + timedelta(hours=2)
    body = {"movie_id": alien, "room_id": room_id, "starts_at": later.isoformat(), "price": 11}
    r = await client.put(f"/api/v1/screenings/{s1['id']}", json=body, headers=admin.headers)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["movie_title"], got["price"]) == ("Alien", 11)
    assert datetime.fromisoformat(got["ends_at"]) == later + timedelta(minutes=117 + 15)
    clash = {**body, "starts_at": (SOON + timedelta(hours=4)).isoformat()}
    r = await client.put(f"/api/v1/screenings/{s1['id']}", json=clash, headers=admin.headers)
    assert r.status_code == 409
    assert (await client.get(f"/api/v1/screenings/{s1['id']}")).json() == got
    r = await client.put("/api/v1/screenings/999999", json=body, headers=admin.headers)
    assert r.status_code == 404


async def test_put_cannot_move_a_sold_screening_to_another_room(
    client: httpx.AsyncClient, admin: Account, user: Account, db: asyncpg.Connection
) -> None:
    cinema_id, room_id, movie_id = await screening_world(client, admin)
    other_room = await new_room(client, admin, cinema_id, "Hall 2")
    s = await new_screening(client, admin, movie_id, room_id)
    await make.ticket(db, user.id, s["id"])
    body = {"movie_id": movie_id, "room_id": other_room, "starts_at": s["starts_at"], "price": 9}
    r = await client.put(f"/api/v1/screenings/{s['id']}", json=body, headers=admin.headers)
    assert r.status_code == 409
    assert (await client.get(f"/api/v1/screenings/{s['id']}")).json()["room_id"] == room_id
    same_room = {**body, "room_id": room_id, "price": 10}
    r = await client.put(f"/api/v1/screenings/{s['id']}", json=same_room, headers=admin.headers)
    assert r.status_code == 200
    assert r.json()["price"] == 10


async def test_delete(
    client: httpx.AsyncClient, admin: Account, user: Account, db: asyncpg.Connection
) -> None:
    _, room_id, movie_id = await screening_world(client, admin)
    sold = await new_screening(client, admin, movie_id, room_id)
    empty = await new_screening(client, admin, movie_id, room_id, SOON + timedelta(hours=3))
    await make.ticket(db, user.id, sold["id"])
    r = await client.delete(f"/api/v1/screenings/{sold['id']}", headers=admin.headers)
    assert r.status_code == 409
    assert (await client.get(f"/api/v1/screenings/{sold['id']}")).status_code == 200
    r = await client.delete(f"/api/v1/screenings/{empty['id']}", headers=admin.headers)
    assert r.status_code == 204
    assert (await client.get(f"/api/v1/screenings/{empty['id']}")).status_code == 404
    r = await client.delete(f"/api/v1/screenings/{empty['id']}", headers=admin.headers)
    assert r.status_code == 404
