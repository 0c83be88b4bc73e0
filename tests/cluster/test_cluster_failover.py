"""Failover: a primary killed (kill -9) or stepping down (CLUSTER FAILOVER on its replica).

Afterwards holds on its screenings work again within seconds (the slot map is refreshed, the
scripts loaded again on the promoted replica after its NOSCRIPT), the event hub keeps delivering
those screenings' events (also when the node it listened on died), and the expiry listener
follows the new primary: an expiry there reaches watchers through the listener, with no sweep
running. Each test has a cluster of its own (nodes declared failed after 1 s), since it changes
the topology; keyspace notifications start off on every node, so the listener must enable them
on a promoted replica itself (CONFIG SET is not replicated).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from seatlock import keys
from seatlock.engine.cluster import ClusterTransport
from seatlock.engine.events import Hub
from seatlock.engine.expiry import enable_keyspace_events, listen_for_expiries
from seatlock.engine.seats import SeatEngine
from seatlock.errors import Unavailable
from seatlock.server.localcluster import LocalCluster
from seatlock.server.redisnodes import redis_servers, scratch_root
from seatlock.settings import Settings
from tests.cluster.conftest import (
    EVENT_PATHS,
    Spares,
    one_per_primary,
    server_for,
    transport_of,
)
from tests.cluster.test_cluster_api import shows_on_every_primary
from tests.lua.support import DictSource, make_engine, wait_until
from tests.support import LiveServer, make_account, reserve

ALICE = 7
# The 503 details of a Redis that cannot answer: the engine's, or the app's (api/errors.py).
UNAVAILABLE = ("Seat service temporarily unavailable", "Service temporarily unavailable")
RECOVERY_S = 15.0  # a failover takes about 2 s here (node timeout 1 s); room for a busy machine


@pytest.fixture(params=EVENT_PATHS)
def failing_cluster(
    request: pytest.FixtureRequest, spare_clusters: Spares
) -> Iterator[LocalCluster]:
    """A cluster of its own, of one event path's binary (classic PUBLISH, sharded SPUBLISH)."""
    server_for(request.param)  # skips the test when this machine lacks the binary
    with spare_clusters.lend(request, failover_cluster) as cluster:
        for port in cluster.ports:  # as a server that was never configured for notifications
            with cluster.client(port) as node:
                node.config_set("notify-keyspace-events", "")
        yield cluster


def failover_cluster(path: object) -> LocalCluster:
    root = scratch_root("seatlock-cluster-failover-")
    server = redis_servers()[str(path)]
    return LocalCluster(root, node_timeout_ms=1000, server=server).start()


@pytest.fixture
async def ftransport(failing_cluster: LocalCluster) -> AsyncIterator[ClusterTransport]:
    async with transport_of(failing_cluster) as transport:
        yield transport


class Watching:
    """An engine, a hub with a watcher per screening, and the expiry listener (no sweep)."""

    def __init__(self, transport: ClusterTransport, shows: list[int]) -> None:
        source = DictSource()
        for screening_id in shows:
            source.add(screening_id, list(range(1, 21)))
        self.engine = make_engine(transport, source)
        self.short = make_engine(transport, source, hold_ms=600)  # holds that expire soon
        # With the seat map to resync from, as the app builds it (seatlock/server/wiring.py).
        self.hub = Hub(transport, self.engine.seat_map)
        self.watchers = {s: self.hub.join(s, None) for s in shows}
        self.stop = asyncio.Event()
        self.loops: list[asyncio.Task[None]] = []
        self.transport = transport

    async def start(self, cluster: LocalCluster) -> None:
        assert await enable_keyspace_events(self.transport)
        self.loops.append(asyncio.create_task(self.hub.run(self.stop)))
        await asyncio.wait_for(self.hub.ready.wait(), 5)
        await wait_until(lambda: self.hub.live)
        expiries = listen_for_expiries(self.engine, self.transport, self.stop)
        self.loops.append(asyncio.create_task(expiries))
        listening = cluster.primary_ports  # the listener subscribes on every primary
        await wait_for(lambda: all(expiries_heard_on(cluster, p) for p in listening), 5.0)

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.loops)


@pytest.fixture
async def watching(
    ftransport: ClusterTransport, failing_cluster: LocalCluster
) -> AsyncIterator[Watching]:
    w = Watching(ftransport, one_per_primary(failing_cluster))
    await w.start(failing_cluster)
    yield w
    await w.close()


@pytest.mark.parametrize("how", ["kill", "step down"])
async def test_holds_events_and_expiries_follow_a_new_primary(
    how: str, failing_cluster: LocalCluster, watching: Watching
) -> None:
    shows = list(watching.watchers)  # one per primary, in the order of primary_ports
    # The primary the hub's pattern subscription is on, or whose replica it is on: the hub
    # loses its node, or listens on the replica while it is promoted. (With sharded pub/sub the
    # screening's channel is on the killed primary itself.)
    hub = hub_node(failing_cluster)
    index = next(
        i
        for i, port in enumerate(failing_cluster.primary_ports)
        if hub in (port, failing_cluster.replica_of(port))
    )
    show = shows[index]
    await watching.engine.hold(show, ALICE, [1])
    await seat_becomes(watching, show, 1, "reserved")
    lost = failing_cluster.primary_ports[index]
    replica = failing_cluster.replica_of(lost)
    slot = slot_of(failing_cluster, show)  # asked before any node is gone
    with failing_cluster.client(replica) as node:
        node.script_flush()  # the promoted replica has none of our scripts: NOSCRIPT, reload
    started = time.monotonic()
    if how == "kill":
        failing_cluster.kill(lost)
    else:
        with failing_cluster.client(replica) as node:
            node.execute_command("CLUSTER FAILOVER")
    await hold_within(watching.engine, show, 2, RECOVERY_S)
    took = time.monotonic() - started
    assert failing_cluster.wait_for_new_primary(slot, lost) == replica
    await seat_becomes(watching, show, 2, "reserved")
    # The listener follows: keyspace notifications enabled on the promoted replica, subscribed.
    await wait_for(lambda: notifications_on(failing_cluster, replica), RECOVERY_S)
    # The listener subscribes there right after (every 2 s it compares the primaries).
    await wait_for(lambda: expiries_heard_on(failing_cluster, replica), RECOVERY_S)
    by_listener = expiries("listener")
    await watching.short.hold(show, ALICE, [3])
    await seat_becomes(watching, show, 3, "reserved")
    await seat_becomes(watching, show, 3, "available", within=5.0)
    # Counted once the listener has the expire script's reply (the event may come first).
    await wait_for(lambda: expiries("listener") >= by_listener + 1, 3.0)
    for other in shows[:index] + shows[index + 1 :]:  # the other primaries' never stopped
        await watching.engine.hold(other, ALICE, [4])
        await seat_becomes(watching, other, 4, "reserved")
    assert took < RECOVERY_S
    # The node that no longer serves slots (killed, or a replica now) keeps no connection of
    # ours: the listener's look at the primaries lets it go.
    transport = watching.transport
    assert f"127.0.0.1:{replica}" in transport.wired_nodes
    await wait_for(lambda: f"127.0.0.1:{lost}" not in transport.wired_nodes, RECOVERY_S)


async def test_the_hub_resubscribes_when_the_node_it_listens_on_dies(
    failing_cluster: LocalCluster, watching: Watching
) -> None:
    listening = hub_node(failing_cluster)
    epoch = watching.hub.epoch
    failing_cluster.kill(listening)
    await wait_for(lambda: watching.hub.live and watching.hub.epoch > epoch, RECOVERY_S)
    assert hub_node(failing_cluster) != listening
    for seat, show in enumerate(watching.watchers, start=5):  # a failover too, if a primary
        await hold_within(watching.engine, show, seat, RECOVERY_S)
        await seat_becomes(watching, show, seat, "reserved")


async def test_the_api_answers_503_never_500_while_a_primary_fails_over(
    base_settings: Settings, failing_cluster: LocalCluster, db: asyncpg.Connection
) -> None:
    live = LiveServer(base_settings.replace(redis_url=failing_cluster.url))
    live.start()
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            alice = await make_account(client, "alice@example.com", "Alice Example")
            shows = await shows_on_every_primary(db, failing_cluster)
            failing_cluster.kill(failing_cluster.primary_ports[1])
            deadline = time.monotonic() + RECOVERY_S
            refused: list[httpx.Response] = []
            # Until the failover, the primary's calls are refused at once: one seat, asked
            # again (a refusal changes nothing), as many times as the failover takes.
            seat = shows[1].seat_ids[:1]
            while (r := await reserve(client, alice, shows[1], seat)).status_code != 201:
                refused.append(r)
                assert time.monotonic() < deadline, [x.text for x in refused]
                await asyncio.sleep(0.2)
            for r in refused:
                assert r.status_code == 503, r.text
                assert r.headers["Retry-After"]
                # the engine's own, or the app's for a Redis call elsewhere in the request
                assert r.json()["detail"] in UNAVAILABLE, r.text
            for show in (shows[0], shows[2]):
                r = await reserve(client, alice, show, show.seat_ids[:1])
                assert r.status_code == 201, r.text
    finally:
        live.stop()


async def hold_within(engine: SeatEngine, show: int, seat: int, seconds: float) -> None:
    """Hold one seat, retrying while the cluster answers Unavailable (503)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            await engine.hold(show, ALICE, [seat])
            return
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def seat_becomes(
    watching: Watching, show: int, seat: int, status: str, within: float = RECOVERY_S
) -> None:
    """Read the screening's watcher until ``seat`` is reported in ``status`` (a seat update or
    the whole map a resubscribed hub resyncs)."""
    queue = watching.watchers[show].queue
    async with asyncio.timeout(within):
        while True:
            message: dict[str, Any] = orjson.loads(await queue.get())
            updates = message.get("updates") or [message]
            if any(u.get("seat_id") == seat and u.get("status") == status for u in updates):
                return


def probes_running() -> list[asyncio.Task[Any]]:
    """The tasks asking a server that did not answer whether it answers again (FailFast)."""
    return [task for task in asyncio.all_tasks() if "_until_answered" in repr(task)]


async def wait_for(check: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


def slot_of(cluster: LocalCluster, show: int) -> int:
    return cluster.keyslot(keys.screening_meta(show))


def notifications_on(cluster: LocalCluster, port: int) -> bool:
    with cluster.client(port) as node:
        flags = node.config_get("notify-keyspace-events")
    value = flags.get(b"notify-keyspace-events", b"") if isinstance(flags, dict) else flags[1]
    text = value.decode() if isinstance(value, bytes) else str(value)
    return "E" in text and ("x" in text or "A" in text)


def expiries_heard_on(cluster: LocalCluster, port: int) -> bool:
    """Whether a client subscribes to the node's expired-key events (the expiry listener)."""
    with cluster.client(port) as node:
        counts = node.execute_command("PUBSUB", "NUMSUB", "__keyevent@0__:expired")
    return int(counts[1]) > 0


def hub_node(cluster: LocalCluster) -> int:
    """The port of the node holding the hub's pattern subscription."""
    for port in cluster.live_ports():
        with cluster.client(port) as node:
            clients = node.execute_command("CLIENT LIST")
        text = clients.decode() if isinstance(clients, bytes) else str(clients)
        if "psub=1" in text:
            return port
    raise LookupError("no node has the hub's subscription")


def expiries(by: str) -> float:
    value = REGISTRY.get_sample_value("seatlock_hold_expiries_total", {"source": by})
    return value or 0.0


async def test_a_hung_primary_that_its_replica_replaced_hands_its_screenings_over(
    failing_cluster: LocalCluster,
) -> None:
    """A primary hangs (SIGSTOP) and stays hung while its replica takes its slots over: once
    the transport's probe finds the node no longer a primary, the slot map is read again and
    the node's screenings are held on the new primary. (Its connection of ours refuses calls at
    once while the node does not answer, so redis-py never met the node gone and kept the old
    map: the screenings stayed refused for as long as the node hung.)"""
    shows = one_per_primary(failing_cluster)
    source = DictSource()
    for show in shows:
        source.add(show, [1, 2, 3])
    show = shows[1]
    hung = failing_cluster.port_of_slot(failing_cluster.keyslot(keys.screening_meta(show)))
    async with transport_of(failing_cluster, socket_timeout=0.5) as transport:
        assert transport.wired
        engine = make_engine(transport, source)
        for each in shows:  # loaded, and the slot map read
            await engine.hold(each, ALICE, [1])
        hung_node = f"127.0.0.1:{hung}"
        assert hung_node in transport.wired_nodes
        failing_cluster.pause(hung)
        try:
            deadline = time.monotonic() + RECOVERY_S
            held: list[int] = []
            while not held and time.monotonic() < deadline:
                try:
                    held = [h.seat_id for h in await engine.hold(show, ALICE, [2])]
                except Unavailable:  # the node's timeout, then refused until the failover
                    await asyncio.sleep(0.1)
            assert held == [2]
            # The other primaries were served all along, and still are.
            assert [h.seat_id for h in await engine.hold(shows[0], ALICE, [2])] == [2]
            # Our connection to the hung node is let go, and its probe with it: nothing goes on
            # asking the node (a probe once a second, for as long as the process lived).
            assert hung_node not in transport.wired_nodes
            await wait_for(lambda: not probes_running(), 5.0)  # cancelled, they end at once
        finally:
            failing_cluster.resume(hung)
