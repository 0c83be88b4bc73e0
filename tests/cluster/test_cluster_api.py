"""The whole app on a Redis Cluster (SEATLOCK_REDIS_URL=redis+cluster://...): accounts, holds,
WebSocket seat maps, bookings and cancels for screenings on every primary."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest

from seatlock import keys
from seatlock.server.localcluster import LocalCluster
from seatlock.settings import Settings
from tests import factories as make
from tests.cluster.conftest import on_both_event_paths
from tests.factories import Show
from tests.support import (
    Account,
    LiveServer,
    availability,
    book_held,
    make_account,
    reserve,
    wait_for_status,
    watch,
)


@pytest.fixture
def cluster_server(base_settings: Settings, empty_cluster: LocalCluster) -> Iterator[LiveServer]:
    live = LiveServer(base_settings.replace(redis_url=empty_cluster.url))
    live.start()
    yield live
    live.stop()


@pytest.fixture
async def cclient(cluster_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster_server.url, timeout=15) as c:
        yield c


async def shows_on_every_primary(db: asyncpg.Connection, cluster: LocalCluster) -> list[Show]:
    """Screenings made until one lives on each primary (checked against the node map)."""
    found: dict[int, Show] = {}
    for _ in range(60):
        show = await make.show(db, 4)
        port = cluster.port_of_slot(cluster.keyslot(keys.screening_meta(show.id)))
        found.setdefault(port, show)
        if len(found) == cluster.primaries:
            return [found[port] for port in cluster.primary_ports]
    raise AssertionError("screenings did not spread over every primary")


@on_both_event_paths
async def test_reserve_watch_book_and_cancel_on_every_primary(
    cclient: httpx.AsyncClient,
    cluster_server: LiveServer,
    db: asyncpg.Connection,
    empty_cluster: LocalCluster,
) -> None:
    alice = await make_account(cclient, "alice@example.com", "Alice Example")
    bob = await make_account(cclient, "bob@example.com", "Bob Example")
    for show in await shows_on_every_primary(db, empty_cluster):
        ws = await watch(cluster_server, show.id, bob.token)
        try:
            seats = show.seat_ids[:2]
            r = await reserve(cclient, alice, show, seats)
            assert r.status_code == 201, r.text
            seen = await wait_for_status(ws, seats, "reserved")
            assert {u.get("reserved_by") for u in seen.values()} == {None}  # not bob's holds
            assert (await reserve(cclient, bob, show, seats[1:])).status_code == 409
            r = await book_held(cclient, alice, show, seats, f"pay-{show.id}")
            assert r.status_code == 201, r.text
            await wait_for_status(ws, seats, "booked")
            ticket = r.json()[0]
            r = await cclient.delete(f"/api/v1/tickets/{ticket['id']}", headers=alice.headers)
            assert r.status_code == 200, r.text
            await wait_for_status(ws, [ticket["seat_id"]], "available")
            states = await availability(cclient, show)
            assert states[ticket["seat_id"]]["status"] == "available"
        finally:
            await ws.close()


async def test_best_available_and_the_single_gap_rule_on_every_primary(
    cclient: httpx.AsyncClient, db: asyncpg.Connection, empty_cluster: LocalCluster
) -> None:
    alice = await make_account(cclient, "alice@example.com", "Alice Example")
    best = "/api/v1/seat-reservations/reserve-best"
    for show in await shows_on_every_primary(db, empty_cluster):
        await db.execute("UPDATE screenings SET no_single_gaps = true WHERE id = $1", show.id)
        r = await reserve(cclient, alice, show, show.seat_ids[1:2])  # would strand A1
        assert r.status_code == 409
        assert r.json()["detail"].endswith("(row A, seat 1)")
        r = await cclient.post(
            best, json={"screening_id": show.id, "count": 2}, headers=alice.headers
        )
        assert r.status_code == 201, r.text
        assert [x["seat_id"] for x in r.json()["reservations"]] == show.seat_ids[:2]


async def test_logins_throttle_refresh_revocation_and_health_on_a_cluster(
    cclient: httpx.AsyncClient, cluster_server: LiveServer
) -> None:
    alice: Account = await make_account(cclient, "alice@example.com", "Alice Example")
    body = {"email": alice.email, "password": "wrong-password-1"}
    for _ in range(cluster_server.settings.login_max_failures):
        assert (await cclient.post("/api/v1/auth/login", json=body)).status_code == 401
    assert (await cclient.post("/api/v1/auth/login", json=body)).status_code == 429
    refreshed = await cclient.post(
        "/api/v1/auth/refresh-token", json={"refresh_token": alice.refresh_token}
    )
    assert refreshed.status_code == 200, refreshed.text
    token = refreshed.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert (await cclient.get("/api/v1/auth/me", headers=headers)).status_code == 200
    assert (await cclient.post("/api/v1/auth/logout", headers=headers)).status_code == 200
    assert (await cclient.get("/api/v1/auth/me", headers=headers)).status_code == 401
    ready = await cclient.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["redis"] == "ok"
