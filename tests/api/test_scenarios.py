"""The guide's four "Testing Correctness" scenarios, as written, with WebSocket events checked."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import orjson

from tests import factories as make
from tests.support import (
    RESERVE,
    Account,
    LiveServer,
    availability,
    reserve,
    wait_for_status,
    watch,
)

FROM_HOLD = "/api/v1/tickets/book-from-reservation"


async def test_scenario_1_basic_reservation_flow(
    client: httpx.AsyncClient, db: asyncpg.Connection, server: LiveServer, user: Account
) -> None:
    show = await make.show(db, 4)
    seats = show.seat_ids[:2]
    ws = await watch(server, show.id, user.token)
    try:
        before = await availability(client, show)
        assert {s["status"] for s in before.values()} == {"available"}
        r = await reserve(client, user, show, seats)
        assert r.status_code == 201
        held = await wait_for_status(ws, seats, "reserved")
        assert {u["reserved_by"] for u in held.values()} == {user.id}
        body = {"screening_id": show.id, "seat_ids": seats, "payment_id": "test_payment_123"}
        r = await client.post(FROM_HOLD, json=body, headers=user.headers)
        assert r.status_code == 201, r.text
        assert {t["status"] for t in r.json()} == {"confirmed"}
        await wait_for_status(ws, seats, "booked")
        after = await availability(client, show)
        assert [after[s]["status"] for s in seats] == ["booked", "booked"]
    finally:
        await ws.close()


async def test_scenario_2_two_tabs_race_for_one_seat(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    user: Account,
    other_user: Account,
) -> None:
    show = await make.show(db, 2)
    seat = show.seat_ids[0]
    ws = await watch(server, show.id)
    try:
        results = await asyncio.gather(
            reserve(client, user, show, [seat]), reserve(client, other_user, show, [seat])
        )
        assert sorted(r.status_code for r in results) == [201, 409]
        message = orjson.loads(await asyncio.wait_for(ws.recv(), 3))
        assert (message["seat_id"], message["status"]) == (seat, "reserved")
        winner = next(r for r in results if r.status_code == 201).json()
        loser = next(r for r in results if r.status_code == 409).json()
        assert loser == {"detail": f"Seats [{seat}] are currently reserved by other users"}
        assert winner["reservations"][0]["seat_id"] == seat
    finally:
        await ws.close()


async def test_scenario_3_idempotency(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 3)
    seats = show.seat_ids
    assert (await reserve(client, user, show, seats)).status_code == 201
    body = {"screening_id": show.id, "seat_ids": seats, "payment_id": "pay_idem"}
    result1 = await client.post(FROM_HOLD, json=body, headers=user.headers)
    result2 = await client.post(FROM_HOLD, json=body, headers=user.headers)
    assert (result1.status_code, result2.status_code) == (201, 201)
    assert result1.json()[0]["id"] == result2.json()[0]["id"]
    assert result1.json() == result2.json()


async def test_scenario_4_expiration(make_server: Any, db: asyncpg.Connection) -> None:
    server = make_server(hold_seconds=2)
    show = await make.show(db, 3)
    seats = show.seat_ids[:2]
    [headers] = await make.sessions(db, server.settings.jwt_secret, 1)
    ws = await watch(server, show.id, headers["Authorization"].split()[1])
    async with httpx.AsyncClient(base_url=server.url) as client:
        try:
            body = {"screening_id": show.id, "seat_ids": seats}
            r = await client.post(RESERVE, json=body, headers=headers)
            assert r.status_code == 201
            expires = max(_epoch(x["expires_at"]) for x in r.json()["reservations"])
            await wait_for_status(ws, seats, "reserved")
            await wait_for_status(ws, seats, "available", within=5)
            assert time.time() - expires < 2.0, "the expiry reached the watcher late"
            paid = {**body, "payment_id": "pay_too_late"}
            r = await client.post(FROM_HOLD, json=paid, headers=headers)
            assert r.status_code == 409
            assert "expired" in r.json()["detail"]
            assert await db.fetchval("SELECT count(*) FROM tickets") == 0
            seats_now = (await client.get(f"/api/v1/showtimes/{show.id}/seats")).json()
            assert {s["status"] for s in seats_now} == {"available"}
        finally:
            await ws.close()


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
