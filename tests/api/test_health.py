from __future__ import annotations

import gc

import httpx

from seatlock.process import GC_YOUNG_THRESHOLD
from tests.support import Account


async def test_welcome(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    assert r.json()["status"] == "healthy"


async def test_ready_reports_both_backends(client: httpx.AsyncClient) -> None:
    r = await client.get("/health/ready")
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["redis"], body["postgres"]) == ("ready", "ok", "ok")
    assert body["stalled"] == []
    assert set(body["loops"].values()) == {"ok"}


async def test_openapi_lists_routes(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert "/api/v1/auth/login" in doc["paths"]
    signed_in = [{"bearer": []}, {"OAuth2PasswordBearer": []}]
    assert doc["paths"]["/api/v1/auth/me"]["get"]["security"] == signed_in


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/nothing-here")
    assert r.status_code == 404
    assert r.json() == {"detail": "Not Found"}


async def test_me_needs_a_token(client: httpx.AsyncClient, user: Account) -> None:
    assert (await client.get("/api/v1/auth/me")).status_code == 401
    r = await client.get("/api/v1/auth/me", headers=user.headers)
    assert r.status_code == 200
    assert r.json()["email"] == user.email


async def test_started_server_keeps_collector_pauses_short(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).status_code == 200
    assert gc.get_freeze_count() > 0  # start-up objects are out of the collector's sight
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
