"""Resharding: a screening's slot moves to another primary while watchers are connected and its
seats keep changing (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE a few keys at a time, SETSLOT
NODE on every node), as ``redis-cli --cluster reshard`` does it.

The engine keeps working through it (redis-py follows ASK and retries TRYAGAIN, which a script
whose keys are half moved gets), and on both pub/sub paths the watchers miss nothing: the hub
hands on the events in version order, none twice, and where one could not reach it (sharded: the
slot left the node its channel was on, and events published on the new owner before the hub
subscribed there are lost) the screening's whole map follows; every watcher ends with the map
Redis has. Each path gets a cluster of its own (3 primaries, no replicas), since it moves a slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from seatlock import keys
from seatlock.engine.cluster import ClusterTransport
from seatlock.engine.events import Hub, Watcher
from seatlock.engine.seats import SeatEngine
from seatlock.errors import Unavailable
from seatlock.server.localcluster import LocalCluster
from seatlock.server.redisnodes import redis_servers, scratch_root
from tests.cluster.conftest import EVENT_PATHS, Spares, event_path, server_for, transport_of
from tests.lua.support import DictSource, make_engine, wait_until

SHOW = 1000
SEATS = list(range(1, 13))
USERS = (7, 8)
BATCH = 3  # keys per MIGRATE: a script may find its keys split between the nodes (TRYAGAIN)


@pytest.fixture(params=EVENT_PATHS)
def moving_cluster(
    request: pytest.FixtureRequest, spare_clusters: Spares
) -> Iterator[LocalCluster]:
    server_for(request.param)  # skips the test when this machine lacks the binary
    with spare_clusters.lend(request, resharding_cluster) as cluster:
        yield cluster


def resharding_cluster(path: object) -> LocalCluster:
    root = scratch_root("seatlock-cluster-reshard-")
    return LocalCluster(root, replicas_each=0, server=redis_servers()[str(path)]).start()


@pytest.fixture
async def mtransport(moving_cluster: LocalCluster) -> AsyncIterator[ClusterTransport]:
    async with transport_of(moving_cluster) as transport:
        yield transport


def migrate_slot(cluster: LocalCluster, slot: int, source: int, target: int) -> None:
    """Move ``slot`` and its keys from the primary on ``source`` to the one on ``target``,
    pausing between steps so that changes are made in each state of the migration."""
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    with cluster.client(target) as node:
        node.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
    with cluster.client(source) as node:
        node.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        while names := node.execute_command("CLUSTER GETKEYSINSLOT", slot, BATCH):
            node.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *names)
            time.sleep(0.05)
    for port in [target, source] + [p for p in cluster.primary_ports if p not in (source, target)]:
        with cluster.client(port) as node:
            node.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)


async def change_seats(engine: SeatEngine, stop: asyncio.Event) -> int:
    """Hold and release seats in turn until ``stop``; how many changes were made. Every call
    must succeed: a migration may slow the engine down, never refuse it."""
    made = 0
    while not stop.is_set():
        seat, user = SEATS[made % len(SEATS)], USERS[made % len(USERS)]
        try:
            await engine.hold(SHOW, user, [seat])
            if made % 3:  # leave some held
                await engine.release(SHOW, user, [seat])
        except Unavailable as exc:  # pragma: no cover - the failure this test is about
            raise AssertionError(f"a change refused during the migration: {exc}") from exc
        made += 1
        await asyncio.sleep(0.005)
    return made


def view_of(watcher: Watcher) -> tuple[dict[int, str], int]:
    """The seat statuses a watcher's messages leave it with, and how many whole maps it got."""
    seats: dict[int, str] = {}
    maps = 0
    while not watcher.queue.empty():
        message: dict[str, Any] = orjson.loads(watcher.queue.get_nowait())
        updates = message.get("updates") or [message]
        maps += len(updates) == len(SEATS)
        for update in updates:
            seats[update["seat_id"]] = update["status"]
    return seats, maps


async def test_watchers_miss_no_change_while_the_slot_moves(
    moving_cluster: LocalCluster, mtransport: ClusterTransport
) -> None:
    source = DictSource()
    source.add(SHOW, SEATS)
    engine = make_engine(mtransport, source)
    hub = Hub(mtransport, engine.seat_map)
    versions: list[int] = []
    hub.event_listeners.append(lambda _, event: versions.append(event["version"]))
    stop = asyncio.Event()
    running = asyncio.create_task(hub.run(stop))
    try:
        await asyncio.wait_for(hub.ready.wait(), 5)
        await engine.seat_map(SHOW)  # loads the screening
        watchers = []
        for user in (None, *USERS):
            await asyncio.wait_for(hub.subscribed(SHOW), 5)  # as the WebSocket endpoint does
            watchers.append(hub.join(SHOW, user))
        await wait_until(lambda: hub.hears(SHOW) is not None)
        slot = moving_cluster.keyslot(keys.screening_meta(SHOW))
        origin = moving_cluster.port_of_slot(slot)
        target = next(p for p in moving_cluster.primary_ports if p != origin)

        flowing = asyncio.Event()
        changes = asyncio.create_task(change_seats(engine, flowing))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(migrate_slot, moving_cluster, slot, origin, target)
        # Every node names the target once the SETSLOT NODEs have reached them all.
        await wait_until(lambda: moving_cluster.primary_of_slot(slot) == target, 5)
        await asyncio.sleep(0.5)  # changes on the new owner
        flowing.set()
        made = await changes
        assert made > 20

        if event_path(moving_cluster) == "sharded":  # the hub followed the channel
            await wait_until(lambda: shard_subscribers(moving_cluster, target) == 1, 5)
        final = {s.seat_id: s.status for s in await engine.seat_map(SHOW)}
        await asyncio.sleep(0.5)  # the last events and resyncs arrive
        assert versions == sorted(set(versions)), "events reordered or repeated"
        for watcher in watchers:
            seen, maps = view_of(watcher)  # a seat never mentioned is still available
            assert {seat: seen.get(seat, "available") for seat in SEATS} == final
            missed = len(versions) < versions[-1] - versions[0] + 1
            assert not missed or maps, "events missed and no map sent to repair them"
    finally:
        stop.set()
        await running


def shard_subscribers(cluster: LocalCluster, port: int) -> int:
    with cluster.client(port) as node:
        reply = node.execute_command("PUBSUB", "SHARDNUMSUB", keys.screening_events(SHOW))
    return int(reply[1])
