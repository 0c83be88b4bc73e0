"""Lag-tolerant reads on a real streaming replica: anonymous catalog reads see the replica, callers
with a token see the primary (their own writes), and a replica that is down or too far behind
hands every read to the primary without a 503."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from tests import factories as make
from tests.replica.conftest import Replicated, caught_up, on_replica, reads_of
from tests.support import LiveServer, book_held, make_account, reserve

MOVIES = "/api/v1/movies/"
FALLBACK = "lag-tolerant reads on the primary"


def titles(r: httpx.Response) -> set[str]:
    assert r.status_code == 200, r.text
    return {movie["title"] for movie in r.json()}


async def shows_up(client: httpx.AsyncClient, title: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while title not in titles(await client.get(MOVIES)):
        assert time.monotonic() < deadline, f"{title} never reached the anonymous list"
        await asyncio.sleep(0.05)


async def test_paused_replay_hides_new_rows_from_anonymous_reads_only(
    http: httpx.AsyncClient,
    app_on_replica: LiveServer,
    clean_replicated: Replicated,
    primary_db: asyncpg.Connection,
    replica_db: asyncpg.Connection,
) -> None:
    user = await make_account(http, "alice@example.com", "Alice")
    show = await make.show(primary_db, 3)
    await caught_up(clean_replicated.primary_url, clean_replicated.replica_url)
    assert titles(await http.get(MOVIES)) == {"Dune"}

    await replica_db.execute("SELECT pg_wal_replay_pause()")
    heat = await make.movie(primary_db, "Heat")
    assert titles(await http.get(MOVIES)) == {"Dune"}  # the replica's answer
    assert (await http.get(f"{MOVIES}{heat}")).status_code == 404
    # A token reads the primary: the signed-in list has it, and every write reads back.
    assert titles(await http.get(MOVIES, headers=user.headers)) == {"Dune", "Heat"}
    assert (await http.get(f"{MOVIES}{heat}", headers=user.headers)).status_code == 200
    assert (await reserve(http, user, show, show.seat_ids[:2])).status_code == 201
    booked = await book_held(http, user, show, show.seat_ids[:2], "pay_replica")
    assert booked.status_code == 201, booked.text
    mine = await http.get("/api/v1/tickets/my-tickets", headers=user.headers)
    assert sorted(t["seat_id"] for t in mine.json()) == show.seat_ids[:2]
    review = {"rating": 5, "content": "Still the best heist film."}
    url = f"/api/v1/movies/{heat}/reviews"
    assert (await http.post(url, json=review, headers=user.headers)).status_code == 201
    listed = await http.get(url, headers=user.headers)
    assert [r["content"] for r in listed.json()] == [review["content"]]
    assert (await http.get(url)).status_code == 404  # anonymous: the replica has no Heat yet
    assert reads_of(app_on_replica).on_replica  # all the while within the allowed lag

    await replica_db.execute("SELECT pg_wal_replay_resume()")
    await shows_up(http, "Heat")
    assert [r["content"] for r in (await http.get(url)).json()] == [review["content"]]


async def test_a_stopped_replica_hands_reads_to_the_primary_with_one_warning(
    http: httpx.AsyncClient,
    app_on_replica: LiveServer,
    clean_replicated: Replicated,
    primary_db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await make.movie(primary_db, "Heat")
    await shows_up(http, "Heat")
    caplog.set_level(logging.WARNING, logger="db.pool")
    clean_replicated.replica.stop()
    await make.movie(primary_db, "Ronin")
    for _ in range(5):  # the first read fails on the replica and is answered by the primary
        assert titles(await http.get(MOVIES)) == {"Heat", "Ronin"}
    assert not reads_of(app_on_replica).on_replica
    await asyncio.sleep(2.5)  # a lag sample finds the replica down too: still one line
    assert titles(await http.get(MOVIES)) == {"Heat", "Ronin"}
    ready = await http.get("/health/ready")
    assert ready.status_code == 200, ready.text  # the lag loop keeps beating
    warnings = [r.getMessage() for r in caplog.records if r.name == "db.pool"]
    assert len(warnings) == 1 and warnings[0].startswith(FALLBACK), warnings


async def test_a_replica_behind_the_limit_hands_reads_to_the_primary(
    start_app: Callable[..., LiveServer],
    clean_replicated: Replicated,
    primary_db: asyncpg.Connection,
    replica_db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = start_app(database_read_max_lag_seconds=0.5)
    await on_replica(live, True)
    caplog.set_level(logging.INFO, logger="db.pool")
    await replica_db.execute("SELECT pg_wal_replay_pause()")
    await make.movie(primary_db, "Heat")
    await on_replica(live, False)
    lag = reads_of(live).lag_s
    assert lag is not None and lag > 0.5
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        assert titles(await client.get(MOVIES)) == {"Heat"}  # from the primary
        await replica_db.execute("SELECT pg_wal_replay_resume()")
        await on_replica(live, True)
        assert titles(await client.get(MOVIES)) == {"Heat"}  # from the replica, caught up
    lines = [r.getMessage() for r in caplog.records if r.name == "db.pool"][-2:]
    assert lines[0].startswith(f"{FALLBACK}: the replica is behind the primary by"), lines
    assert lines[1].startswith("lag-tolerant reads on the replica again"), lines
