"""The engine on a real Redis Cluster through the cluster transport: screenings on every primary,
races across processes, expiry by listener and by sweep, events to watchers."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio.cluster import RedisCluster

from seatlock import keys
from seatlock.engine.cluster import ClusterTransport
from seatlock.engine.deadlines import Deadlines
from seatlock.engine.errors import SeatsUnavailable
from seatlock.engine.events import Hub
from seatlock.engine.expiry import (
    enable_keyspace_events,
    free_at_deadlines,
    listen_for_expiries,
)
from seatlock.engine.transport import open_transport
from seatlock.errors import Unavailable
from seatlock.metrics import SCRIPT_SAMPLE
from seatlock.server.localcluster import LocalCluster
from tests.cluster.conftest import on_both_event_paths, one_per_primary
from tests.lua.support import DictSource, make_engine, now_ms, wait_until

ALICE, BOB = 7, 8
TIMED = "seatlock_redis_script_duration_seconds_count"  # seatlock/metrics.py SCRIPT_SECONDS


@pytest.fixture
def shows(empty_cluster: LocalCluster) -> list[int]:
    return one_per_primary(empty_cluster)


@pytest.fixture
def source(shows: list[int]) -> DictSource:
    src = DictSource()
    for screening_id in shows:
        src.add(screening_id, [1, 2, 3, 4])
    return src


def test_the_screenings_live_on_three_different_primaries(
    empty_cluster: LocalCluster, shows: list[int]
) -> None:
    ports = {
        empty_cluster.port_of_slot(empty_cluster.keyslot(keys.screening_meta(s))) for s in shows
    }
    assert ports == set(empty_cluster.primary_ports)
    for screening_id in shows:  # every key a script gets shares the screening's slot
        slots = {empty_cluster.keyslot(k) for k in keys.script_keys(screening_id, [1, 2])}
        assert len(slots) == 1


async def test_open_transport_picks_the_cluster_transport(cluster_redis: RedisCluster) -> None:
    for kind in ("fast", "redis-py"):
        transport = open_transport(kind, cluster_redis)
        assert isinstance(transport, ClusterTransport)
        assert transport.wired == (kind == "fast")  # its calls on connections of ours
        await transport.aclose()


async def test_hold_extend_release_claim_and_sell_on_every_primary(
    ctransport: ClusterTransport, source: DictSource, shows: list[int]
) -> None:
    engine = make_engine(ctransport, source)
    for s in shows:
        held = await engine.hold(s, ALICE, [1, 2])
        assert [h.seat_id for h in held] == [1, 2]
        with pytest.raises(SeatsUnavailable):
            await engine.hold(s, BOB, [2, 3])
        extended = await engine.extend(s, ALICE, [1, 2], 60_000)
        assert all(e.expires_at_ms > h.expires_at_ms for e, h in zip(extended, held, strict=True))
        assert await engine.release(s, ALICE, [2]) == [2]
        await engine.claim(s, ALICE, [1])
        await engine.sell(s, {1: ALICE})
        states = {st.seat_id: st.status for st in await engine.seat_map(s)}
        assert states == {1: "booked", 2: "available", 3: "available", 4: "available"}
    assert await engine.loaded_screenings() == sorted(shows)


async def test_script_calls_are_timed_for_the_metrics(
    ctransport: ClusterTransport, source: DictSource, shows: list[int]
) -> None:
    def timed() -> float:
        labels = {"script": "hold"}
        return REGISTRY.get_sample_value(TIMED, labels) or 0.0

    engine = make_engine(ctransport, source)
    before = timed()
    for _ in range(3 * SCRIPT_SAMPLE):  # the screening's load, then holds: 1 call in 16 timed
        await engine.hold(shows[0], ALICE, [1])
    assert timed() - before >= 2


async def test_one_winner_per_seat_when_processes_race_on_every_primary(
    cluster_redis: RedisCluster,
    cluster_transports: list[ClusterTransport],
    source: DictSource,
    shows: list[int],
) -> None:
    engines = []
    for _ in range(4):  # four processes, each with its own transport
        cluster_transports.append(ClusterTransport.like(cluster_redis))
        engines.append(make_engine(cluster_transports[-1], source))

    async def attempt(engine: Any, screening_id: int, user: int) -> int | None:
        try:
            await engine.hold(screening_id, user, [1, 2])
        except SeatsUnavailable:
            return None
        return user

    tries = [
        attempt(engine, s, 100 + 10 * i + j)
        for s in shows
        for i, engine in enumerate(engines)
        for j in range(5)
    ]
    winners = [w for w in await asyncio.gather(*tries) if w is not None]
    assert len(winners) == len(shows)  # exactly one per screening
    for s in shows:
        held = {st.user_id for st in await engines[0].seat_map(s) if st.status == "reserved"}
        assert len(held) == 1 and held <= set(winners)


async def test_expiries_on_every_primary_reach_the_listener(
    ctransport: ClusterTransport, source: DictSource, shows: list[int]
) -> None:
    assert await enable_keyspace_events(ctransport)
    engine = make_engine(ctransport, source, hold_ms=300)
    hub = Hub(ctransport)
    watchers = [hub.join(s, None) for s in shows]
    stop = asyncio.Event()
    loops = [asyncio.create_task(hub.run(stop))]
    await asyncio.wait_for(hub.ready.wait(), 5)
    await wait_until(lambda: hub.live)
    loops.append(asyncio.create_task(listen_for_expiries(engine, ctransport, stop)))
    await asyncio.sleep(0.3)  # the listener subscribes on every primary
    try:
        for s in shows:
            await engine.hold(s, ALICE, [3])
        for watcher in watchers:
            await _wait_for(watcher.queue, "reserved")
            # The lease expires (Redis's own expiry, no sweep runs here) and the listener frees it.
            await _wait_for(watcher.queue, "available", within=4.0)
        for s in shows:
            assert (await engine.seat_map(s))[2].status == "available"
            assert await ctransport.command("ZCARD", keys.screening_deadlines(s)) == 0
    finally:
        stop.set()
        await asyncio.gather(*loops)


def publishes_expiries(cluster: LocalCluster, port: int) -> bool:
    with cluster.client(port) as node:
        flags = node.config_get("notify-keyspace-events")
    value = flags.get("notify-keyspace-events") or flags.get(b"notify-keyspace-events") or b""
    text = value.decode() if isinstance(value, bytes) else str(value)
    return "E" in text and ("x" in text or "A" in text)


async def test_the_listener_tells_every_primary_it_subscribes_to_to_publish_expiries(
    empty_cluster: LocalCluster,
    ctransport: ClusterTransport,
    source: DictSource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The primaries it subscribes on are the ones told to publish expiries. A failover between
    two readings of the slot map (the first still naming the lost primary, the second its
    promoted replica) once left that replica subscribed to but silent: only the sweep freed its
    expired holds. Here the first reading misses a primary, as a stale map would."""
    ports = empty_cluster.primary_ports
    for port in ports:
        with empty_cluster.client(port) as node:
            node.config_set("notify-keyspace-events", "")
    real = ctransport.primaries
    readings = 0

    async def primaries() -> list[Any]:
        nonlocal readings
        readings += 1
        found = await real()
        return found[1:] if readings == 1 else found  # the first reading is stale

    monkeypatch.setattr(ctransport, "primaries", primaries)
    engine = make_engine(ctransport, source)
    stop = asyncio.Event()
    listener = asyncio.create_task(listen_for_expiries(engine, ctransport, stop))
    try:
        # The stale feed is replaced once the listener sees the primaries changed (TOPOLOGY_S).
        await wait_until(lambda: all(publishes_expiries(empty_cluster, p) for p in ports), 6.0)
    finally:
        stop.set()
        await listener
        assert await enable_keyspace_events(ctransport)  # as the other tests expect the cluster


async def test_the_sweep_frees_expired_holds_on_every_primary(
    ctransport: ClusterTransport, source: DictSource, shows: list[int]
) -> None:
    engine = make_engine(ctransport, source)
    start = now_ms()
    for s in shows:
        await engine.hold(s, ALICE, [1, 4], now_ms=start)
    assert await engine.sweep(now_ms=start + 301_000) == 2 * len(shows)
    for s in shows:
        assert {st.status for st in await engine.seat_map(s, now_ms=start + 301_000)} == {
            "available"
        }


async def test_the_deadline_timers_free_holds_on_every_primary(
    ctransport: ClusterTransport, source: DictSource, shows: list[int]
) -> None:
    engine = make_engine(ctransport, source, hold_ms=300)
    deadlines, stop = Deadlines(), asyncio.Event()
    task = asyncio.create_task(free_at_deadlines(engine, deadlines, stop))
    try:
        await asyncio.sleep(0)
        for s in shows:
            await engine.hold(s, ALICE, [1, 4])

        # No listener, no sweep: the timers alone drop the holds (reads never show a lapsed one).
        for _ in range(200):
            held = [await ctransport.command("HLEN", keys.screening_holds(s)) for s in shows]
            if held == [0] * len(shows):
                break
            await asyncio.sleep(0.01)
        assert held == [0] * len(shows)
        assert len(deadlines) == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 2)


@on_both_event_paths
async def test_events_of_every_primary_reach_watchers_in_order(
    ctransport: ClusterTransport, source: DictSource, shows: list[int]
) -> None:
    engine = make_engine(ctransport, source)
    hub = Hub(ctransport)
    watchers = [hub.join(s, ALICE) for s in shows]
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop))
    try:
        await asyncio.wait_for(hub.ready.wait(), 5)
        # Sharded pub/sub: each screening's channel subscribed on its own primary.
        await wait_until(lambda: all(hub.hears(s) is not None for s in shows))
        for s in shows:
            await engine.hold(s, ALICE, [2])
            await engine.release(s, ALICE, [2])
            await engine.hold(s, ALICE, [2])
        for watcher in watchers:
            got = [await _wait_for(watcher.queue, status) for status in ("reserved", "available")]
            assert got[0]["reserved_by"] == ALICE
            await _wait_for(watcher.queue, "reserved")
    finally:
        stop.set()
        await task


async def test_scripts_are_loaded_again_after_a_script_flush(
    ctransport: ClusterTransport, source: DictSource, shows: list[int]
) -> None:
    engine = make_engine(ctransport, source)
    await engine.hold(shows[0], ALICE, [1])
    await ctransport.on_primaries("SCRIPT", "FLUSH")
    for s in shows:
        assert [h.seat_id for h in await engine.hold(s, BOB, [2])] == [2]


async def test_an_unreachable_cluster_is_unavailable(source: DictSource) -> None:
    dead = RedisCluster(host="127.0.0.1", port=1)  # nothing listens there
    transport = ClusterTransport.like(dead)
    try:
        with pytest.raises(Unavailable):
            await make_engine(transport, source).hold(1000, ALICE, [1])
    finally:
        await transport.aclose()
        await dead.aclose()


async def _wait_for(queue: asyncio.Queue[str], status: str, within: float = 3.0) -> dict[str, Any]:
    import orjson

    async with asyncio.timeout(within):
        while True:
            message: dict[str, Any] = orjson.loads(await queue.get())
            if message.get("status") == status:
                return message


async def test_resume_replays_from_the_log_on_every_primary(
    ctransport: ClusterTransport, source: DictSource, shows: list[int]
) -> None:
    """The event log lives with its screening (its slot): a resume reads it in one script run,
    and a watch (which keeps the log) runs there too."""
    engine = make_engine(ctransport, source)
    for s in shows:
        await engine.seat_map(s)
        assert await engine.watch(s, 60_000) is True
        since = await engine.version(s)
        await engine.hold(s, ALICE, [1])
        await engine.release(s, ALICE, [1])
        resumed = await engine.resume(s, since)
        assert resumed.version == since + 2
        assert [orjson.loads(e)["version"] for e in resumed.events or ()] == [since + 1, since + 2]
        assert (await engine.resume(s, since - 1)).events is None  # before the load: a map
