"""The Redis Cluster transport (``SEATLOCK_REDIS_URL=redis+cluster://...``): redis-py's public
``RedisCluster`` API for the slot map, redirects and failovers.

Calls are batched like the redis-py transport's (the lanes of ``seatlock.engine.batching``), with
a lane per primary: a call goes in the lane of the primary of its slot (the slot of its first key,
as the slot map has it when the call is made), and each lane sends the calls made in one
event-loop iteration together, a batch only after the one before it was answered; so the calls of
one process reach each node in the order they were made, and the lanes do not wait for one
another. Every key of a screening script shares the screening's hash tag (seatlock/keys.py), so a
script runs on the primary of the screening's slot, and its events are published in order.

With ``SEATLOCK_REDIS_TRANSPORT=fast`` (``wired``, the default) a call whose node is known goes
straight to a connection of ours to that primary instead (``_direct``), the fast transport's
(``seatlock.engine.wire``: the calls of a loop iteration in one write, hiredis, NOSCRIPT sent again
as EVAL, its own watchdog and fail-fast), one per node, which keeps each node's calls in the order
they were made just as well; a node found serving no slots any more (by its probe, or by the expiry
listener's looks at the primaries, ``follows``: missing from two in a row) loses it. The lanes
carry the rest: calls made before the slot map and the catalogue are known, and a call its
connection could not serve, sent again through its node's lane: answered MOVED, ASK, CLUSTERDOWN,
READONLY or TRYAGAIN, or its connection refused or lost while the node still counted as answering.
A lane's batch goes out on the connections of ours too (``_send_wired``); what only the cluster
client can do (follow a redirect, refresh the slot map, retry after a lost connection) goes in
redis-py's cluster pipeline, by the call's keys. With ``redis-py`` every call goes through the
lanes and every batch in a non-transactional ``ClusterPipeline``, redis-py's public API only. The
pipeline's per-call work in Python was most of the cluster's extra CPU per hold: in the same turns
of ``seatlock bench`` (three runs) the engine process spent 98-141 us per hold with it, 55-77 us
with the connections of ours and 47-73 us on one Redis.

A primary that stops answering (hung, or cut off without a reset) costs its lane's batch in flight
one socket timeout; one that is gone (killed: its connection lost, a new one refused) redis-py's
retries (RETRIES, ~0.1 s; on our connections, the refusal, then those retries). Either way its
calls get the error as their reply, and so do the calls made meanwhile, which waited in its lane
or on its connection; the other primaries' calls go on as before. From then on the calls bound
for it fail at once, a 503 with Retry-After, until a PING of the node has an answer or the node
no longer serves slots (a failover moved them), as the fast transport does for a single Redis
(seatlock/failfast.py). A batch waits at most BATCH_BOUND socket timeouts: redis-py retries a
pipeline that failed as a whole, refreshing the slot map in between, and one stopped primary held
its calls ~30 s a batch with a 2 s timeout. redis-py follows MOVED and ASK (a call whose slot
moved after it was made is sent again by its keys), retries TRYAGAIN and refreshes the slot map;
after a lost connection it may send a call again (its outcome was unknown).

Scripts are loaded on every node redis-py knows, replicas too, before their first use, then sent
as EVALSHA; a NOSCRIPT (a node restarted empty, SCRIPT FLUSH) loads them again and resends only
those calls. Loading on the replicas means a promoted one has them even while redis-py's slot
map still names the old primary (loaded on the primaries of that map, the resent call met
NOSCRIPT again on the promoted replica and failed). A connection of ours loads the scripts it
has not run yet at the head of its first write with them (SCRIPT LOAD, then EVALSHA), on
whichever node it reaches.

Calls run with replicas (``SEATLOCK_HOLD_REPLICAS``): WAIT has no key, so the pipeline cannot
route it by slot; it is added once per node after that node's scripts with ``target_nodes`` (the
node of the call's key, as the slot map had it), so it travels in the node's share of the
pipeline, on the connection that carried the scripts, and counts their writes (on our
connections, the node's WAIT follows its calls in the same write). A call redirected meanwhile
(MOVED: its key's node changed) ran elsewhere, so that WAIT does not count it: it is not
confirmed.

Seat events: when every primary runs Redis >= 7 (asked before the first call, and again by
``choose_publish`` when the hub sees the primaries change), the scripts are the SPUBLISH
catalogue (``scripts.source(name, SPUBLISH)``): an event stays on the shard of its screening's
slot, and ``sharded`` tells the hub to SSUBSCRIBE each watched screening's channel on its primary
(seatlock/engine/shards.py). A mixed cluster keeps the PUBLISH catalogue. Either way the choice
is made per catalogue, so a script call pays nothing for it; our connections are made anew with
the new catalogue when it changes.

Pub/sub: a classic PUBLISH, also from inside a script, is forwarded over the cluster bus to
every node, so a subscription on any one node receives every screening's events: it goes to the
first node, in random order, that takes it (a node that died is skipped when the caller
resubscribes). Keyspace notifications are not forwarded: a ``__keyevent@`` channel is subscribed
on every primary of the moment (CLUSTER SLOTS asked of a node, not redis-py's slot map, which
lags until a command meets a moved slot) and the feeds are merged. ``follows`` tells the caller
when such a feed no longer covers every primary (a failover, a new primary, a lost primary that
answers again), so that it subscribes anew; the sweep covers the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Collection, Sequence
from typing import Any

import hiredis
from redis.asyncio import Connection, Redis, SSLConnection
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import PRIMARY
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from seatlock.engine.batching import Batcher, Call, Lane
from seatlock.engine.redispy import CONNECTION_OPTIONS, PubSubFeed
from seatlock.engine.scripts import NAMES, PUBLISH, SPUBLISH, source
from seatlock.engine.shards import Slots, node_redis, slots_of
from seatlock.engine.transport import (
    HEALTH_S,
    Arg,
    Feed,
    OnMessage,
    Replicas,
    ScriptTimer,
    replicated,
    wait_command,
)
from seatlock.engine.wire import FastTransport, client_options
from seatlock.failfast import FailFast
from seatlock.metrics import REDIS_NOT_ANSWERING

logger = logging.getLogger(__name__)
ASK_S = 2.0  # a node asked for the slot map or a subscription answers within this, or is skipped
NODE_LOCAL_CHANNELS = "__key"  # keyspace and keyevent notifications stay on their node
INTERNAL_COMMANDS = ("CLUSTER", "COMMAND")  # what redis-py itself reads through the callbacks
SHARDED_SINCE = (7, 0)  # the first Redis with SPUBLISH / SSUBSCRIBE
MIGRATING_S = 5.0  # a call refused while its slot migrates (TRYAGAIN) is sent again this long
MIGRATING_RETRY_S = 0.05  # and this often
BATCH_BOUND = 1.5  # a batch waits at most this many socket timeouts (see above)
RETRIES = 2  # redis-py's retries of a call that failed on its node (``_retry``)
NOT_ANSWERING = (RedisTimeoutError, RedisConnectionError)  # a call's reply: its node is gone


class ClusterTransport(Batcher[str]):
    """Every call of the process through one ``RedisCluster``: each call on its primary's
    connection of ours (``wired``), the lanes and a cluster pipeline carrying what that cannot
    serve, or every call in the lanes' cluster pipelines (see the module)."""

    db = 0  # a cluster has database 0 only

    def __init__(
        self, client: RedisCluster, options: dict[str, Any] | None = None, *, wired: bool = True
    ) -> None:
        super().__init__()  # _known: the scripts loaded on every primary since the last NOSCRIPT
        self._client = client
        self._options = options or {}  # how to connect to one node (subscriptions)
        self.wired = wired
        self._wires: dict[str, FastTransport] = {}  # by node name (wired)
        self._missing: set[str] = set()  # of those, the ones the last look found serving no slots
        self._scripts = self._catalogue(PUBLISH)
        # Whether the scripts publish with SPUBLISH (every primary runs Redis >= 7); None until
        # the first call asked the primaries.
        self._sharded: bool | None = None
        timeout = self._options.get("socket_timeout")
        self._bound_s = None if timeout is None else BATCH_BOUND * float(timeout)
        self._fail_fast: dict[str, FailFast] = {}  # by node name: those found not answering once
        # Of those, the ones found not answering, until a call finds its probe answered.
        self._down: set[str] = set()
        # A lane per node name (None: calls made with no slot map yet, or to an uncovered
        # slot: routed when sent, ``_send_batch``).
        self._node_lanes: dict[str | None, Lane[str]] = {}
        self._choosing = asyncio.Lock()  # the first batches wait for one choose_publish
        self._timer = ScriptTimer()

    def _call(
        self,
        script: str | None,
        keys: Sequence[str],
        args: Sequence[Arg],
        replicas: Replicas | None = None,
    ) -> Any:
        node = self._node_of_key(_key_of(keys, args))
        if self._down and (refused := self._refused(node)) is not None:
            raise refused
        if self.wired and node is not None and self._sharded is not None:
            return self._direct(script, keys, args, replicas, node)
        return self._in_lane(script, keys, args, replicas, node)

    def _in_lane(
        self,
        script: str | None,
        keys: Sequence[str],
        args: Sequence[Arg],
        replicas: Replicas | None,
        node: ClusterNode | None,
    ) -> asyncio.Future[Any]:
        name = None if node is None else node.name
        lane = self._node_lanes.get(name)
        if lane is None:
            lane = self._node_lanes[name] = Lane()
        return self._enqueue(lane, script, keys, args, replicas, node)

    async def _direct(
        self,
        script: str | None,
        keys: Sequence[str],
        args: Sequence[Arg],
        replicas: Replicas | None,
        node: ClusterNode,
    ) -> Any:
        """A call straight to its node's connection of ours (``wired``, once the catalogue is
        chosen); a reply only the lanes can handle (redirected, migrating, a failed connection
        of a node still answering) sends it again through its node's lane."""
        wire = self._wire_of(node)
        reply = wire.submit(script, keys, args, replicas)  # raises at once: not answering, full
        self.calls += 1
        try:
            return await reply
        except RedisError as exc:
            if _elsewhere(exc, wire.answering) or _migrating(exc):
                return await self._in_lane(script, keys, args, replicas, node)
            if isinstance(exc, NOT_ANSWERING):
                self._not_answering(node)
            raise

    def _lanes(self) -> list[Lane[str]]:
        return list(self._node_lanes.values())

    def _refused(self, node: ClusterNode | None) -> RedisConnectionError | None:
        """The error of a call bound for a node known not to answer, else None."""
        if node is None or node.name not in self._down:
            return None
        if self._fail_fast[node.name].answering:  # a probe had an answer
            self._down.discard(node.name)
            return None
        REDIS_NOT_ANSWERING.inc()
        return RedisConnectionError(f"Redis node {node.name} is not answering")

    def _not_answering(self, node: ClusterNode | None) -> None:
        """The node did not answer (in time, or at all): refuse its calls until it does."""
        if node is None:  # calls redis-py routed: no node of ours to refuse
            return
        name = node.name
        fail_fast = self._fail_fast.get(name)
        if fail_fast is None:
            probe = functools.partial(self._probe, name)
            fail_fast = self._fail_fast[name] = FailFast(f"Redis node {name}", probe, logger)
        fail_fast.timed_out()
        self._down.add(name)

    async def _probe(self, name: str) -> None:
        """An answer to PING from the node, or the node no longer serves slots: then the slot
        map is read again, so its calls go to the primary that took them over. (Left to
        redis-py, the map is read again when a call of its own meets the node gone; a call on
        our connections never reaches redis-py while that connection refuses it at once, and a
        node that stays hung after its failover kept its screenings' calls refused.)"""
        host, _, port = name.rpartition(":")
        node = ClusterNode(host, int(port))
        try:
            async with asyncio.timeout(ASK_S):
                await self._on_node(node, ("PING",))
        except (RedisError, OSError):
            if name in {primary.name for primary in await self.primaries()}:
                raise
            await self._client.nodes_manager.initialize()
            await self._let_go([name])

    @property
    def wired_nodes(self) -> list[str]:
        """The nodes this process has a connection of its own to (``wired``)."""
        return sorted(self._wires)

    async def _let_go(self, names: Collection[str]) -> None:
        """Forget nodes that serve no slots any more (a failover or a resharding took them
        away): close our connections to them, whose probe would otherwise go on asking a node
        that went silent once a second for as long as the process lives. A call for one of
        them later (redis-py's slot map lags) connects again and is redirected."""
        wires = [self._wires.pop(name) for name in names if name in self._wires]
        # No call is refused for them any more; a probe of theirs under way stays known to
        # ``aclose`` (it ends by itself: ``_probe`` finds the node serves no slots).
        self._down.difference_update(names)
        if wires:
            with contextlib.suppress(TimeoutError):  # a close waits for nothing of theirs
                await asyncio.wait_for(asyncio.gather(*(w.aclose() for w in wires)), ASK_S)

    def _catalogue(self, publish: str) -> dict[str, Any]:
        return {name: self._client.register_script(source(name, publish)) for name in NAMES}

    @property
    def sharded(self) -> bool:
        """Whether seat events go out with SPUBLISH (so they are heard with SSUBSCRIBE only)."""
        return bool(self._sharded)

    async def choose_publish(self) -> bool:
        """Publish with SPUBLISH when every primary runs Redis >= 7, else with PUBLISH; True
        when that changed. Primaries that do not answer (failing over) are not counted: the next
        topology change asks again."""
        nodes = await self.primaries()
        replies = await asyncio.gather(
            *(asyncio.wait_for(self._on_node(n, ("INFO", "server")), ASK_S) for n in nodes),
            return_exceptions=True,
        )
        versions = [_version(r) for r in replies if not isinstance(r, BaseException)]
        if not versions:
            return False
        sharded = all(v >= SHARDED_SINCE for v in versions)
        if sharded == self._sharded:
            return False
        changed = self._sharded is not None
        if changed:
            command = SPUBLISH if sharded else PUBLISH
            logger.warning("the cluster changed: seat events now published with %s", command)
        self._sharded = sharded
        self._scripts = self._catalogue(SPUBLISH if sharded else PUBLISH)
        self._known.clear()  # the other catalogue's SHAs: loaded again before their first use
        wires, self._wires = list(self._wires.values()), {}  # made anew with the new catalogue
        await asyncio.gather(*(wire.aclose() for wire in wires))
        return changed

    async def slot_map(self) -> Slots:
        """Every slot range with its primary, as the first node to answer CLUSTER SLOTS says."""
        await self._client.initialize()
        for node in self._askable():
            try:
                reply = await asyncio.wait_for(self._on_node(node, ("CLUSTER", "SLOTS")), ASK_S)
            except (RedisError, OSError, TimeoutError):
                continue  # a node down or in the middle of a failover: ask another
            return slots_of(reply, node.host)
        raise RedisConnectionError("no node of the cluster answers")

    def node_redis(self, node: ClusterNode) -> Redis:
        """A client of one node for subscriptions (``seatlock.engine.shards``)."""
        return node_redis(node, self._options)

    @classmethod
    def like(cls, cluster: RedisCluster, *, wired: bool = True) -> ClusterTransport:
        """A transport on a cluster client of its own, with the seeds and options of
        ``cluster`` and replies left as Redis sends them (RESP2, bytes); ``wired``: the calls
        go out on connections of ours, a cluster pipeline carrying only what they cannot."""
        given = cluster.connection_kwargs
        options = {k: v for k, v in given.items() if _taken_over(k)}
        options["protocol"] = 2
        if issubclass(given.get("connection_class", Connection), SSLConnection):
            options["ssl"] = True  # rediss+cluster://
        seeds = [ClusterNode(n.host, n.port) for n in cluster.nodes_manager.startup_nodes.values()]
        client = RedisCluster(startup_nodes=seeds, retry=_retry(), **options)
        pack_with_hiredis(client)
        # Replies as Redis sends them: the engine parses what it reads itself. The nodes share
        # this dict; redis-py's own slot map and command table (CLUSTER ..., COMMAND) keep theirs.
        callbacks = client.response_callbacks
        for command in [c for c in callbacks if not c.startswith(INTERNAL_COMMANDS)]:
            del callbacks[command]
        return cls(client, options, wired=wired)

    @property
    def client(self) -> RedisCluster:
        return self._client

    async def run(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[int | str],
        replicas: Replicas | None = None,
    ) -> list[Any]:
        if name not in self._scripts:
            raise ValueError(f"no script {name!r}")
        if self._timer.due():
            return list(await self._timer.time(name, self._call(name, keys, args, replicas)))
        return list(await self._call(name, keys, args, replicas))

    async def command(self, *args: Arg) -> Any:
        return await self._call(None, (), args)

    async def primaries(self) -> list[ClusterNode]:
        """The primaries serving slots now, as the first node to answer CLUSTER SLOTS says (not
        redis-py's slot map, which is refreshed only after a command met a moved slot)."""
        found = {node.name: node for _, _, node in await self.slot_map()}
        return sorted(found.values(), key=lambda node: node.name)

    def _askable(self) -> list[ClusterNode]:
        """Every node redis-py knows of (replicas too: they know the slot map), primaries first."""
        nodes = self._client.get_nodes()
        return sorted(nodes, key=lambda node: node.server_type != PRIMARY)

    async def on_primaries(self, *args: Arg) -> list[Any]:
        """Run one command on every primary (CONFIG, FLUSHALL); the replies, one per node."""
        nodes = await self.primaries()
        replies = await asyncio.gather(*(self._on_node(node, args) for node in nodes))
        self.calls += len(nodes)
        return list(replies)

    async def _on_node(self, node: ClusterNode, args: Sequence[Arg]) -> Any:
        async with self.node_client(node) as client:
            return await client.execute_command(*args)  # type: ignore[no-untyped-call, unused-ignore]

    def node_client(self, node: ClusterNode) -> Redis:
        """A plain client of one node, connecting like this transport (close it after use)."""
        client = Redis(host=node.host, port=int(node.port), **self._options)
        client.response_callbacks.clear()
        return client

    async def _pipeline(self, batch: list[Call[str]]) -> list[Any]:
        """The batch's replies; calls refused while their slot migrates are sent again."""
        if self._down:
            # Calls queued before their node was found not answering are refused here: sent,
            # each batch of them would wait for another timeout.
            refused = [self._refused(call.node) for call in batch]
            if any(refused):
                sent = [call for call, error in zip(batch, refused, strict=True) if not error]
                answers = iter(await self._pipeline(sent) if sent else [])
                return [error or next(answers) for error in refused]
        if self._sharded is None:  # the first batches: which catalogue the primaries take
            async with self._choosing:
                if self._sharded is None:
                    await self.choose_publish()
        replies = await self._send_batch(batch)
        deadline = asyncio.get_running_loop().time() + MIGRATING_S
        while again := [i for i, reply in enumerate(replies) if _migrating(reply)]:
            # A script's keys split between two nodes, or missing on a slot being migrated
            # (our scripts always name keys that may not exist: leases, the sold hash): Redis
            # answers TRYAGAIN until the slot has moved. redis-py retries it for a moment
            # only (then ClusterError); the migration of a slot may take longer.
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(MIGRATING_RETRY_S)
            moved = [batch[i] for i in again]
            self._route(moved)  # to the slot's node as the slot map has it now
            retried = await self._send_batch(moved)
            for i, reply in zip(again, retried, strict=True):
                replies[i] = reply
        return replies

    async def _send_batch(self, batch: list[Call[str]]) -> list[Any]:
        """The batch's replies: each node's share in a pipeline of its own, all at once. A lane's
        batch is one node's share, but for the calls sent again (their slot was migrating) and
        those made before the slot map was read (the lane of no node). (One pipeline, which
        redis-py splits by node itself, raises a node's failure for all of it: a hold on another
        primary, written there, was answered 503.)"""
        fresh = {c.script for c in batch if c.script is not None} - self._known
        for script in sorted(fresh):  # on every node (_load)
            await self._load(script)
        self.calls += len(fresh)
        if any(c.node is None for c in batch):
            # Made before the process had a slot map (or for a slot no primary serves): sent to
            # the primary of their slot once the map is read, their WAIT with them.
            await self._client.initialize()
            self._route([c for c in batch if c.node is None])
        # By node name: the node (None: no slot map yet, or the slot is not covered) and the
        # positions of its calls.
        shares: dict[str | None, tuple[ClusterNode | None, list[int]]] = {}
        for i, call in enumerate(batch):
            node = call.node
            shares.setdefault(node.name if node is not None else None, (node, []))[1].append(i)
        if len(shares) == 1:
            ((node, _),) = shares.values()
            replies = await self._send_share(batch, node)
        else:
            answers = await asyncio.gather(
                *(self._send_share([batch[i] for i in at], node) for node, at in shares.values())
            )
            replies = [None] * len(batch)
            for (_, at), answer in zip(shares.values(), answers, strict=True):
                for i, reply in zip(at, answer, strict=True):
                    replies[i] = reply
        self._known.update(n for n in fresh if n is not None)
        return replies

    async def _send_share(self, calls: list[Call[str]], node: ClusterNode | None) -> list[Any]:
        """One node's calls, a reply per call: on the node's connection of ours when ``wired``
        (``_send_wired``), else in a cluster pipeline (``_send_pipelined``)."""
        if self.wired and node is not None:
            return await self._send_wired(calls, node)
        return await self._send_pipelined(calls, node)

    async def _send_wired(self, calls: list[Call[str]], node: ClusterNode) -> list[Any]:
        """One node's calls on its connection of ours (a ``FastTransport`` of the node, with
        this transport's catalogue): one write, EVALSHA (NOSCRIPT sent again as EVAL), and for
        the calls run with replicas one WAIT after them on that connection.

        What only the cluster client can do is left to it: a call answered MOVED, ASK,
        CLUSTERDOWN or READONLY (its slot is elsewhere now, or the node is in a failover), or
        whose connection was refused or lost while the node still counts as answering, is sent
        again in a cluster pipeline by its keys (``_send_pipelined`` with no node), which
        follows the redirect, refreshes the slot map and retries as before; a call sent again
        after a lost connection may have run (redis-py does the same). A node that went silent
        (its connection's watchdog) is not asked again: its calls get the error, and the node is
        refused until its probe answers (``_not_answering``)."""
        wire = self._wire_of(node)
        replies: list[Any] = []
        for call in calls:
            try:
                replies.append(wire.submit(call.script, call.keys, call.args, call.replicas))
            except RedisError as exc:  # not answering, or too many calls waiting: final
                replies.append(exc)
        sent = [isinstance(reply, asyncio.Future) for reply in replies]
        waiting = [reply for reply, was_sent in zip(replies, sent, strict=True) if was_sent]
        answers = iter(await asyncio.gather(*waiting, return_exceptions=True))
        replies = [
            next(answers) if was_sent else r for r, was_sent in zip(replies, sent, strict=True)
        ]
        self.pipelines += 1
        self.calls += len(calls)
        answering = wire.answering
        again = [i for i, reply in enumerate(replies) if sent[i] and _elsewhere(reply, answering)]
        if again:
            resent = await self._send_pipelined([calls[i] for i in again], None)
            for i, reply in zip(again, resent, strict=True):
                replies[i] = reply
        if any(isinstance(reply, NOT_ANSWERING) for reply in replies):
            self._not_answering(node)
        return replies

    def _wire_of(self, node: ClusterNode) -> FastTransport:
        """The node's connection of ours, made on its first call."""
        wire = self._wires.get(node.name)
        if wire is None:
            options, tls = client_options(self.node_client(node))
            publish = SPUBLISH if self._sharded else PUBLISH
            wire = FastTransport(options, tls, publish, f"Redis node {node.name}")
            self._wires[node.name] = wire
        return wire

    async def _send_pipelined(self, calls: list[Call[str]], node: ClusterNode | None) -> list[Any]:
        """One node's calls in one pipeline, then, for those run with replicas, one WAIT on the
        connection that carried them; a reply per call, the pipeline's error as the reply of each
        when it failed as a whole. No node: redis-py routes each call by its keys."""
        wanted = [c.replicas for c in calls if c.replicas is not None]
        wait = bool(wanted) and node is not None  # no node: none is confirmed
        async with self._client.pipeline() as pipe:
            for call in calls:
                if call.script is None:
                    pipe.execute_command(*call.args)
                else:
                    self._queue_script(pipe, call, node)
            if wait:
                pipe.execute_command(*wait_command(wanted), target_nodes=node)
            self.pipelines += 1
            self.calls += len(calls) + int(wait)
            try:
                async with asyncio.timeout(self._bound_s):
                    replies: list[Any] = await pipe.execute(raise_on_error=False)
            except (TimeoutError, RedisTimeoutError, RedisConnectionError, OSError) as exc:
                self._not_answering(node)  # a probe clears it once it answers
                return [self._failure(exc)] * len(calls)
            except Exception as exc:  # no reply of this share can be trusted
                return [self._failure(exc)] * len(calls)
        # A node that timed out or dropped the connection gives each call its error as reply.
        if any(isinstance(reply, NOT_ANSWERING) for reply in replies[: len(calls)]):
            self._not_answering(node)
        if not wanted:
            return replies
        acked = replies[-1] if wait else 0
        return self._replicated(calls, replies[: len(calls)], node, acked)

    def _queue_script(
        self, pipe: ClusterPipeline, call: Call[str], node: ClusterNode | None
    ) -> None:
        """Queue one script call on the primary of its screening's slot.

        Every key of a screening script shares the screening's hash tag, so the slot of the
        first key is the slot of all: the call is sent to that slot's node by name. Left to
        route it, redis-py would compute the slot of every key (a script has ten and more) to
        check that they agree: a fifth of the process's CPU per hold. A call answered MOVED,
        ASK or TRYAGAIN is sent again by its keys, not to the node named (redis-py keeps no
        single named node for a retry; tests/cluster/test_cluster_routing.py checks it).
        """
        sha = self._scripts[call.script].sha if call.script is not None else ""
        if node is None:  # no slot map yet, or the slot is not covered: redis-py decides
            pipe.execute_command("EVALSHA", sha, len(call.keys), *call.keys, *call.args)
        else:
            pipe.execute_command(
                "EVALSHA", sha, len(call.keys), *call.keys, *call.args, target_nodes=node
            )

    def _route(self, calls: list[Call[str]]) -> None:
        """Each call's node: the primary of its slot as the slot map has it now."""
        for call in calls:
            call.node = self._node_of(call)

    def _node_of(self, call: Call[str]) -> ClusterNode | None:
        """The primary of the call's slot as the slot map has it now (None: not covered)."""
        return self._node_of_key(_key_of(call.keys, call.args))

    def _node_of_key(self, key: object) -> ClusterNode | None:
        """The primary of the key's slot as the slot map has it now (None: not a key, not
        covered, or no slot map yet)."""
        if not isinstance(key, str | bytes):
            return None
        try:
            return self._client.get_node_from_key(key)  # type: ignore[arg-type]
        except RedisClusterException:
            return None

    async def _load(self, name: str) -> None:
        """SCRIPT LOAD on every node redis-py knows, replicas too, at once: a replica promoted
        since has the script, also while redis-py's slot map still names the old primary. A
        node that does not answer in time is left out, so a stopped one does not keep the others
        from new scripts: a call that reaches it later and meets NOSCRIPT has the script loaded
        again everywhere."""
        script = self._scripts[name].script
        nodes = self._client.get_nodes()
        replies = await asyncio.gather(
            *(self._load_on(node, script) for node in nodes), return_exceptions=True
        )
        failed = [r for r in replies if isinstance(r, BaseException)]
        if len(failed) == len(replies):
            raise failed[0] if failed else RedisConnectionError("no node to load scripts on")
        for error in failed:
            logger.warning("script %s not loaded on a node: %r", name, error)

    async def _load_on(self, node: ClusterNode, script: str) -> None:
        async with asyncio.timeout(self._bound_s):
            await self._client.execute_command("SCRIPT", "LOAD", script, target_nodes=node)

    def _replicated(
        self, calls: list[Call[str]], replies: list[Any], node: ClusterNode | None, acked: Any
    ) -> list[Any]:
        """The replies of ``node``'s calls, those run with replicas as its WAIT allows
        (``acked``: the WAIT's reply; no node: none confirmed)."""
        out = list(replies)
        for i, call in enumerate(calls):
            if call.replicas is not None:
                count = acked if node is not None and self._still_on(call, node.name) else 0
                out[i] = replicated(out[i], count, call.replicas)
        return out

    def _still_on(self, call: Call[str], name: str) -> bool:
        """Whether the call's slot is still on node ``name``: a MOVED call ran elsewhere."""
        node = self._node_of(call)
        return node is not None and node.name == name

    async def subscribe(
        self,
        channel: str,
        on_message: OnMessage,
        *,
        pattern: bool = False,
        on_live: Callable[[], None] | None = None,
        health_s: float = HEALTH_S,
    ) -> Feed:
        if not channel.startswith(NODE_LOCAL_CHANNELS):
            return await self._subscribe_anywhere(channel, on_message, pattern, on_live, health_s)
        primaries = await self.primaries()
        live = _AllLive(on_live)
        feeds: list[PubSubFeed] = []
        missing: list[ClusterNode] = []
        try:
            for node in primaries:
                try:
                    feed = await self._subscribe_on(
                        node, channel, on_message, pattern, live.one, health_s
                    )
                except (RedisError, OSError) as exc:
                    # A primary lost and not replaced yet: the others' notifications keep
                    # coming, and ``follows`` asks for a new subscription once it answers again
                    # or is replaced; the sweep frees its expiries meanwhile.
                    logger.warning("no keyspace notifications from %s: %r", node.name, exc)
                    missing.append(node)
                    continue
                feeds.append(feed)
            if not feeds:
                raise RedisConnectionError(f"no primary of the cluster answers on {channel}")
        except BaseException:
            for feed in feeds:
                feed.close()
            raise
        live.expect(len(feeds))
        return MergedFeed(feeds, primaries, missing)

    async def _subscribe_anywhere(
        self,
        channel: str,
        on_message: OnMessage,
        pattern: bool,
        on_live: Callable[[], None] | None,
        health_s: float,
    ) -> PubSubFeed:
        """Classic pub/sub crosses the cluster bus, so one node hears every PUBLISH: the first
        node (in random order) that takes the subscription. A dead node redis-py still lists is
        skipped: the caller's resubscription after a node died lands on one that answers.

        The node list is taken as it is, without waiting for a slot map refresh: after a primary
        died, that refresh lasts until its replica is promoted, and every event published
        meanwhile would be missed (any live node hears them). The caller's resync covers what
        was published before the new subscription was confirmed."""
        nodes = self._client.get_nodes()
        if not nodes:  # the first subscription, before any call
            await self._client.initialize()
            nodes = self._client.get_nodes()
        random.shuffle(nodes)
        for node in nodes[:-1]:
            try:
                return await self._subscribe_on(
                    node, channel, on_message, pattern, on_live, health_s
                )
            except (RedisError, OSError) as exc:
                logger.info("cannot subscribe on %s (%r), trying another node", node.name, exc)
        return await self._subscribe_on(nodes[-1], channel, on_message, pattern, on_live, health_s)

    async def follows(self, feed: Feed) -> bool:
        """Whether a feed of a node-local channel still covers every primary: False after a
        failover or resharding changed the primaries, or when a primary it missed answers again
        (its owner then subscribes anew). A feed of another channel always follows."""
        if not isinstance(feed, MergedFeed):
            return True
        now = {node.name for node in await self.primaries()}
        # A connection goes once its node is missing from two answers in a row: the node asked
        # may not have heard of a failover yet, and one stale answer must not close the
        # connection to a primary just promoted.
        missing = {name for name in self._wires if name not in now}
        await self._let_go(missing & self._missing)
        self._missing = missing
        if now != feed.primaries:
            return False
        for node in feed.missing:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._on_node(node, ("PING",)), ASK_S)
                return False
        return True

    async def _subscribe_on(
        self,
        node: ClusterNode,
        channel: str,
        on_message: OnMessage,
        pattern: bool,
        on_live: Callable[[], None] | None,
        health_s: float,
    ) -> PubSubFeed:
        pubsub = self.node_client(node).pubsub()
        try:
            async with asyncio.timeout(ASK_S):
                await (pubsub.psubscribe(channel) if pattern else pubsub.subscribe(channel))
        except BaseException:
            await pubsub.aclose()
            raise
        return PubSubFeed(pubsub, on_message, on_live, health_s)

    async def aclose(self) -> None:
        await self._stop_sending()
        await asyncio.gather(*(f.aclose() for f in self._fail_fast.values()))
        await asyncio.gather(*(wire.aclose() for wire in self._wires.values()))
        await self._client.aclose()


class _AllLive:
    """Calls ``on_live`` once every subscription expected is confirmed (the count is known only
    once every primary was tried: ``expect``)."""

    def __init__(self, on_live: Callable[[], None] | None) -> None:
        self._confirmed = 0
        self._expected: int | None = None
        self._on_live = on_live

    def one(self) -> None:
        self._confirmed += 1
        self._check()

    def expect(self, count: int) -> None:
        self._expected = count
        self._check()

    def _check(self) -> None:
        if self._confirmed == self._expected and self._on_live is not None:
            self._on_live()
            self._on_live = None


class MergedFeed:
    """Several subscriptions as one: it ends (and closes the others) when any one ends, since a
    node whose feed ended may have lost messages."""

    def __init__(
        self,
        feeds: list[PubSubFeed],
        nodes: list[ClusterNode] | None = None,
        missing: list[ClusterNode] | None = None,
    ) -> None:
        self._feeds = feeds
        self.nodes = nodes or []  # the primaries when it subscribed
        self.missing = missing or []  # those of them it could not subscribe on
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.trouble = "closed by Redis"
        for feed in feeds:
            feed.closed.add_done_callback(functools.partial(self._ended, feed))

    @property
    def primaries(self) -> set[str]:
        """The primaries when it subscribed, as host:port."""
        return {node.name for node in self.nodes}

    def _ended(self, feed: PubSubFeed, _: object = None) -> None:
        if not self.closed.done():
            self.trouble = feed.trouble
            self.closed.set_result(None)
        self.close()

    def close(self) -> None:
        for feed in self._feeds:
            feed.close()


class PackedConnection(Connection):
    """A node connection whose commands hiredis packs in one call. redis-py's own packer runs
    every argument through its Encoder in Python first (a script call has twenty and more):
    that was a fifth of the engine process's CPU per hold on a cluster. hiredis packs str (UTF-8),
    bytes, int and float (as ``repr``) alike; anything else it refuses, and redis-py packs it,
    or says why it cannot, as before."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        if _one_word(args[0]):  # redis-py splits a first argument like "CLUSTER SLOTS"
            with contextlib.suppress(TypeError):
                return [hiredis.pack_command(args)]  # type: ignore[arg-type]  # stub: 1-tuple
        return super().pack_command(*args)


def _one_word(head: object) -> bool:
    if isinstance(head, str):
        return " " not in head
    return isinstance(head, bytes) and b" " not in head


def pack_with_hiredis(client: RedisCluster) -> bool:
    """Make the node connections of ``client`` ``PackedConnection``s, if redis-py still makes
    them from ``connection_kwargs["connection_class"]`` (redis-py 8.x, pinned below 9;
    tests/cluster/test_cluster_routing.py fails loudly when that changes); TLS connections and
    an unknown layout keep redis-py's packer. Call it before the client's first command."""
    made_by = getattr(client, "connection_kwargs", None)
    if not isinstance(made_by, dict) or made_by.get("connection_class") is not Connection:
        return False
    made_by["connection_class"] = PackedConnection
    return True


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def _key_of(keys: Sequence[str], args: Sequence[Arg]) -> object:
    """The key a call's node is chosen by: a script's first key, a plain command's first
    argument after its name."""
    return keys[0] if keys else args[1] if len(args) > 1 else None


def _elsewhere(reply: Any, answering: bool) -> bool:
    """Whether a call's reply on its node's connection of ours leaves the call to the lanes and
    the cluster client (``ClusterTransport._direct``, ``_send_wired``): its slot is served
    elsewhere now, the node is in a failover, or its connection failed while the node still
    counts as answering."""
    if isinstance(reply, ClusterDownError | ReadOnlyError):
        return True
    if isinstance(reply, RedisConnectionError):
        return answering
    return isinstance(reply, ResponseError) and str(reply).startswith(("MOVED ", "ASK "))


def _migrating(reply: Any) -> bool:
    """Whether a reply is Redis's TRYAGAIN (directly, or after redis-py's own retries)."""
    return isinstance(reply, TryAgainError) or (
        isinstance(reply, ClusterError) and "TTL exhausted" in str(reply)
    )


def _version(info: Any) -> tuple[int, ...]:
    """The (major, minor) of an INFO server reply (text, as the transport leaves it)."""
    for line in _text(info).splitlines():
        if line.startswith("redis_version:"):
            return tuple(int(part) for part in line.split(":", 1)[1].split(".")[:2])
    return (0,)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _retry() -> Retry:
    """redis-py's retries of a call that failed on its node (a slot map refresh before each):
    enough for a stale connection or a slot that just moved; a killed primary's calls fail
    within ~0.1 s and the node is refused at once until its probe answers. redis-py's default
    (ten, backing off to 1 s) held the calls behind one killed primary ~5 s."""
    return Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.05), RETRIES)


def _taken_over(option: str) -> bool:
    return (option in CONNECTION_OPTIONS and option not in ("host", "port", "db", "path")) or (
        option.startswith("ssl")
    )
