"""Browsers on another origin may call every route (SEATLOCK_CORS_ORIGINS, ``*`` by default):
preflights are answered, and answers, refusals included, carry the CORS headers."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from tests import factories as make
from tests.support import RESERVE, Account, LiveServer, reserve

FRONTEND = "http://localhost:3000"


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_a_preflight_on_reserve_is_answered_for_any_origin(
    client: httpx.AsyncClient,
) -> None:
    r = await client.options(RESERVE, headers=preflight(FRONTEND))
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = r.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed


async def test_answers_and_refusals_carry_the_cors_headers(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    show = await make.show(db, 1)
    origin = {"Origin": FRONTEND}
    r = await client.get("/api/v1/movies/", headers=origin)
    assert (r.status_code, r.headers["access-control-allow-origin"]) == (200, "*")
    held = await client.post(
        RESERVE,
        json={"screening_id": show.id, "seat_ids": show.seat_ids},
        headers={**user.headers, **origin},
    )
    assert (held.status_code, held.headers["access-control-allow-origin"]) == (201, "*")
    taken = await client.post(
        RESERVE,
        json={"screening_id": show.id, "seat_ids": show.seat_ids},
        headers={**other_user.headers, **origin},
    )
    assert (taken.status_code, taken.headers["access-control-allow-origin"]) == (409, "*")
    r = await client.get(f"/api/v1/screenings/{show.id}/available-seats", headers=origin)
    assert r.headers["access-control-allow-origin"] == "*"


async def test_only_the_configured_origins_are_allowed(
    db: asyncpg.Connection, make_server: Any, user: Account
) -> None:
    live: LiveServer = make_server(cors_origins=f"https://app.example, {FRONTEND}")
    show = await make.show(db, 1)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as c:
        r = await c.options(RESERVE, headers=preflight(FRONTEND))
        assert (r.status_code, r.headers["access-control-allow-origin"]) == (200, FRONTEND)
        r = await c.options(RESERVE, headers=preflight("https://evil.example"))
        assert (r.status_code, r.json()) == (400, {"detail": "Disallowed CORS origin"})
        assert r.headers["content-type"] == "application/json"
        assert "access-control-allow-origin" not in r.headers
        r = await reserve(c, user, show, show.seat_ids)  # no Origin: not a browser, unaffected
        assert r.status_code == 201
        assert "access-control-allow-origin" not in r.headers
