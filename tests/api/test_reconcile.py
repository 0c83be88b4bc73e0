"""The reconciler as the server runs it: a sale made in PostgreSQL behind Redis's back, and a
cancellation Redis never heard of, reach the seat map and the screening's WebSocket watchers."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import httpx

from tests import factories as make
from tests.support import Account, LiveServer, availability, wait_for_statuses, watch


async def test_the_server_repairs_redis_and_watchers_see_it(
    db: asyncpg.Connection, make_server: Callable[..., LiveServer], user: Account
) -> None:
    live = make_server(reconcile_interval_seconds=0.2, reconcile_settle_seconds=0)
    show = await make.show(db, 3)
    a, b, _ = show.seat_ids
    sold_b = await make.ticket(db, user.id, show.id, b)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        seen = await availability(client, show)  # loads the screening: b sold
        assert [seen[seat]["status"] for seat in (a, b)] == ["available", "booked"]
        ws = await watch(live, show.id)
        try:
            await make.ticket(db, user.id, show.id, a)
            await db.execute("UPDATE tickets SET status = 'cancelled' WHERE id = $1", sold_b)
            # Two changes behind Redis's back: a pass may repair them in either order.
            await wait_for_statuses(ws, {a: "booked", b: "available"})
        finally:
            await ws.close()
        seen = await availability(client, show)
        assert [seen[seat]["status"] for seat in (a, b)] == ["booked", "available"]
