"""Showtimes: lists by movie, cinema, date and window; one showtime; per movie and per cinema."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import httpx

from tests import factories as make
from tests.support import PUBLIC, ids

URL = "/api/v1/showtimes/"
TOMORROW = dt.datetime.combine(
    dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1), dt.time(), dt.UTC
)


async def catalog(db: asyncpg.Connection) -> dict[str, Any]:
    """Two cinemas, two movies; showtimes yesterday, tomorrow at 10 and 20, the day after."""
    rex, odeon = await make.cinema(db, "Grand Rex", "Paris"), await make.cinema(db, "Odeon")
    rex_room, odeon_room = await make.room(db, rex, "Salle 1"), await make.room(db, odeon)
    heat, alien = await make.movie(db, "Heat"), await make.movie(db, "Alien")
    day = dt.timedelta(days=1)
    hour = dt.timedelta(hours=1)
    past = await make.screening(db, heat, rex_room, TOMORROW - 2 * day)
    morning = await make.screening(db, heat, rex_room, TOMORROW + 10 * hour)
    evening = await make.screening(db, alien, odeon_room, TOMORROW + 20 * hour)
    later = await make.screening(db, heat, odeon_room, TOMORROW + day + 12 * hour, "12.00")
    return locals()


async def test_list_defaults_to_upcoming_with_details(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    c = await catalog(db)
    r = await client.get(URL)
    assert ids(r) == [c["morning"], c["evening"], c["later"]]
    assert r.headers["cache-control"] == PUBLIC
    first = r.json()[0]
    assert first["movie"] == {
        "id": c["heat"],
        "title": "Heat",
        "duration_minutes": 120,
        "poster_url": None,
        "age_rating": None,
    }
    assert first["cinema"] == {
        "id": c["rex"],
        "name": "Grand Rex",
        "city": "Paris",
        "address": "1 Grand Rex street",
    }
    assert first["room"] == {"id": c["rex_room"], "name": "Salle 1", "room_type": "standard"}
    assert (first["cinema_id"], first["movie_id"]) == (c["rex"], c["heat"])
    assert first["price"] == 9.5
    assert first["starts_at"] == (TOMORROW + dt.timedelta(hours=10)).isoformat().replace(
        "+00:00", "Z"
    )


async def test_filters(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    c = await catalog(db)
    tomorrow = TOMORROW.date().isoformat()
    assert ids(await client.get(URL, params={"movie_id": c["heat"]})) == [c["morning"], c["later"]]
    assert ids(await client.get(URL, params={"cinema_id": c["odeon"]})) == [
        c["evening"],
        c["later"],
    ]
    assert ids(await client.get(URL, params={"date": tomorrow})) == [c["morning"], c["evening"]]
    both = {"date": tomorrow, "cinema_id": c["odeon"], "movie_id": c["alien"]}
    assert ids(await client.get(URL, params=both)) == [c["evening"]]
    window = {
        "from": (TOMORROW + dt.timedelta(hours=12)).isoformat(),
        "to": (TOMORROW + dt.timedelta(hours=21)).isoformat(),
    }
    assert ids(await client.get(URL, params=window)) == [c["evening"]]
    naive = {"from": "2000-01-01T00:00:00", "to": (TOMORROW + dt.timedelta(hours=11)).isoformat()}
    assert ids(await client.get(URL, params=naive)) == [c["past"], c["morning"]]
    in_day = {"date": tomorrow, "from": (TOMORROW + dt.timedelta(hours=11)).isoformat()}
    assert ids(await client.get(URL, params=in_day)) == [c["evening"]]
    assert ids(await client.get(URL, params={"date": "9999-12-31"})) == []
    assert ids(await client.get(URL, params={"skip": 1, "limit": 1})) == [c["evening"]]


async def test_bad_filters(client: httpx.AsyncClient) -> None:
    later = (TOMORROW + dt.timedelta(hours=1)).isoformat()
    for params in (
        {"date": "2026-02-30"},
        {"date": "tomorrow"},
        {"from": "noon"},
        {"from": "0001-01-01T00:00:00+01:00"},
        {"to": "2026-01-01T00:00:00+25:00"},
        {"from": later, "to": TOMORROW.isoformat()},
        {"movie_id": "x"},
        {"movie_id": 0},
        {"cinema_id": 2**63},
    ):
        r = await client.get(URL, params=params)
        assert r.status_code == 422, (params, r.text)
        assert "detail" in r.json()


async def test_get_one(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    c = await catalog(db)
    r = await client.get(f"{URL}{c['past']}")  # past showtimes can still be read
    assert r.status_code == 200
    assert r.json()["id"] == c["past"]
    assert r.headers["cache-control"] == PUBLIC
    r = await client.get(f"{URL}{c['later'] + 1000}")
    assert r.status_code == 404
    assert r.json() == {"detail": "Showtime not found"}
    assert (await client.get(f"{URL}99999999999999999999")).status_code == 404


async def test_movie_showtimes(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    c = await catalog(db)
    r = await client.get(f"/api/v1/movies/{c['heat']}/showtimes")
    assert ids(r) == [c["morning"], c["later"]]
    assert r.json()[1]["cinema"]["name"] == "Odeon"
    assert r.headers["cache-control"] == PUBLIC
    r = await client.get(f"/api/v1/movies/{c['heat']}/showtimes", params={"limit": 1, "skip": 1})
    assert ids(r) == [c["later"]]
    idle = await make.movie(db, "Idle")
    assert ids(await client.get(f"/api/v1/movies/{idle}/showtimes")) == []
    r = await client.get(f"/api/v1/movies/{idle + 1000}/showtimes")
    assert r.status_code == 404
    assert r.json() == {"detail": "Movie not found"}
    r = await client.get(f"/api/v1/movies/{c['heat']}/showtimes", params={"limit": 500})
    assert r.status_code == 422


async def test_cinema_showtimes(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    c = await catalog(db)
    path = f"/api/v1/cinemas/{c['odeon']}/showtimes"
    r = await client.get(path)
    assert ids(r) == [c["evening"], c["later"]]
    assert r.headers["cache-control"] == PUBLIC
    day_after = (TOMORROW + dt.timedelta(days=1)).date().isoformat()
    assert ids(await client.get(path, params={"date": day_after})) == [c["later"]]
    path = f"/api/v1/cinemas/{c['rex']}/showtimes"
    past_day = (TOMORROW - dt.timedelta(days=2)).date().isoformat()
    assert ids(await client.get(path, params={"date": past_day})) == [c["past"]]
    assert (await client.get(path, params={"date": "2026-1-1x"})).status_code == 422
    r = await client.get(f"/api/v1/cinemas/{c['odeon'] + 1000}/showtimes")
    assert r.status_code == 404
    assert r.json() == {"detail": "Cinema not found"}
