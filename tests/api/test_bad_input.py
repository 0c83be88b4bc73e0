"""Bad input is a 4xx ``{"detail": ...}`` that changes nothing (invariant 10): NUL characters in
any text, JSON nested past any use, signed tokens whose claims are not ours, a body that says it
is not JSON."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import jwt
import orjson
import pytest
from redis.asyncio import Redis

from api.rendering import MAX_BODY_BYTES, MAX_DEPTH, nested_deeper
from seatlock import keys
from tests import factories as make
from tests.conftest import TEST_SECRET
from tests.support import FROM_HOLD, RESERVE, Account, held_in_redis, reserve

BOOK = "/api/v1/tickets/book"
ME = "/api/v1/auth/me"
LOGIN = "/api/v1/auth/login"
REGISTER = "/api/v1/auth/register"
NUL = "\x00"


async def seat_state(redis: Redis, screening_id: int) -> tuple[Any, ...]:
    """What a hold, a claim or a sale would change: the version and every deadline."""
    return (
        await redis.get(keys.screening_version(screening_id)),
        await redis.zrange(keys.screening_deadlines(screening_id), 0, -1, withscores=True),
        await redis.hgetall(keys.screening_holds(screening_id)),
    )


def assert_nul_refused(r: httpx.Response, *loc: str | int) -> None:
    """A 422 in FastAPI's shape naming the text, and never carrying the NUL itself."""
    assert r.status_code == 422, r.text
    [found] = r.json()["detail"]
    assert (found["type"], found["loc"]) == ("value_error", list(loc))
    assert found["msg"] == "Value error, text must not contain NUL characters"
    assert "\\u0000" not in r.text


async def test_nul_in_payment_id_pins_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    show = await make.show(db, 4)
    seats = show.seat_ids[:2]
    assert (await reserve(client, user, show, seats)).status_code == 201
    before = await seat_state(redis, show.id)
    for path in (FROM_HOLD, BOOK):
        body = {"screening_id": show.id, "seat_ids": seats, "payment_id": f"pay{NUL}1"}
        r = await client.post(path, json=body, headers=user.headers)
        assert_nul_refused(r, "body", "payment_id")
    assert await seat_state(redis, show.id) == before
    assert await held_in_redis(redis, show) == dict.fromkeys(seats, user.id)
    assert await db.fetchval("SELECT count(*) FROM tickets") == 0
    # The same hold books at once with a proper payment id: nothing was pinned.
    body = {"screening_id": show.id, "seat_ids": seats, "payment_id": "pay_1"}
    assert (await client.post(FROM_HOLD, json=body, headers=user.headers)).status_code == 201


async def test_nul_is_refused_in_every_kind_of_text(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    register = {"email": "nul@example.com", "password": "Sup3r-secret!", "full_name": f"A{NUL}"}
    assert_nul_refused(
        await client.post("/api/v1/auth/register", json=register), "body", "full_name"
    )
    login = {"email": f"{user.email}{NUL}", "password": user.password}
    assert_nul_refused(await client.post("/api/v1/auth/login", json=login), "body", "email")
    form = {"username": user.email, "password": f"{user.password}{NUL}"}
    assert_nul_refused(await client.post("/api/v1/auth/login", data=form), "body", "password")
    prefs = {"genres": ["drama", f"no{NUL}ir"]}
    r = await client.put("/api/v1/users/me/preferences", json=prefs, headers=user.headers)
    assert_nul_refused(r, "body", "genres", 1)
    r = await client.put("/api/v1/users/me/preferences", json={f"k{NUL}": 1}, headers=user.headers)
    assert_nul_refused(r, "body", "k\ufffd")
    r = await client.get("/api/v1/movies/search", params={"q": f"he{NUL}at"})
    assert_nul_refused(r, "query", "q")
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_an_escaped_backslash_before_u0000_is_not_a_nul(
    client: httpx.AsyncClient, user: Account
) -> None:
    r = await client.put(
        "/api/v1/users/me/preferences",
        content=b'{"genres": ["a\\\\u0000"]}',
        headers=user.headers | {"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["preferences"] == {"genres": ["a\\u0000"]}


@pytest.mark.parametrize("levels", [50_000, 2 * MAX_DEPTH + 1])
@pytest.mark.parametrize("open_close", [("[", "]"), ('{"a":', "}")])
async def test_deeply_nested_json_is_422(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    user: Account,
    levels: int,
    open_close: tuple[str, str],
) -> None:
    show = await make.show(db, 2)
    opening, closing = open_close
    nested = opening * levels + "1" + closing * levels
    bodies = [
        (RESERVE, f'{{"screening_id": {show.id}, "seat_ids": {nested}}}'),
        ("/api/v1/users/me/preferences", f'{{"genres": {nested}}}'),
        ("/api/v1/auth/register", nested),
    ]
    for path, body in bodies:
        method = "PUT" if path.endswith("preferences") else "POST"
        r = await client.request(
            method,
            path,
            content=body.encode(),
            headers=user.headers | {"content-type": "application/json"},
        )
        assert r.status_code == 422, (path, r.status_code, r.text[:200])
        assert r.json() == {
            "detail": [
                {
                    "type": "json_invalid",
                    "loc": ["body"],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": "JSON body is nested too deeply"},
                }
            ]
        }
    assert await held_in_redis(redis, show) == {}


def test_the_nesting_check_reads_json_not_brackets() -> None:
    assert not nested_deeper(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, MAX_DEPTH)
    assert nested_deeper(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), MAX_DEPTH)
    text = b'{"a": "' + b"[" * 100 + b'", "b\\"[[": [1, {"c": []}]}'
    assert not nested_deeper(text, 2)
    # An unterminated string runs to the end (one linear scan); the decoder refuses the text.
    assert not nested_deeper(b'"unterminated \\"' + b"[" * 40, MAX_DEPTH)


@pytest.mark.parametrize(
    "changes",
    [
        {"sub": str(2**70)},
        {"sub": 2**70},
        {"sub": "-1"},
        {"sub": -1},
        {"sub": 1.5},
        {"sub": True},
        {"sub": "\uff11\uff12"},  # full-width digits: isdigit() says yes, int() reads 12
        {"sid": f"a{NUL}b"},
        {"sid": 12},
        {"sid": "s" * 65},
    ],
)
async def test_signed_claims_out_of_range_are_401(
    client: httpx.AsyncClient, user: Account, changes: dict[str, Any]
) -> None:
    claims = jwt.decode(user.token, options={"verify_signature": False}) | changes
    token = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    for r in (
        await client.get(ME, headers=headers),
        await client.get("/api/v1/tickets/my-tickets", headers=headers),
        await client.post(RESERVE, json={"screening_id": 1, "seat_ids": [1]}, headers=headers),
    ):
        assert r.status_code == 401, (changes, r.status_code, r.text)
        assert set(r.json()) == {"detail"}


async def test_a_body_that_says_it_is_not_json_is_415_and_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    """A page on another site may POST text/plain without a CORS preflight: such a body is
    refused, never read as JSON anyway."""
    show = await make.show(db, 4)
    hold = orjson.dumps({"screening_id": show.id, "seat_ids": show.seat_ids[:1]})
    for kind in ("text/plain", "text/plain; charset=utf-8", "application/xml", "multipart/mixed"):
        headers = {**user.headers, "Content-Type": kind}
        r = await client.post(RESERVE, content=hold, headers=headers)
        assert (r.status_code, r.json()) == (
            415,
            {"detail": "Content-Type must be application/json"},
        )
        signup = {"email": "plain@example.com", "password": "Passw0rd-xyz", "full_name": "P"}
        r = await client.post(
            REGISTER, content=orjson.dumps(signup), headers={"Content-Type": kind}
        )
        assert r.status_code == 415, r.text
        if kind.startswith("multipart/"):
            continue  # the login's form (OAuth2's password flow): read as one
        login = {"email": user.email, "password": user.password}
        r = await client.post(LOGIN, content=orjson.dumps(login), headers={"Content-Type": kind})
        assert r.json() == {
            "detail": "Content-Type must be application/json or application/x-www-form-urlencoded"
        }
    assert await held_in_redis(redis, show) == {}
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = 'plain@example.com'") == 0
    # JSON, with parameters or as a +json type, and a body with no Content-Type (as FastAPI
    # reads it) are read as before.
    for n, kind in enumerate(("application/json; charset=utf-8", "application/vnd.x+json", None)):
        body = {"screening_id": show.id, "seat_ids": show.seat_ids[n : n + 1]}
        headers = dict(user.headers) | ({"Content-Type": kind} if kind else {})
        request = client.build_request("POST", RESERVE, content=orjson.dumps(body), headers=headers)
        assert "content-type" not in request.headers or kind is not None
        assert (await client.send(request)).status_code == 201


@pytest.mark.parametrize("blank", ["   ", "\t", "\u3000"])
async def test_a_name_of_blanks_only_is_422_and_creates_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, blank: str
) -> None:
    cinema = await make.cinema(db)
    for path, body in [
        ("/api/v1/cinemas/", {"name": blank}),
        ("/api/v1/movies/", {"title": blank, "duration_minutes": 90}),
        ("/api/v1/casts/", {"name": blank, "movie_id": await make.movie(db)}),
        (f"/api/v1/cinemas/{cinema}/rooms/", {"name": blank}),
    ]:
        r = await client.post(path, json=body, headers=admin.headers)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"][0]["type"] == "string_pattern_mismatch", path
    counts = await db.fetchrow(
        "SELECT (SELECT count(*) FROM cinemas) AS c, (SELECT count(*) FROM rooms) AS r"
    )
    assert (counts["c"], counts["r"]) == (1, 0)


async def test_a_form_body_is_bounded_as_a_json_one(
    client: httpx.AsyncClient, user: Account
) -> None:
    """413 past MAX_BODY_BYTES: Starlette's form parser alone read a 41 MB login form."""
    big = "x" * (MAX_BODY_BYTES + 1)
    r = await client.post(LOGIN, data={"username": user.email, "password": big})
    assert (r.status_code, r.json()) == (413, {"detail": "Request body is too large"})
    r = await client.post(LOGIN, files={"username": (None, user.email), "password": (None, big)})
    assert r.status_code == 413, r.text
    r = await client.post(LOGIN, data={"username": user.email, "password": user.password})
    assert r.status_code == 200, r.text  # a form of a sensible size is read as before
