"""Every admin route of the catalog: 401 without a token, 403 for a signed-in non-admin.

Access is checked before the body or the ids are looked at, so the ids here need not exist and
nothing may change.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support import Account

ADMIN_ROUTES = [
    ("POST", "/api/v1/cinemas/", {"name": "Roxy"}),
    ("PATCH", "/api/v1/cinemas/1", {"name": "Roxy"}),
    ("DELETE", "/api/v1/cinemas/1", None),
    ("POST", "/api/v1/cinemas/1/rooms/", {"name": "Hall 1"}),
    ("POST", "/api/v1/rooms/1/seats/bulk", {"rows": ["A"], "seats_per_row": 2}),
    ("POST", "/api/v1/movies/", {"title": "Heat", "duration_minutes": 100}),
    ("PATCH", "/api/v1/movies/1", {"title": "Heat"}),
    ("DELETE", "/api/v1/movies/1", None),
    ("POST", "/api/v1/screenings/", {"movie_id": 1, "room_id": 1}),
    ("PUT", "/api/v1/screenings/1", {"movie_id": 1, "room_id": 1}),
    ("DELETE", "/api/v1/screenings/1", None),
]
PUBLIC_ROUTES = [
    "/api/v1/cinemas/",
    "/api/v1/cinemas/1",
    "/api/v1/cinemas/1/rooms/",
    "/api/v1/rooms/1",
    "/api/v1/rooms/1/seats/",
    "/api/v1/movies/",
    "/api/v1/movies/1",
    "/api/v1/screenings/",
    "/api/v1/screenings/1",
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_admin_routes_refuse_anonymous_and_users(
    client: httpx.AsyncClient, user: Account, method: str, path: str, body: object
) -> None:
    r = await client.request(method, path, json=body)
    assert r.status_code == 401, r.text
    assert r.json() == {"detail": "Not authenticated"}
    assert r.headers["www-authenticate"] == "Bearer"
    r = await client.request(method, path, json=body, headers=user.headers)
    assert r.status_code == 403, r.text
    assert r.json() == {"detail": "Admin privileges required"}
    bad = {"Authorization": "Bearer not-a-token"}
    assert (await client.request(method, path, json=body, headers=bad)).status_code == 401


async def test_refused_calls_changed_nothing(client: httpx.AsyncClient, user: Account) -> None:
    for method, path, body in ADMIN_ROUTES:
        await client.request(method, path, json=body, headers=user.headers)
    for path in ("/api/v1/cinemas/", "/api/v1/movies/", "/api/v1/screenings/"):
        assert (await client.get(path, params={"upcoming": "false"})).json() == []


@pytest.mark.parametrize("path", PUBLIC_ROUTES)
async def test_reads_are_public(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code in (200, 404), r.text
    assert r.status_code == 200 or r.json()["detail"].endswith("not found")


async def test_openapi_documents_the_catalog(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    for method, path, _ in ADMIN_ROUTES:
        documented = path.replace("/1", "/{x}")
        for candidate, ops in doc["paths"].items():
            if _same_shape(candidate, documented) and method.lower() in ops:
                op = ops[method.lower()]
                assert op["security"] == [{"bearer": []}, {"OAuth2PasswordBearer": []}]
                assert {"401", "403"} <= set(op["responses"])
                break
        else:
            pytest.fail(f"{method} {path} is not in /openapi.json")
    listing = doc["paths"]["/api/v1/screenings/"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {
        "skip", "limit", "movie_id", "cinema_id", "date", "upcoming"
    }  # fmt: skip
    ok = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["type"] == "array"
    assert "ScreeningOut" in doc["components"]["schemas"]


def _same_shape(documented: str, wanted: str) -> bool:
    a, b = documented.split("/"), wanted.split("/")
    return len(a) == len(b) and all(
        x == y or (x[:1] == y[:1] == "{") for x, y in zip(a, b, strict=True)
    )
