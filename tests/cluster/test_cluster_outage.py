"""A primary lost without a replica to take over, or one that stops answering: its screenings
answer 503 with Retry-After, the screenings of the other primaries keep working (the nodes run
with cluster-require-full-coverage no, as a deployment that wants that isolation must)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from db.layouts import Layouts
from seatlock import keys
from seatlock.engine.model import LayoutSource
from seatlock.engine.seats import SeatEngine
from seatlock.server.localcluster import LocalCluster
from seatlock.server.redisnodes import scratch_root
from seatlock.services.reconciler import Reconciler
from seatlock.settings import Settings
from tests import factories as make
from tests.cluster.conftest import one_per_primary, transport_of
from tests.cluster.test_cluster_api import shows_on_every_primary
from tests.factories import Show
from tests.lua.support import DictSource, make_engine
from tests.support import Account, LiveServer, make_account, reserve

ALICE = 7
HOLD_MS = 1000
STALL_S = 1.0  # the engine's socket timeout: a stopped primary's first call waits this long


@pytest.fixture(scope="module")
def lone_primaries() -> Iterator[LocalCluster]:
    """Three primaries and no replica, kept serving the slots they have when one is lost."""
    root = scratch_root("seatlock-cluster-outage-")
    options = ["--cluster-require-full-coverage", "no"]
    with LocalCluster(root, replicas_each=0, options=options) as cluster:
        yield cluster


@contextlib.asynccontextmanager
async def alice_on_every_primary(
    settings: Settings, cluster: LocalCluster, db: asyncpg.Connection
) -> AsyncIterator[tuple[httpx.AsyncClient, Account, list[Show]]]:
    """A server on the cluster, and Alice holding the first seat of a screening on each primary
    (in the order of ``primary_ports``)."""
    live = LiveServer(settings.replace(redis_url=cluster.url))
    live.start()
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            alice = await make_account(client, "alice@example.com", "Alice Example")
            shows = await shows_on_every_primary(db, cluster)
            for show in shows:
                assert (await reserve(client, alice, show, show.seat_ids[:1])).status_code == 201
            yield client, alice, shows
    finally:
        live.stop()


async def answered_again(
    ask: Callable[[], Awaitable[httpx.Response]], until: Callable[[httpx.Response], bool]
) -> httpx.Response:
    """Ask every 0.1 s until the answer is what a resumed primary gives (at most 5 s)."""
    deadline = time.monotonic() + 5
    while not until(r := await ask()):
        assert time.monotonic() < deadline, f"the primary answers again, this does not: {r.text}"
        await asyncio.sleep(0.1)
    return r


def not_503(r: httpx.Response) -> bool:
    return r.status_code != 503


async def test_a_stopped_primary_holds_up_only_its_screenings(
    base_settings: Settings, lone_primaries: LocalCluster, db: asyncpg.Connection
) -> None:
    """SIGSTOP of a primary: its connections stay open and nothing comes back. Its screening's
    hold waits one timeout and is a 503; the next ones are refused at once until it answers
    again. The other primaries' holds sent at the same moment are answered without waiting for
    it (each primary has its calls' lane: they waited that one timeout, in one batch with the
    stopped primary's call, and before that ~30 s, answered 503)."""
    timeout = 1.0
    settings = base_settings.replace(redis_timeout_seconds=timeout)
    stopped = lone_primaries.primary_ports[1]
    async with alice_on_every_primary(settings, lone_primaries, db) as (client, alice, shows):

        async def timed(show: Show, seat: int) -> tuple[httpx.Response, float]:
            started = time.monotonic()
            r = await reserve(client, alice, show, show.seat_ids[seat : seat + 1])
            return r, time.monotonic() - started

        lone_primaries.pause(stopped)
        try:
            (down, waited), *served = await asyncio.gather(
                timed(shows[1], 1), timed(shows[0], 1), timed(shows[2], 1)
            )
            for r, took in served:
                assert r.status_code == 201, r.text
                assert took < timeout * 0.5
            assert down.status_code == 503, down.text
            assert down.headers["Retry-After"]
            assert timeout * 0.9 < waited < timeout * 2.5
            again, took = await timed(shows[1], 2)
            assert again.status_code == 503, again.text
            assert took < 0.25  # refused at once
            for show in (shows[0], shows[2]):
                r, took = await timed(show, 2)
                assert r.status_code == 201, r.text
                assert took < 0.5
        finally:
            lone_primaries.resume(stopped)
        seat = shows[1].seat_ids[2:3]
        r = await answered_again(lambda: reserve(client, alice, shows[1], seat), not_503)
        assert r.status_code == 201, r.text


async def test_a_login_whose_throttle_keys_live_on_a_stopped_primary_is_a_prompt_503(
    base_settings: Settings, lone_primaries: LocalCluster, db: asyncpg.Connection
) -> None:
    """The app's own cluster client (login throttle, sessions) does not retry a command that
    timed out: it waited ~15 timeouts for its 503 (redis-py's retries, a slot map refresh before
    each)."""
    timeout = 1.0
    settings = base_settings.replace(redis_timeout_seconds=timeout)
    stopped = lone_primaries.port_of_slot(
        lone_primaries.keyslot(keys.login_failures_address("127.0.0.1"))
    )
    async with alice_on_every_primary(settings, lone_primaries, db) as (client, alice, _):
        body = {"email": alice.email, "password": alice.password}
        lone_primaries.pause(stopped)
        try:
            for _ in range(2):
                started = time.monotonic()
                r = await client.post("/api/v1/auth/login", json=body)
                assert r.status_code == 503, r.text
                assert r.headers["Retry-After"]
                assert time.monotonic() - started < timeout * 4
        finally:
            lone_primaries.resume(stopped)
        r = await answered_again(lambda: client.post("/api/v1/auth/login", json=body), not_503)
        assert r.status_code == 200, r.text


async def test_a_stopped_primary_leaves_the_hosts_ready(
    base_settings: Settings, lone_primaries: LocalCluster, db: asyncpg.Connection
) -> None:
    """Readiness asks every primary: one that does not answer makes Redis "degraded", not the
    host unready (redis-py's PING goes to the primary of slot 0 alone: stopped, every host was
    unready, and a load balancer would have taken them all out)."""
    stopped = lone_primaries.port_of_slot(0)
    async with alice_on_every_primary(base_settings, lone_primaries, db) as (client, _, _):
        r = await client.get("/health/ready")
        assert (r.status_code, r.json()["redis"]) == (200, "ok"), r.text
        lone_primaries.pause(stopped)
        try:
            r = await client.get("/health/ready")
            assert (r.status_code, r.json()["redis"]) == (200, "degraded"), r.text
        finally:
            lone_primaries.resume(stopped)
        await answered_again(
            lambda: client.get("/health/ready"), lambda r: r.json()["redis"] == "ok"
        )


@contextlib.asynccontextmanager
async def engine_on(cluster: LocalCluster, source: LayoutSource) -> AsyncIterator[SeatEngine]:
    """An engine on the cluster, as a process's (1 s socket timeout), with 1 s holds."""
    async with transport_of(cluster, socket_timeout=STALL_S) as transport:
        yield make_engine(transport, source, hold_ms=HOLD_MS)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Until ``check()`` is true (at most 5 s): a resumed node answers within its probe's 1 s."""
    deadline = time.monotonic() + 5
    while not await check():
        assert time.monotonic() < deadline, "the resumed primary is not used again"
        await asyncio.sleep(0.1)


def port_of(cluster: LocalCluster, key: str) -> int:
    return cluster.port_of_slot(cluster.keyslot(key))


def off_the_list(cluster: LocalCluster, first: int = 1000) -> list[int]:
    """A screening on each primary but the one of the list of loaded screenings."""
    listed_on = port_of(cluster, keys.LOADED_SCREENINGS)
    shows = one_per_primary(cluster, first)
    return [s for s in shows if port_of(cluster, keys.screening_meta(s)) != listed_on]


async def test_the_sweep_frees_the_other_primaries_holds_while_one_does_not_answer(
    lone_primaries: LocalCluster,
) -> None:
    """The sweep (the net under the expiry listeners) skips the screenings of a stopped primary
    and frees the others' lapsed holds; one such screening failed the whole sweep, once a second
    in every process, for as long as the node hung."""
    lone_primaries.flush()
    shows = one_per_primary(lone_primaries)
    stopped = port_of(lone_primaries, keys.screening_meta(off_the_list(lone_primaries)[0]))
    source = DictSource()
    for show in shows:
        source.add(show, [1, 2])
    async with engine_on(lone_primaries, source) as engine:
        now = engine.now_ms()
        for show in shows:
            await engine.hold(show, ALICE, [1], now)
        lapsed = now + HOLD_MS + 1
        lone_primaries.pause(stopped)
        try:
            assert await engine.sweep(lapsed) == 2
            started = time.monotonic()
            assert await engine.sweep(lapsed) == 0  # none left; the stopped one refused at once
            assert time.monotonic() - started < 0.25
        finally:
            lone_primaries.resume(stopped)
        freed: list[int] = []

        async def swept_the_last() -> bool:
            freed.append(await engine.sweep(lapsed))
            return sum(freed) == 1

        await eventually(swept_the_last)
        states = {s: (await engine.seat_map(s))[0].status for s in shows}
        assert set(states.values()) == {"available"}, states


async def test_screenings_load_and_are_swept_while_the_list_of_loaded_ones_does_not_answer(
    lone_primaries: LocalCluster,
) -> None:
    """The list of loaded screenings is one key, on one primary. With that primary stopped, a
    screening of another primary still loads (it is listed once the list answers again) and the
    sweep walks this process's last read of the list (a load failed after one timeout, and every
    sweep failed)."""
    lone_primaries.flush()
    stopped = port_of(lone_primaries, keys.LOADED_SCREENINGS)
    shows = off_the_list(lone_primaries)
    fresh = off_the_list(lone_primaries, 2000)[0]
    source = DictSource()
    for show in [*shows, fresh]:
        source.add(show, [1, 2])
    async with engine_on(lone_primaries, source) as engine:
        now = engine.now_ms()
        for show in shows:
            await engine.hold(show, ALICE, [1], now)
        assert await engine.sweep(now) == 0  # it reads the list: these two screenings
        lone_primaries.pause(stopped)
        try:
            held = await engine.hold(fresh, ALICE, [1], now)
            assert [h.seat_id for h in held] == [1]
            assert await engine.sweep(now + HOLD_MS + 1) == 3
        finally:
            lone_primaries.resume(stopped)

        async def listed() -> bool:
            return fresh in await engine.loaded_screenings()

        await eventually(listed)
        assert await engine.loaded_screenings() == sorted([*shows, fresh])


async def test_the_reconciler_repairs_the_other_primaries_while_one_does_not_answer(
    lone_primaries: LocalCluster, db: asyncpg.Connection, backend_urls: tuple[str, str]
) -> None:
    """A pass skips the screenings of a stopped primary and repairs the others (one such
    screening failed every pass, in every process, for as long as the node hung)."""
    lone_primaries.flush()
    stopped = lone_primaries.primary_ports[1]
    shows = await shows_on_every_primary(db, lone_primaries)
    buyer = await make.buyer(db)
    pool = await asyncpg.create_pool(backend_urls[1], min_size=1, max_size=2)
    try:
        async with engine_on(lone_primaries, Layouts(pool)) as engine:
            for show in shows:
                await engine.seat_map(show.id)  # loaded, nothing sold
                # A ticket sold behind Redis's back a minute ago: each pass must mark it sold.
                ago = datetime.now(UTC) - timedelta(minutes=1)
                await make.ticket(db, buyer, show.id, show.seat_ids[0], at=ago)
            reconciler = Reconciler(engine, pool, interval_s=30)
            lone_primaries.pause(stopped)
            try:
                assert await reconciler.reconcile() == 2
            finally:
                lone_primaries.resume(stopped)

            async def repaired_the_last() -> bool:
                return await reconciler.reconcile() == 1

            await eventually(repaired_the_last)
            for show in shows:
                assert (await engine.seat_map(show.id))[0].status == "booked"
    finally:
        await pool.close()


async def test_a_stopped_primary_does_not_hold_up_the_other_primaries_calls(
    lone_primaries: LocalCluster,
) -> None:
    """The transport, one primary stopped (SIGSTOP): a call to each primary at once, then more
    calls to the live primaries while the stopped one's waits out the timeout. The live ones are
    answered at once, the stopped one's is an error after its timeout, and so are the calls made
    meanwhile for it, at once after that (they waited in its lane, or on its connection)."""
    metas = [keys.screening_meta(s) for s in one_per_primary(lone_primaries)]
    stopped = lone_primaries.primary_ports[1]
    async with transport_of(lone_primaries, socket_timeout=STALL_S) as transport:
        for meta in metas:  # the slot map, and a connection to every primary
            assert await transport.command("HSET", meta, "lane", "1") == 1
        lone_primaries.pause(stopped)
        try:
            started = time.monotonic()
            held_up = asyncio.ensure_future(transport.command("HGET", metas[1], "lane"))
            for _ in range(5):  # every 0.1 s, a call to each live primary: answered at once
                asked = time.monotonic()
                live = [transport.command("HGET", meta, "lane") for meta in metas[::2]]
                assert await asyncio.gather(*live) == [b"1", b"1"]
                assert time.monotonic() - asked < 0.3
                await asyncio.sleep(0.1)
            assert not held_up.done()
            behind = asyncio.ensure_future(transport.command("HGET", metas[1], "lane"))
            with pytest.raises((RedisConnectionError, RedisTimeoutError)):
                await held_up
            assert time.monotonic() - started >= STALL_S * 0.9
            # Refused by the transport (its lane), or failed with the call it was queued behind
            # on the node's connection of ours: either way at once, not after another timeout.
            with pytest.raises(RedisConnectionError, match=r"is not answering|no reply from Redis"):
                await behind
            assert await transport.command("HGET", metas[0], "lane") == b"1"
        finally:
            lone_primaries.resume(stopped)


async def test_a_lost_primary_fails_only_its_screenings(
    base_settings: Settings, lone_primaries: LocalCluster, db: asyncpg.Connection
) -> None:
    """kill -9 of a primary (the last test of the module: it stays dead). Its calls fail, also
    those sent in one batch with the other primaries' calls, which are answered (one pipeline
    for the batch failed all of it with the lost node's error: in a failover under load, a hold
    on another primary's screening was answered 503); then they are refused at once."""
    metas = [keys.screening_meta(s) for s in one_per_primary(lone_primaries)]
    async with (
        transport_of(lone_primaries) as transport,
        alice_on_every_primary(base_settings, lone_primaries, db) as (client, alice, shows),
    ):
        for meta in metas[::2]:  # the slot map; no connection to the primary killed next
            assert await transport.command("HSET", meta, "probe", "1") == 1
        lost = lone_primaries.primary_ports[1]
        lone_primaries.kill(lost)
        for _ in range(2):  # its connection refused, then its calls refused here
            started = time.monotonic()
            batch = [transport.command("HGET", meta, "probe") for meta in metas]  # one batch
            replies = await asyncio.gather(*batch, return_exceptions=True)
            assert replies[0] == replies[2] == b"1", replies
            assert isinstance(replies[1], RedisConnectionError), replies
            assert time.monotonic() - started < 1.0  # redis-py's default retries took ~5 s
        assert "is not answering" in str(replies[1])
        started = time.monotonic()
        down = await reserve(client, alice, shows[1], shows[1].seat_ids[1:2])
        assert time.monotonic() - started < 2  # two quick retries at most, then 503
        assert down.status_code == 503, down.text
        assert down.headers["Retry-After"]
        assert down.json() == {"detail": "Seat service temporarily unavailable"}
        for show in (shows[0], shows[2]):
            r = await reserve(client, alice, show, show.seat_ids[1:2])
            assert r.status_code == 201, r.text
