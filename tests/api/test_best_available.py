"""Best available seats and the single-gap rule over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from tests import factories as make
from tests.factories import Show
from tests.support import Account, availability, reserve

BEST = "/api/v1/seat-reservations/reserve-best"


async def hall(
    db: asyncpg.Connection, rows: str = "ABC", per_row: int = 9, **types: list[str]
) -> tuple[Show, dict[str, int]]:
    """A screening in a room of ``rows`` x ``per_row`` seats; ``types``: row -> its seat types.
    Returns it with seat ids by name ("B4")."""
    room_id = await make.room(db, await make.cinema(db, "Grand"), "Big")
    names: dict[str, int] = {}
    for row in rows:
        ids = await make.seats(db, room_id, per_row, row=row, seat_types=types.get(row))
        names |= {f"{row}{n}": seat for n, seat in enumerate(ids, start=1)}
    movie = await make.movie(db, "Alien")
    starts = datetime.now(UTC) + timedelta(days=1)
    screening = await make.screening(db, movie, room_id, starts)
    return Show(screening, room_id, sorted(names.values())), names


async def best(
    client: httpx.AsyncClient, account: Account, show: Show, count: int, **extra: Any
) -> httpx.Response:
    body = {"screening_id": show.id, "count": count, **extra}
    return await client.post(BEST, json=body, headers=account.headers)


def named(names: dict[str, int], response: httpx.Response) -> list[str]:
    by_id = {seat: name for name, seat in names.items()}
    return [by_id[r["seat_id"]] for r in response.json()["reservations"]]


async def test_reserve_best_answers_like_reserve_and_writes_the_history(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show, names = await hall(db)
    r = await best(client, user, show, 3)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["message"] == "Reserved 3 seats for 5 minutes"
    assert body["expires_in_minutes"] == 5
    assert named(names, r) == ["B4", "B5", "B6"]  # row 2.33 of 3, column 5
    assert {x["status"] for x in body["reservations"]} == {"active"}
    mine = (
        await client.get("/api/v1/seat-reservations/my-reservations", headers=user.headers)
    ).json()
    assert sorted(x["id"] for x in mine) == sorted(x["id"] for x in body["reservations"])
    seats = await availability(client, show, user)
    assert {seats[names[n]]["status"] for n in ("B4", "B5", "B6")} == {"reserved"}


async def test_near_type_and_no_block_left(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    wheel = ["wheelchair", "wheelchair", *["standard"] * 2]
    show, names = await hall(db, "AB", 4, A=wheel)
    r = await best(client, user, show, 2, seat_type="wheelchair")
    assert named(names, r) == ["A1", "A2"]
    r = await best(client, other_user, show, 2, near={"row_label": "A", "seat_number": 4})
    assert named(names, r) == ["A3", "A4"]
    r = await best(client, other_user, show, 4)
    assert named(names, r) == ["B1", "B2", "B3", "B4"]
    r = await best(client, user, show, 2)
    assert r.status_code == 409
    assert r.json() == {"detail": "No 2 adjacent seats available"}


async def test_bad_requests_are_fastapi_shaped_422s(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show, _ = await hall(db, "A", 3)
    for extra in ({"count": 0}, {"count": 11}, {"count": 2, "seat_type": "sofa"}):
        r = await client.post(BEST, json={"screening_id": show.id, **extra}, headers=user.headers)
        assert r.status_code == 422, extra
        detail = r.json()["detail"]
        assert isinstance(detail, list) and detail[0]["loc"][0] == "body", detail
    r = await best(client, user, show, 2, near={"row_label": "Q", "seat_number": 1})
    assert r.status_code == 422
    assert r.json() == {"detail": "near.row_label 'Q' is not a row of this room"}
    r = await client.post(BEST, json={"screening_id": show.id, "count": 2})
    assert r.status_code == 401
    r = await best(client, user, Show(999_999, 0, []), 2)
    assert r.status_code == 404


async def test_the_admin_field_switches_the_single_gap_rule(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, user: Account
) -> None:
    show, names = await hall(db, "ABC", 9)
    screening = (await client.get(f"/api/v1/screenings/{show.id}")).json()
    assert screening["no_single_gaps"] is None  # the server's setting: off by default
    assert (await reserve(client, user, show, [names["A2"]])).status_code == 201  # A1 stranded
    body = {k: screening[k] for k in ("movie_id", "room_id", "starts_at", "price")}
    r = await client.put(
        f"/api/v1/screenings/{show.id}",
        json={**body, "no_single_gaps": True},
        headers=admin.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["no_single_gaps"] is True
    r = await reserve(client, user, show, [names["C6"]])  # strands nothing
    assert r.status_code == 201, r.text
    r = await reserve(client, user, show, [names["C8"]])
    assert r.status_code == 409
    assert r.json() == {"detail": "This selection would leave a single empty seat (row C, seat 7)"}
    r = await reserve(client, user, show, [names["C7"], names["C8"]])
    assert r.json()["detail"].endswith("(row C, seat 9)")  # the row's end
    trio = [names["C7"], names["C8"], names["C9"]]
    assert (await reserve(client, user, show, trio)).status_code == 201


async def test_a_screening_created_with_the_rule_loads_it(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, user: Account
) -> None:
    show, names = await hall(db, "A", 4)
    movie = await make.movie(db, "Brazil")
    starts = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    body = {"movie_id": movie, "room_id": show.room_id, "starts_at": starts, "price": 5}
    r = await client.post(
        "/api/v1/screenings/", json={**body, "no_single_gaps": True}, headers=admin.headers
    )
    assert r.status_code == 201, r.text
    assert r.json()["no_single_gaps"] is True
    strict = Show(r.json()["id"], show.room_id, show.seat_ids)
    r = await reserve(client, user, strict, [names["A2"]])
    assert r.status_code == 409
    assert r.json()["detail"].endswith("(row A, seat 1)")
    r = await best(client, user, strict, 2)  # A2-A3 would strand A1 and A4
    assert named(names, r) == ["A1", "A2"]
