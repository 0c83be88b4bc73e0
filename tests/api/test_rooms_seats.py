from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from tests import factories as make
from tests.support import Account


async def add_room(
    client: httpx.AsyncClient, admin: Account, cinema_id: int, name: str = "Hall 1"
) -> httpx.Response:
    body = {"name": name, "room_type": "imax"}
    return await client.post(
        f"/api/v1/cinemas/{cinema_id}/rooms/", json=body, headers=admin.headers
    )


async def bulk(
    client: httpx.AsyncClient, admin: Account, room_id: int, body: Any
) -> httpx.Response:
    return await client.post(
        f"/api/v1/rooms/{room_id}/seats/bulk", json=body, headers=admin.headers
    )


async def seats_of(client: httpx.AsyncClient, room_id: int) -> list[tuple[str, int, str]]:
    r = await client.get(f"/api/v1/rooms/{room_id}/seats/")
    assert r.status_code == 200, r.text
    return [(s["row_label"], s["seat_number"], s["seat_type"]) for s in r.json()]


async def test_create_list_and_get_rooms(
    client: httpx.AsyncClient, admin: Account, db: asyncpg.Connection
) -> None:
    cinema_id = await make.cinema(db)
    r = await add_room(client, admin, cinema_id)
    assert r.status_code == 201, r.text
    room = r.json()
    assert {k: room[k] for k in ("cinema_id", "name", "room_type", "capacity")} == {
        "cinema_id": cinema_id,
        "name": "Hall 1",
        "room_type": "imax",
        "capacity": 0,
    }
    second = (await add_room(client, admin, cinema_id, "Hall 2")).json()
    await bulk(client, admin, second["id"], {"rows": ["A", "B"], "seats_per_row": 5})
    r = await client.get(f"/api/v1/cinemas/{cinema_id}/rooms/")
    assert r.status_code == 200
    assert [(x["name"], x["capacity"]) for x in r.json()] == [("Hall 1", 0), ("Hall 2", 10)]
    r = await client.get(f"/api/v1/cinemas/{cinema_id}/rooms/", params={"skip": 1, "limit": 1})
    assert [x["name"] for x in r.json()] == ["Hall 2"]
    r = await client.get(f"/api/v1/cinemas/{cinema_id}/rooms/", params={"limit": 201})
    assert r.status_code == 422
    r = await client.get(f"/api/v1/rooms/{second['id']}")
    assert r.status_code == 200
    assert r.json() == {**second, "capacity": 10}


async def test_room_names_are_unique_per_cinema(
    client: httpx.AsyncClient, admin: Account, db: asyncpg.Connection
) -> None:
    first, second = await make.cinema(db, "A"), await make.cinema(db, "B")
    assert (await add_room(client, admin, first)).status_code == 201
    r = await add_room(client, admin, first)
    assert r.status_code == 409
    assert r.json() == {"detail": "A room with this name already exists in this cinema"}
    assert (await add_room(client, admin, second)).status_code == 201


async def test_unknown_cinema_or_room(
    client: httpx.AsyncClient, admin: Account, db: asyncpg.Connection
) -> None:
    assert (await add_room(client, admin, 987654)).status_code == 404
    r = await client.get("/api/v1/cinemas/987654/rooms/")
    assert r.status_code == 404
    assert r.json() == {"detail": "Cinema not found"}
    assert (await client.get("/api/v1/rooms/987654")).json() == {"detail": "Room not found"}
    assert (await client.get("/api/v1/rooms/987654/seats/")).status_code == 404
    r = await bulk(client, admin, 987654, {"rows": ["A"], "seats_per_row": 2})
    assert r.status_code == 404
    cinema_id = await make.cinema(db)
    assert (await client.get(f"/api/v1/cinemas/{cinema_id}/rooms/")).json() == []
    room_id = (await add_room(client, admin, cinema_id)).json()["id"]
    assert await seats_of(client, room_id) == []


async def test_room_needs_a_name(
    client: httpx.AsyncClient, admin: Account, db: asyncpg.Connection
) -> None:
    cinema_id = await make.cinema(db)
    url = f"/api/v1/cinemas/{cinema_id}/rooms/"
    for body in ({}, {"name": ""}, {"name": "X", "room_type": ""}, {"name": "\u0000"}):
        r = await client.post(url, json=body, headers=admin.headers)
        assert r.status_code == 422, body


async def test_grid_and_list_shapes_in_seat_map_order(
    client: httpx.AsyncClient, admin: Account, db: asyncpg.Connection
) -> None:
    room_id = (await add_room(client, admin, await make.cinema(db))).json()["id"]
    r = await bulk(client, admin, room_id, {"rows": ["B", "A"], "seats_per_row": 2})
    assert r.status_code == 201, r.text
    created = r.json()
    assert [(s["row_label"], s["seat_number"]) for s in created] == [
        ("A", 1), ("A", 2), ("B", 1), ("B", 2)
    ]  # fmt: skip
    assert set(created[0]) == {"id", "room_id", "row_label", "seat_number", "seat_type"}
    assert {s["room_id"] for s in created} == {room_id}
    explicit = {
        "seats": [
            {"row_label": "AA", "seat_number": 1, "seat_type": "vip"},
            {"row_label": "B", "seat_number": 10, "seat_type": "wheelchair"},
            {"row_label": "B", "seat_number": 9},
        ]
    }
    r = await bulk(client, admin, room_id, explicit)
    assert r.status_code == 201, r.text
    assert await seats_of(client, room_id) == [
        ("A", 1, "standard"), ("A", 2, "standard"),
        ("B", 1, "standard"), ("B", 2, "standard"),
        ("B", 9, "standard"), ("B", 10, "wheelchair"),
        ("AA", 1, "vip"),
    ]  # fmt: skip
    assert (await client.get(f"/api/v1/rooms/{room_id}")).json()["capacity"] == 7


async def test_grid_seat_type(
    client: httpx.AsyncClient, admin: Account, db: asyncpg.Connection
) -> None:
    room_id = (await add_room(client, admin, await make.cinema(db))).json()["id"]
    r = await bulk(
        client, admin, room_id, {"rows": ["P"], "seats_per_row": 2, "seat_type": "premium"}
    )
    assert r.status_code == 201
    assert await seats_of(client, room_id) == [("P", 1, "premium"), ("P", 2, "premium")]


async def test_duplicates_are_409_and_add_nothing(
    client: httpx.AsyncClient, admin: Account, db: asyncpg.Connection
) -> None:
    room_id = (await add_room(client, admin, await make.cinema(db))).json()["id"]
    await bulk(client, admin, room_id, {"rows": ["A"], "seats_per_row": 3})
    overlapping = {"rows": ["A", "B"], "seats_per_row": 4}
    r = await bulk(client, admin, room_id, overlapping)
    assert r.status_code == 409
    assert "detail" in r.json()
    twice = {"seats": [{"row_label": "C", "seat_number": 1}, {"row_label": "C", "seat_number": 1}]}
    assert (await bulk(client, admin, room_id, twice)).status_code == 409
    assert await seats_of(client, room_id) == [("A", n, "standard") for n in (1, 2, 3)]


async def test_bad_bodies_are_422_and_add_nothing(
    client: httpx.AsyncClient, admin: Account, db: asyncpg.Connection
) -> None:
    room_id = (await add_room(client, admin, await make.cinema(db))).json()["id"]
    many = [{"row_label": f"R{i // 100}", "seat_number": i % 100 + 1} for i in range(2001)]
    seat = {"row_label": "A", "seat_number": 1}
    for body in (
        {},
        {"rows": ["A"]},
        {"seats_per_row": 3},
        {"rows": ["A"], "seats_per_row": 3, "seats": [seat]},
        {"seats": []},
        {"rows": [], "seats_per_row": 3},
        {"rows": [f"R{i}" for i in range(3)], "seats_per_row": 700},  # 2100 seats
        {"seats": many},
        {"seats": [{**seat, "seat_type": "sofa"}]},
        {"seats": [{**seat, "seat_number": 0}]},
        {"seats": [{**seat, "row_label": ""}]},
        {"seats": [{**seat, "row_label": "A B"}]},
        {"rows": ["A"], "seats_per_row": 0},
    ):
        r = await bulk(client, admin, room_id, body)
        assert r.status_code == 422, (str(body)[:80], r.text)
        assert "detail" in r.json()
    assert await seats_of(client, room_id) == []


async def test_two_thousand_seats_in_one_call(
    client: httpx.AsyncClient, admin: Account, db: asyncpg.Connection
) -> None:
    room_id = (await add_room(client, admin, await make.cinema(db))).json()["id"]
    rows = [f"R{i}" for i in range(40)]
    r = await bulk(client, admin, room_id, {"rows": rows, "seats_per_row": 50})
    assert r.status_code == 201
    assert len(r.json()) == 2000
    assert (await client.get(f"/api/v1/rooms/{room_id}")).json()["capacity"] == 2000
