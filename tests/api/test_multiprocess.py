"""Two servers sharing Redis and PostgreSQL: events and holds cross processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from seatlock.engine.events import STATS_INTERVAL_S
from tests import factories as make
from tests.support import RESERVE, held_in_redis, wait_for_status, watch


async def test_watcher_on_one_server_sees_a_hold_made_through_the_other(
    make_server: Any, db: asyncpg.Connection
) -> None:
    first, second = make_server(), make_server()
    show = await make.show(db, 3)
    seats = show.seat_ids[:2]
    [headers] = await make.sessions(db, first.settings.jwt_secret, 1)
    ws = await watch(first, show.id)
    try:
        async with httpx.AsyncClient(base_url=second.url) as client:
            body = {"screening_id": show.id, "seat_ids": seats}
            assert (await client.post(RESERVE, json=body, headers=headers)).status_code == 201
        held = await wait_for_status(ws, seats, "reserved")
        assert all("reserved_by" not in u for u in held.values())  # not shown to the public
        # /ws/stats answers for both servers: the one with the watcher counts it live, the
        # other as last published in Redis (refreshed every STATS_INTERVAL_S).
        for server in (first, second):
            stats = await _ws_stats_once(server.url, lambda s: s["total_connections"] == 1)
            assert stats["screening_details"] == {str(show.id): 1}
            assert stats["active_screenings"] == [show.id]
    finally:
        await ws.close()


async def test_racers_on_two_servers_get_each_seat_once(
    make_server: Any, db: asyncpg.Connection, redis: Any
) -> None:
    servers = [make_server(), make_server()]
    show = await make.show(db, 4)
    racers = await make.sessions(db, servers[0].settings.jwt_secret, 40)
    clients = [httpx.AsyncClient(base_url=s.url) for s in servers]
    try:
        results = await asyncio.gather(
            *(
                clients[n % 2].post(
                    RESERVE,
                    json={"screening_id": show.id, "seat_ids": show.seat_ids[n % 3 : n % 3 + 2]},
                    headers=h,
                )
                for n, h in enumerate(racers)
            )
        )
    finally:
        for c in clients:
            await c.aclose()
    won = [seat for r in results if r.status_code == 201 for seat in _seats(r.json())]
    assert {r.status_code for r in results} <= {201, 409}
    assert won and len(won) == len(set(won))
    assert sorted(await held_in_redis(redis, show)) == sorted(won)


async def _ws_stats_once(url: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first /ws/stats reply passing ``check``, within one refresh interval and a margin."""
    deadline = time.monotonic() + STATS_INTERVAL_S + 1
    async with httpx.AsyncClient(base_url=url) as client:
        while True:
            stats: dict[str, Any] = (await client.get("/ws/stats")).json()
            if check(stats) or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.05)


def _seats(body: dict[str, Any]) -> list[int]:
    return [x["seat_id"] for x in body["reservations"]]


async def test_each_process_hands_out_its_own_block_of_reservation_ids(
    make_server: Any, db: asyncpg.Connection
) -> None:
    servers = [make_server(), make_server()]
    show = await make.show(db, 4)
    [headers] = await make.sessions(db, servers[0].settings.jwt_secret, 1)
    ids: list[list[int]] = []
    for n, server in enumerate(servers):
        async with httpx.AsyncClient(base_url=server.url) as client:
            body = {"screening_id": show.id, "seat_ids": show.seat_ids[2 * n : 2 * n + 2]}
            r = await client.post(RESERVE, json=body, headers=headers)
            assert r.status_code == 201
            ids.append([x["id"] for x in r.json()["reservations"]])
    for block in ids:
        assert block[1] == block[0] + 1  # consecutive within a process's block
    assert ids[0][0] // 1000 != ids[1][0] // 1000  # different blocks across processes
