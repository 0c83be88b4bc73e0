"""Two API hosts as one service: two ``seatlock serve`` processes (the real CLI, one with two
workers), each on a port of its own, against the same Redis Cluster and the same PostgreSQL.

A client may hit either host for any step: watchers on one see holds made through the other,
``/ws/stats`` counts both hosts' WebSockets, a logout on one is refused on the other, a hold
made on one is extended, cancelled and booked through the other, and my reservations and tickets
read through one show what the other answered 201 for within BATCH_INTERVAL_S. The hosts' clocks
are 5 s ahead and behind (SEATLOCK_CLOCK_OFFSET_MS): none of it depends on them, and each
worker's /metrics shows the offset it measured to Redis's clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from db.reservations import BATCH_INTERVAL_S
from seatlock.server.localcluster import LocalCluster
from tests import factories as make
from tests.api.test_metrics import scrape
from tests.conftest import TEST_SECRET
from tests.support import (
    Account,
    Served,
    availability,
    book_held,
    make_account,
    reserve,
    scratch_dir,
    start_serve,
    stop_all,
    wait_for_status,
)

SKEW_MS = 5_000
# A data directory, the workers and the clock's skew of each host.
HOSTS = (("a", 2, SKEW_MS), ("b", 1, -SKEW_MS))
# Another host's history writer is up to BATCH_INTERVAL_S late, then its batch commits and our
# reads poll: 0.1 s alone failed now and then on a busy machine (0.101 s).
SEEN_WITHIN_S = BATCH_INTERVAL_S + 0.2
MINE = "/api/v1/seat-reservations/my-reservations"


@pytest.fixture(scope="module")
def hosts(backend_urls: tuple[str, str], local_cluster: LocalCluster) -> Iterator[list[Served]]:
    """Host A with two workers, host B with one, sharing the cluster, the database and the JWT
    secret (as hosts behind one load balancer do); each has a data directory of its own and a
    clock off by 5 s, A ahead and B behind."""
    shared = {
        "redis_url": local_cluster.url,
        "database_url": backend_urls[1],
        "jwt_secret": TEST_SECRET,
        "bcrypt_rounds": 4,
        "seed_demo": "false",
        "login_max_failures_per_ip": 1000,
    }
    with scratch_dir("seatlock-hosts-") as root:
        started = [
            start_serve(root / name, workers=workers, clock_offset_ms=skew, **shared)
            for name, workers, skew in HOSTS
        ]
        try:
            for host in started:
                host.wait_for(seconds=90)
            yield started
        finally:
            stop_all(started)


async def watch(host: Served, screening_id: int, token: str | None = None) -> Any:
    """A WebSocket on ``host`` watching a screening, past its connection_confirmed message."""
    query = f"?token={token}" if token else ""
    ws = await websockets.connect(f"{host.ws_url}/ws/screenings/{screening_id}{query}")
    hello = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert hello["type"] == "connection_confirmed", hello
    return ws


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


@pytest.fixture
async def clients(hosts: list[Served]) -> Any:
    async with (
        httpx.AsyncClient(base_url=hosts[0].url, timeout=15) as a,
        httpx.AsyncClient(base_url=hosts[1].url, timeout=15) as b,
    ):
        yield a, b


async def test_watchers_on_one_host_see_holds_made_through_the_other(
    hosts: list[Served], clients: Any, db: asyncpg.Connection
) -> None:
    a, b = clients
    alice = await make_account(a, "alice@example.com", "Alice Example")
    bob = await make_account(b, "bob@example.com", "Bob Example")
    show = await make.show(db, 6)
    on_a = [await watch(hosts[0], show.id, bob.token) for _ in range(3)]  # both workers of A
    on_b = await watch(hosts[1], show.id)
    try:
        assert (await reserve(b, alice, show, show.seat_ids[:2])).status_code == 201
        for ws in on_a:
            await wait_for_status(ws, show.seat_ids[:2], "reserved")
        assert (await reserve(a, bob, show, show.seat_ids[2:3])).status_code == 201
        seen = await wait_for_status(on_b, show.seat_ids[2:3], "reserved")
        assert seen[show.seat_ids[2]].get("reserved_by") is None  # bob's hold, not shown to all
        # Either host refuses the seats the other granted.
        assert (await reserve(a, bob, show, show.seat_ids[1:2])).status_code == 409
        assert (await reserve(b, alice, show, show.seat_ids[2:3])).status_code == 409
    finally:
        for ws in [*on_a, on_b]:
            await ws.close()


async def test_ws_stats_on_either_host_counts_both_hosts(
    hosts: list[Served], db: asyncpg.Connection
) -> None:
    show = await make.show(db, 2)
    sockets = [await watch(hosts[0], show.id) for _ in range(3)]
    sockets += [await watch(hosts[1], show.id) for _ in range(2)]
    try:
        for host in hosts:  # an entry is rewritten every second: both hosts' 5 within a few
            await eventually(lambda h=host: watchers(h, show.id, 5))  # type: ignore[misc]
    finally:
        for ws in sockets:
            await ws.close()
    for host in hosts:
        await eventually(lambda h=host: watchers(h, show.id, 0))  # type: ignore[misc]


async def watchers(host: Served, screening_id: int, expected: int) -> bool:
    async with httpx.AsyncClient(base_url=host.url, timeout=10) as client:
        r = await client.get("/ws/stats")  # a new connection: either worker of A may answer
    assert r.status_code == 200, r.text
    return bool(r.json()["screening_details"].get(str(screening_id), 0) == expected)


async def test_a_logout_on_one_host_is_refused_on_the_other(clients: Any) -> None:
    a, b = clients
    alice: Account = await make_account(a, "alice@example.com", "Alice Example")
    assert (await b.get("/api/v1/auth/me", headers=alice.headers)).status_code == 200
    assert (await a.post("/api/v1/auth/logout", headers=alice.headers)).status_code == 200

    async def refused_on_b() -> bool:
        return bool((await b.get("/api/v1/auth/me", headers=alice.headers)).status_code == 401)

    await eventually(refused_on_b, 2.0)
    for _ in range(5):  # by every worker, on every new connection
        async with httpx.AsyncClient(base_url=a.base_url, timeout=10) as fresh:
            assert (await fresh.get("/api/v1/auth/me", headers=alice.headers)).status_code == 401
    r = await b.post("/api/v1/auth/refresh-token", json={"refresh_token": alice.refresh_token})
    assert r.status_code == 401, r.text


async def test_a_hold_made_on_one_host_is_extended_cancelled_and_booked_on_the_other(
    clients: Any, db: asyncpg.Connection
) -> None:
    a, b = clients
    alice = await make_account(a, "alice@example.com", "Alice Example")
    show = await make.show(db, 4)
    s1, s2, s3 = show.seat_ids[:3]
    held = await reserve(a, alice, show, [s1, s2, s3])
    assert held.status_code == 201, held.text
    extended = await b.post(
        "/api/v1/seat-reservations/extend",
        params={"additional_minutes": 3},
        json={"screening_id": show.id, "seat_ids": [s1, s2]},
        headers=alice.headers,
    )
    assert extended.status_code == 200, extended.text
    first = held.json()["reservations"]
    assert [x["id"] for x in extended.json()["reservations"]] == [first[0]["id"], first[1]["id"]]
    cancel = f"/api/v1/seat-reservations/cancel/{show.id}"
    r = await b.delete(cancel, params={"seat_ids": str(s3)}, headers=alice.headers)
    assert r.status_code == 204, r.text
    assert await live_holds(b, alice) == [s1, s2]  # the host that cancelled: at once
    # Another host reads the hold history from PostgreSQL, which each host's history writer
    # fills behind its changes (every 0.1 s): it agrees within moments, not at once.
    await eventually(lambda: has_live_holds(a, alice, [s1, s2]), 2.0)
    booked = await book_held(b, alice, show, [s1, s2], f"pay-hosts-{show.id}")
    assert booked.status_code == 201, booked.text
    again = await book_held(a, alice, show, [s1, s2], f"pay-hosts-{show.id}")  # idempotent
    assert again.status_code in (200, 201), again.text
    assert sorted(t["id"] for t in again.json()) == sorted(t["id"] for t in booked.json())
    for client in (a, b):
        states = await availability(client, show)
        got = tuple(states[s]["status"] for s in (s1, s2, s3))
        assert got == ("booked", "booked", "available")


async def live_holds(client: httpx.AsyncClient, account: Account) -> list[int]:
    r = await client.get("/api/v1/seat-reservations/my-reservations", headers=account.headers)
    assert r.status_code == 200, r.text
    return sorted(x["seat_id"] for x in r.json() if x["status"] == "active")


async def has_live_holds(client: httpx.AsyncClient, account: Account, seats: list[int]) -> bool:
    return await live_holds(client, account) == seats


async def test_my_reservations_and_tickets_on_one_host_show_the_others_201s_at_once(
    clients: Any, db: asyncpg.Connection
) -> None:
    a, b = clients
    alice = await make_account(a, "alice@example.com", "Alice Example")
    show = await make.show(db, 3)
    seats = show.seat_ids[:2]
    held = await reserve(a, alice, show, seats)
    assert held.status_code == 201, held.text
    ids = {r["seat_id"]: r["id"] for r in held.json()["reservations"]}
    took = await seen_within(lambda: mine(b, alice, {}), {(s, ids[s], "active") for s in seats})
    assert took <= SEEN_WITHIN_S
    booked = await book_held(a, alice, show, seats, f"pay-ryw-{show.id}")
    assert booked.status_code == 201, booked.text
    # A 201 means the tickets are committed in PostgreSQL: the other host lists them at once.
    r = await b.get("/api/v1/tickets/my-tickets", headers=alice.headers)
    assert r.status_code == 200, r.text
    assert {t["id"] for t in r.json()} == {t["id"] for t in booked.json()}
    everything = {"include_expired": "true"}
    took = await seen_within(
        lambda: mine(b, alice, everything), {(s, ids[s], "booked") for s in seats}
    )
    assert took <= SEEN_WITHIN_S
    assert await mine(b, alice, {}) == set()


async def mine(
    client: httpx.AsyncClient, account: Account, params: dict[str, str]
) -> set[tuple[int, int, str]]:
    """(seat id, reservation id, status) of the account's holds, as my-reservations lists them."""
    r = await client.get(MINE, params=params, headers=account.headers)
    assert r.status_code == 200, r.text
    return {(x["seat_id"], x["id"], x["status"]) for x in r.json()}


async def seen_within(
    read: Callable[[], Awaitable[set[tuple[int, int, str]]]], wanted: set[tuple[int, int, str]]
) -> float:
    """Read until ``wanted`` is what is listed (at most 1 s); how long that took."""
    started = time.monotonic()
    while (got := await read()) != wanted:
        assert time.monotonic() - started < 1.0, got
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def test_each_worker_publishes_its_offset_to_redis_clock(hosts: list[Served]) -> None:
    for host, (_, workers, skew) in zip(hosts, HOSTS, strict=True):
        pids: set[str] = set()
        for _ in range(20 * workers):  # new connections until every worker has answered
            async with httpx.AsyncClient(base_url=host.url, timeout=10) as client:
                text = await scrape(client)
            for sample in samples(text, "seatlock_clock_offset_seconds"):
                assert sample.labels["clock"] == "redis"
                pids.add(sample.labels.get("pid", ""))
                assert abs(sample.value + skew / 1000) < 0.05, (host.url, sample)
            errors = samples(text, "seatlock_clock_error_seconds")
            assert errors and all(0 <= e.value < 0.05 for e in errors)
            if len(pids) >= workers:
                break
        assert len(pids) == workers, pids


def samples(text: str, name: str) -> list[Any]:
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
