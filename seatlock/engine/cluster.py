"""The Redis Cluster transport (``SEATLOCK_REDIS_URL=redis+cluster://...``): redis-py's public
``RedisCluster`` API only.

Calls are batched like the redis-py transport's: the calls made in one event-loop iteration go
out together in one non-transactional ``ClusterPipeline``, which splits them by node (by the
slot of their keys) and writes each node's share as one pipeline; a batch is sent only after
the one before it was answered, so the calls of one process reach each node in the order they
were made. Every key of a screening script shares the screening's hash tag (seatlock/keys.py),
so a script runs on the primary of the screening's slot, and its events are published in order.
redis-py follows MOVED and ASK, retries TRYAGAIN and refreshes the slot map; after a lost
connection it may send a call again (its outcome was unknown).

Scripts are loaded on every primary (SCRIPT LOAD goes to all of them) before their first use,
then sent as EVALSHA; a NOSCRIPT (a promoted replica that never loaded them, SCRIPT FLUSH) loads
them again and resends only those calls.

Calls run with replicas (``SEATLOCK_HOLD_REPLICAS``): WAIT has no key, so the pipeline cannot
route it by slot; it is added once per node after that node's scripts with ``target_nodes`` (the
node of the call's key, as the slot map had it), so it travels in the node's share of the
pipeline, on the connection that carried the scripts, and counts their writes. A call redirected
meanwhile (MOVED: its key's node changed) ran elsewhere, so that WAIT does not count it: it is
not confirmed.

Pub/sub: a classic PUBLISH, also from inside a script, is forwarded over the cluster bus to
every node, so a subscription on any one node receives every screening's events. Keyspace
notifications are not forwarded: a ``__keyevent@`` channel is subscribed on every primary and
the feeds are merged (primaries that appear later, by failover or resharding, are picked up
when the caller resubscribes; the sweep covers the gap).
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Connection, Redis, SSLConnection
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException

from seatlock.engine.redispy import CONNECTION_OPTIONS, MAX_BATCH, MAX_QUEUE, PubSubFeed
from seatlock.engine.scripts import NAMES, source
from seatlock.engine.transport import (
    HEALTH_S,
    Arg,
    Feed,
    OnMessage,
    Replicas,
    replicated,
    settle,
    wait_command,
)

NODE_LOCAL_CHANNELS = "__key"  # keyspace and keyevent notifications stay on their node
INTERNAL_COMMANDS = ("CLUSTER", "COMMAND")  # what redis-py itself reads through the callbacks


class _Call:
    """A script call (``script`` its name) or a plain command (``script`` None)."""

    __slots__ = ("args", "future", "keys", "replicas", "script")

    def __init__(
        self,
        script: str | None,
        keys: Sequence[str],
        args: Sequence[Arg],
        future: Any,
        replicas: Replicas | None = None,
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.future: asyncio.Future[Any] = future
        self.replicas = replicas  # set: answered after a WAIT on its node


# Per node name: the node and the calls of a batch that wait for its replicas.
Waits = dict[str, tuple[ClusterNode, list[_Call]]]


class ClusterTransport:
    """Every call of the process through one ``RedisCluster``, a cluster pipeline per batch."""

    db = 0  # a cluster has database 0 only

    def __init__(self, client: RedisCluster, options: dict[str, Any] | None = None) -> None:
        self._client = client
        self._options = options or {}  # how to connect to one node (subscriptions)
        self._scripts = {name: client.register_script(source(name)) for name in NAMES}
        self._known: set[str] = set()  # loaded on every primary since the last NOSCRIPT
        self._queue: deque[_Call] = deque()
        self._in_flight = 0
        self._sender: asyncio.Task[None] | None = None
        self.pipelines = 0
        self.calls = 0

    @classmethod
    def like(cls, cluster: RedisCluster) -> ClusterTransport:
        """A transport on a cluster client of its own, with the seeds and options of
        ``cluster`` and replies left as Redis sends them (RESP2, bytes)."""
        given = cluster.connection_kwargs
        options = {k: v for k, v in given.items() if _taken_over(k)}
        options["protocol"] = 2
        if issubclass(given.get("connection_class", Connection), SSLConnection):
            options["ssl"] = True  # rediss+cluster://
        seeds = [ClusterNode(n.host, n.port) for n in cluster.nodes_manager.startup_nodes.values()]
        client = RedisCluster(startup_nodes=seeds, **options)
        # Replies as Redis sends them: the engine parses what it reads itself. The nodes share
        # this dict; redis-py's own slot map and command table (CLUSTER ..., COMMAND) keep theirs.
        callbacks = client.response_callbacks
        for command in [c for c in callbacks if not c.startswith(INTERNAL_COMMANDS)]:
            del callbacks[command]
        return cls(client, options)

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
        return list(await self._call(name, keys, args, replicas))

    async def command(self, *args: Arg) -> Any:
        return await self._call(None, (), args)

    async def primaries(self) -> list[ClusterNode]:
        """The primaries of the slot map as redis-py knows it now."""
        await self._client.initialize()
        return self._client.get_primaries()

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

    def _call(
        self,
        script: str | None,
        keys: Sequence[str],
        args: Sequence[Arg],
        replicas: Replicas | None = None,
    ) -> Any:
        if len(self._queue) + self._in_flight >= MAX_QUEUE:
            raise RedisConnectionError("Too many calls waiting for Redis")
        loop = asyncio.get_running_loop()
        call = _Call(script, keys, args, loop.create_future(), replicas)
        self._queue.append(call)
        if self._sender is None:
            # Runs after every callback already ready: this iteration's calls share a batch.
            self._sender = loop.create_task(self._send_all())
        return call.future

    async def _send_all(self) -> None:
        queue = self._queue
        try:
            while queue:
                size = min(len(queue), MAX_BATCH)
                batch = [c for c in (queue.popleft() for _ in range(size)) if not c.future.done()]
                if batch:
                    self._in_flight = len(batch)
                    await self._send(batch)
                    self._in_flight = 0
        except BaseException:  # cancelled: the loop is shutting down, or aclose()
            for call in queue:
                settle(call.future, RedisConnectionError("Redis transport stopped"))
            queue.clear()
            raise
        finally:
            self._sender = None
            self._in_flight = 0

    async def _send(self, batch: list[_Call], retry: bool = True) -> None:
        try:
            replies = await self._pipeline(batch)
        except asyncio.CancelledError:
            for call in batch:
                settle(call.future, RedisConnectionError("Redis transport stopped"))
            raise
        except Exception as exc:  # no reply of the batch can be trusted
            failure = _refused(exc)
            for call in batch:
                settle(call.future, failure)
            return
        again = [
            call
            for call, reply in zip(batch, replies, strict=True)
            if not _settled(call, reply, retry)
        ]
        if again:
            # A primary without our scripts (promoted replica, SCRIPT FLUSH): load them on every
            # primary again; only these calls run late.
            self._known.clear()
            await self._send(again, retry=False)

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        fresh = {c.script for c in batch if c.script is not None} - self._known
        for name in sorted(fresh):  # SCRIPT LOAD reaches every primary
            await self._client.script_load(self._scripts[name].script)
        self.calls += len(fresh)
        waits = await self._waits(batch)
        async with self._client.pipeline() as pipe:
            for call in batch:
                if call.script is None:
                    pipe.execute_command(*call.args)
                else:
                    sha = self._scripts[call.script].sha
                    pipe.execute_command("EVALSHA", sha, len(call.keys), *call.keys, *call.args)
            for node, calls in waits.values():  # after the node's scripts, in its share
                wanted = [c.replicas for c in calls if c.replicas is not None]
                pipe.execute_command(*wait_command(wanted), target_nodes=node)
            self.pipelines += 1
            self.calls += len(batch) + len(waits)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        self._known.update(n for n in fresh if n is not None)
        return self._replicated(batch, replies, waits) if waits else replies

    async def _waits(self, batch: list[_Call]) -> Waits:
        """The primaries the batch's calls run with replicas go to, each with its calls."""
        waits: Waits = {}
        durable = [c for c in batch if c.replicas is not None]
        if durable:
            await self._client.initialize()  # at once unless the first map or a refresh is due
        for call in durable:
            node = self._node_of(call)
            if node is not None:  # else its slot is not covered: its script fails anyway
                waits.setdefault(node.name, (node, []))[1].append(call)
        return waits

    def _node_of(self, call: _Call) -> ClusterNode | None:
        """The primary of the call's slot as the slot map has it now (None: not covered)."""
        try:
            return self._client.get_node_from_key(call.keys[0]) if call.keys else None
        except RedisClusterException:
            return None

    def _replicated(self, batch: list[_Call], replies: list[Any], waits: Waits) -> list[Any]:
        """The batch's replies, those of calls run with replicas as their node's WAIT allows."""
        acked = dict(zip(waits, replies[len(batch) :], strict=True))
        nodes = {id(c): name for name, (_, calls) in waits.items() for c in calls}
        out = replies[: len(batch)]
        for i, call in enumerate(batch):
            if call.replicas is not None:
                name = nodes.get(id(call))
                count = acked[name] if name is not None and self._still_on(call, name) else 0
                out[i] = replicated(out[i], count, call.replicas)
        return out

    def _still_on(self, call: _Call, name: str) -> bool:
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
        await self._client.initialize()
        if not channel.startswith(NODE_LOCAL_CHANNELS):
            # Classic pub/sub crosses the cluster bus: one node hears every PUBLISH.
            node = self._client.get_random_node()
            return await self._subscribe_on(node, channel, on_message, pattern, on_live, health_s)
        primaries = self._client.get_primaries()
        live = _AllLive(len(primaries), on_live)
        feeds = [
            await self._subscribe_on(node, channel, on_message, pattern, live.one, health_s)
            for node in primaries
        ]
        return MergedFeed(feeds)

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
            await (pubsub.psubscribe(channel) if pattern else pubsub.subscribe(channel))
        except BaseException:
            await pubsub.aclose()
            raise
        return PubSubFeed(pubsub, on_message, on_live, health_s)

    async def aclose(self) -> None:
        sender = self._sender
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        await self._client.aclose()


class _AllLive:
    """Calls ``on_live`` once every one of ``count`` subscriptions is confirmed."""

    def __init__(self, count: int, on_live: Callable[[], None] | None) -> None:
        self._left = count
        self._on_live = on_live

    def one(self) -> None:
        self._left -= 1
        if self._left == 0 and self._on_live is not None:
            self._on_live()


class MergedFeed:
    """Several subscriptions as one: it ends (and closes the others) when any one ends, since a
    node whose feed ended may have lost messages."""

    def __init__(self, feeds: list[PubSubFeed]) -> None:
        self._feeds = feeds
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.trouble = "closed by Redis"
        for feed in feeds:
            feed.closed.add_done_callback(functools.partial(self._ended, feed))

    def _ended(self, feed: PubSubFeed, _: object = None) -> None:
        if not self.closed.done():
            self.trouble = feed.trouble
            self.closed.set_result(None)
        self.close()

    def close(self) -> None:
        for feed in self._feeds:
            feed.close()


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def _settled(call: _Call, reply: Any, retry: bool) -> bool:
    """Hand ``call`` its reply; False when it must be sent again (NOSCRIPT, first time)."""
    if retry and call.script is not None and isinstance(reply, NoScriptError):
        return False
    settle(call.future, reply)
    return True


def _taken_over(option: str) -> bool:
    return (option in CONNECTION_OPTIONS and option not in ("host", "port", "db", "path")) or (
        option.startswith("ssl")
    )


def _refused(exc: Exception) -> Exception:
    if isinstance(exc, OSError):
        return RedisConnectionError(f"Lost the connection to Redis: {exc!r}")
    return exc
