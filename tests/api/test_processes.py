"""Two real ``seatlock serve`` processes on one Redis and one PostgreSQL: nothing that matters
lives in one process's memory (DESIGN.md, scale-out)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from seatlock.settings import Settings
from tests import factories as make
from tests.support import (
    PASSWORD,
    RESERVE,
    Served,
    backends_of,
    scratch_dir,
    start_serve,
    stop_all,
    wait_for_status,
    watch,
)


@pytest.fixture
def two_processes(base_settings: Settings) -> Iterator[tuple[Served, Served]]:
    with scratch_dir("seatlock-procs-") as data_dir:  # one data directory for both
        processes = [
            start_serve(
                data_dir,
                workers=1,  # one worker each: its own /ws/stats figure is the live one
                bcrypt_rounds=4,
                log_level="warning",
                **backends_of(base_settings),
            )
            for _ in range(2)
        ]
        try:
            for p in processes:
                p.wait_for()
            yield processes[0], processes[1]
        finally:
            stop_all(processes, seconds=15)


async def test_a_change_made_through_one_process_reaches_watchers_of_the_other(
    two_processes: tuple[Served, Served], db: asyncpg.Connection
) -> None:
    first, second = two_processes
    show = await make.show(db, 4)
    async with (
        httpx.AsyncClient(base_url=first.url) as a,
        httpx.AsyncClient(base_url=second.url) as b,
    ):
        body = {"email": "racer@example.com", "password": PASSWORD, "full_name": "Racer"}
        assert (await a.post("/api/v1/auth/register", json=body)).status_code == 201
        login = await b.post("/api/v1/auth/login", json=body)  # a token from the other process
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        ws = await watch(first, show.id)  # type: ignore[arg-type]
        try:
            hold = {"screening_id": show.id, "seat_ids": show.seat_ids[:2]}
            assert (await b.post(RESERVE, json=hold, headers=headers)).status_code == 201
            await wait_for_status(ws, show.seat_ids[:2], "reserved")
            # The other process refuses the same seats: the hold lives in Redis, not in a process.
            again = await a.post(RESERVE, json=hold, headers=headers)
            assert again.status_code == 201  # re-holding one's own seats is not an error
            # Either process answers /ws/stats for both (the other's figures within a second).
            assert (await a.get("/ws/stats")).json()["total_connections"] == 1
            await _eventually_counted(b, 1)
            # A logout through one process stops the token in the other.
            assert (await a.post("/api/v1/auth/logout", headers=headers)).status_code in (200, 204)
            await _eventually_refused(b, headers)
        finally:
            await ws.close()


async def _eventually_counted(client: httpx.AsyncClient, watchers: int) -> None:
    """Another process's WebSockets reach /ws/stats with its next refresh (every second)."""
    for _ in range(100):
        if (await client.get("/ws/stats")).json()["total_connections"] == watchers:
            return
        await asyncio.sleep(0.03)
    pytest.fail("the other process's watchers are not in /ws/stats after 3 s")


async def _eventually_refused(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """Revocations reach other processes by pub/sub: allow its latency, nothing more."""
    for _ in range(100):
        if (await client.get("/api/v1/auth/me", headers=headers)).status_code == 401:
            return
        await asyncio.sleep(0.02)
    pytest.fail("the other process still accepts a logged-out token after 2 s")
