"""The app served on the redis-py transport (``SEATLOCK_REDIS_TRANSPORT=redis-py``): the engine
tests run on both transports; this checks the wiring end to end."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from seatlock.engine.redispy import RedisPyTransport
from seatlock.settings import Settings
from tests import factories as make
from tests.support import LiveServer, availability, make_account, reserve, wait_for_status, watch


async def test_reserve_availability_cancel_and_seat_updates_on_redis_py(
    make_server: Any, db: asyncpg.Connection
) -> None:
    chosen = Settings.from_env({"SEATLOCK_REDIS_TRANSPORT": "redis-py"}).redis_transport
    live: LiveServer = make_server(redis_transport=chosen)
    services = live._server.config.app.state.services  # type: ignore[attr-defined]
    assert isinstance(services.engine.transport, RedisPyTransport)
    show = await make.show(db, 2)
    first, second = show.seat_ids
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        user = await make_account(client, "carol@example.com", "Carol Example")
        ws = await watch(live, show.id)
        try:
            r = await reserve(client, user, show, [first, second])
            assert r.status_code == 201, r.text
            await wait_for_status(ws, [first, second], "reserved")
            seats = await availability(client, show, user)
            assert seats[first]["status"] == "reserved"
            assert seats[first]["reserved_by"] == user.id
            cancel = f"/api/v1/seat-reservations/cancel/{show.id}"
            r = await client.delete(cancel, params={"seat_ids": f"{first}"}, headers=user.headers)
            assert r.status_code == 204, r.text
            await wait_for_status(ws, [first], "available")
            seats = await availability(client, show)
            assert (seats[first]["status"], seats[second]["status"]) == ("available", "reserved")
        finally:
            await ws.close()
