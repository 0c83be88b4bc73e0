"""FastAPI's conventions over real HTTP: 422 bodies listing every problem (pydantic v2's types,
messages and locations), lax coercion where pydantic accepts it, malformed JSON as 422, and the
refresh route's second form (a live bearer access token and no body)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any, Literal

import asyncpg
import httpx
import jwt
import msgspec
import pytest
from redis.asyncio import Redis

from api.rendering import decode_body
from seatlock.errors import RequestInvalid
from tests import factories as make
from tests.conftest import TEST_SECRET
from tests.support import RESERVE, Account, held_in_redis

REFRESH = "/api/v1/auth/refresh-token"
ME = "/api/v1/auth/me"
MINE = "/api/v1/seat-reservations/my-reservations"


def problems(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 422, r.text
    detail: list[dict[str, Any]] = r.json()["detail"]
    assert isinstance(detail, list), detail
    return detail


def kinds(r: httpx.Response) -> list[tuple[str, list[Any]]]:
    return [(p["type"], p["loc"]) for p in problems(r)]


async def post_raw(client: httpx.AsyncClient, user: Account, raw: bytes) -> httpx.Response:
    headers = user.headers | {"content-type": "application/json"}
    return await client.post(RESERVE, content=raw, headers=headers)


async def test_every_bad_field_is_listed_with_its_location(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    show = await make.show(db, 2)
    body = {"screening_id": "abc", "seat_ids": [show.seat_ids[0], "x", 2.5, None]}
    r = await client.post(RESERVE, json=body, headers=user.headers)
    assert problems(r) == [
        {
            "type": "int_parsing",
            "loc": ["body", "screening_id"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "input": "abc",
        },
        {
            "type": "int_parsing",
            "loc": ["body", "seat_ids", 1],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "input": "x",
        },
        {
            "type": "int_from_float",
            "loc": ["body", "seat_ids", 2],
            "msg": "Input should be a valid integer, got a number with a fractional part",
            "input": 2.5,
        },
        {
            "type": "int_type",
            "loc": ["body", "seat_ids", 3],
            "msg": "Input should be a valid integer",
            "input": None,
        },
    ]
    assert await held_in_redis(redis, show) == {}


async def test_missing_fields_bounds_and_lengths(client: httpx.AsyncClient, user: Account) -> None:
    r = await client.post(RESERVE, json={"seat_ids": []}, headers=user.headers)
    assert problems(r) == [
        {
            "type": "missing",
            "loc": ["body", "screening_id"],
            "msg": "Field required",
            "input": {"seat_ids": []},
        },
        {
            "type": "too_short",
            "loc": ["body", "seat_ids"],
            "msg": "List should have at least 1 item after validation, not 0",
            "input": [],
            "ctx": {"field_type": "List", "min_length": 1, "actual_length": 0},
        },
    ]
    r = await client.post(RESERVE, json={"screening_id": 0, "seat_ids": 7}, headers=user.headers)
    assert problems(r) == [
        {
            "type": "greater_than_equal",
            "loc": ["body", "screening_id"],
            "msg": "Input should be greater than or equal to 1",
            "input": 0,
            "ctx": {"ge": 1},
        },
        {
            "type": "list_type",
            "loc": ["body", "seat_ids"],
            "msg": "Input should be a valid list",
            "input": 7,
        },
    ]
    r = await client.post(RESERVE, json=[1], headers=user.headers)
    assert kinds(r) == [("model_attributes_type", ["body"])]


async def test_strings_and_integral_floats_are_taken_as_ints(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    show = await make.show(db, 4)
    a, b, c, d = show.seat_ids
    body = {"screening_id": str(show.id), "seat_ids": [str(a), float(b)]}
    r = await client.post(RESERVE, json=body, headers=user.headers)
    assert r.status_code == 201, r.text
    assert {h["seat_id"] for h in r.json()["reservations"]} == {a, b}
    # Beyond msgspec's own lax rules, pydantic's: blanks around a number, "7.0".
    body = {"screening_id": f" {show.id} ", "seat_ids": [f"{c}.0"]}
    r = await client.post(RESERVE, json=body, headers=user.headers)
    assert r.status_code == 201, r.text
    r = await client.post(
        RESERVE, json={"screening_id": show.id + 0.5, "seat_ids": [d]}, headers=user.headers
    )
    assert kinds(r) == [("int_from_float", ["body", "screening_id"])]
    assert await held_in_redis(redis, show) == dict.fromkeys([a, b, c], user.id)


async def test_a_route_rule_stays_a_text_detail(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 2)
    seat = show.seat_ids[0]
    body = {"screening_id": show.id, "seat_ids": [seat, seat]}
    r = await client.post(RESERVE, json=body, headers=user.headers)
    assert r.status_code == 422
    assert r.json() == {"detail": "seat_ids must not contain duplicates"}


async def test_malformed_and_missing_bodies_are_422(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert problems(await post_raw(client, user, b'{"screening_id" 1}')) == [
        {
            "type": "json_invalid",
            "loc": ["body", 16],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": "expected ':'"},
        }
    ]
    # A type error first, the text broken after it: still the JSON error.
    r = await post_raw(client, user, b'{"screening_id": "x", "seat_ids": [1')
    assert kinds(r) == [("json_invalid", ["body", 36])]
    assert problems(await post_raw(client, user, b"")) == [
        {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}
    ]


async def test_query_problems_are_located_in_the_query(
    client: httpx.AsyncClient, user: Account
) -> None:
    r = await client.get("/api/v1/movies/", params={"skip": "-1", "limit": "abc"})
    assert problems(r) == [
        {
            "type": "greater_than_equal",
            "loc": ["query", "skip"],
            "msg": "Input should be greater than or equal to 0",
            "input": "-1",
            "ctx": {"ge": 0},
        },
        {
            "type": "int_parsing",
            "loc": ["query", "limit"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "input": "abc",
        },
    ]
    r = await client.get(MINE, params={"include_expired": "maybe"}, headers=user.headers)
    assert kinds(r) == [("bool_parsing", ["query", "include_expired"])]
    for word in ("true", "false", "yes", "off", "1"):
        r = await client.get(MINE, params={"include_expired": word}, headers=user.headers)
        assert r.status_code == 200, (word, r.text)
    r = await client.get("/api/v1/movies/", params={"limit": "5.0"})
    assert r.status_code == 200, r.text


async def test_unknown_fields_of_a_strict_body_are_listed(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    movie_id = await make.movie(db)
    body = {"rating": "6", "content": "", "shouting": True}
    r = await client.post(f"/api/v1/movies/{movie_id}/reviews", json=body, headers=user.headers)
    assert sorted(kinds(r)) == [
        ("extra_forbidden", ["body", "shouting"]),
        ("less_than_equal", ["body", "rating"]),
        ("string_too_short", ["body", "content"]),
    ]


async def test_the_openapi_document_says_the_422_shape(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    reserve = doc["paths"][RESERVE]["post"]["responses"]["422"]
    schema = reserve["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/HTTPValidationError"}
    components = doc["components"]["schemas"]
    assert components["ValidationError"]["required"] == ["loc", "msg", "type"]
    assert doc["paths"][REFRESH]["post"]["requestBody"]["required"] is False


async def test_refresh_with_a_bearer_and_no_body(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    r = await client.post(REFRESH, headers=user.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    claims = jwt.decode(body["access_token"], TEST_SECRET, algorithms=["HS256"])
    before = jwt.decode(user.token, TEST_SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["sid"]) == (before["sub"], before["sid"])
    renewed = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await client.get(ME, headers=renewed)).json()["id"] == user.id
    # The session's refresh token is not spent: the body form still rotates it.
    r = await client.post(REFRESH, json={"refresh_token": user.refresh_token})
    assert r.status_code == 200, r.text
    # An empty JSON text is no body either.
    r = await client.post(REFRESH, content=b" ", headers=user.headers)
    assert r.status_code == 200, r.text


async def test_refresh_without_a_live_bearer_is_401(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    assert (await client.post(REFRESH)).status_code == 401
    garbage = {"Authorization": "Bearer not-a-token"}
    assert (await client.post(REFRESH, headers=garbage)).status_code == 401
    claims = jwt.decode(user.token, TEST_SECRET, algorithms=["HS256"])
    claims["exp"] = int(time.time()) - 5
    expired = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    r = await client.post(REFRESH, headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401
    await db.execute("UPDATE users SET is_active = false WHERE id = $1", other_user.id)
    assert (await client.post(REFRESH, headers=other_user.headers)).status_code == 401
    assert (await client.post("/api/v1/auth/logout", headers=user.headers)).status_code == 200
    r = await client.post(REFRESH, headers=user.headers)
    assert r.status_code == 401
    assert r.json() == {"detail": "Session has been revoked"}


class Shape(msgspec.Struct, forbid_unknown_fields=True):
    at: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    flag: bool = False
    ratio: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    name: Annotated[str, msgspec.Meta(pattern="^[a-z]+$", max_length=3)] | None = None
    kind: Literal["a", "b", "c"] = "a"


def test_the_walk_names_what_msgspec_alone_would_not() -> None:
    raw = b'{"at": "2026-01-01T00:00:00", "flag": "maybe", "ratio": "0", "name": "ABCD", "kind": 1}'
    with pytest.raises(RequestInvalid) as refused:
        decode_body(raw, Shape)
    found = [(p["type"], p["loc"][1]) for p in refused.value.errors]
    assert found == [
        ("bool_parsing", "flag"),
        ("greater_than", "ratio"),
        ("string_too_long", "name"),
        ("string_pattern_mismatch", "name"),
        ("literal_error", "kind"),
        # Only once every other field passes does msgspec judge the time zone (no walk rule).
    ]
    assert refused.value.errors[-1]["msg"] == "Input should be 'a', 'b' or 'c'"
    with pytest.raises(RequestInvalid) as refused:
        decode_body(b'{"at": "2026-01-01T00:00:00", "flag": "on"}', Shape)
    assert [(p["type"], p["loc"]) for p in refused.value.errors] == [
        ("timezone_aware", ["body", "at"])
    ]
    assert decode_body(b'{"at": "2026-01-01T00:00:00Z", "flag": " YES ", "ratio": 1}', Shape) == (
        Shape(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), True, 1.0)
    )
