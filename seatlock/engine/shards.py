"""Sharded pub/sub on a Redis Cluster (Redis >= 7): each screening's channel subscribed with
SSUBSCRIBE on the primary that owns its slot, one connection per primary.

SPUBLISH keeps a message on the shard of its channel's slot (it is not forwarded over the
cluster bus like PUBLISH), so a process hears a screening only while its channel is subscribed
on the node that runs the screening's scripts. ``ShardChannels`` keeps the channels it is asked
for (``want``) subscribed there and tells its owner when each one becomes live (Redis confirmed
it: every event published from then on arrives) and when it stops being live:

- the slot left the node (resharding, or a failover that made another node its primary): Redis
  sends an SUNSUBSCRIBE we did not ask for, or answers MOVED to our SSUBSCRIBE;
- the node's connection was lost or went silent (the node died);
- the connection was re-established behind our back and the channel confirmed a second time;
- the slot map its owner reads every second (``follow``) gives the slot another primary than
  the node the channel is on. Redis may not tell: a subscription placed from a slot map that was
  out of date for a moment (right after a failover) can land on a replica, which takes SSUBSCRIBE
  for its primary's slots and hears SPUBLISH only once its new primary knows it as a replica.

A channel that stops being live is subscribed again on the slot's owner as CLUSTER SLOTS (asked
of any node that answers) has it; a MOVED answer or an owner that cannot be reached is retried
every RETRY_S until one takes it. Events published between the loss and the new confirmation
are not delivered: the owner repairs its watchers' maps when the channel is live again (the
hub's resync), as after any lost subscription.

redis-py's ``ClusterPubSub`` moves shard channels after a migration by itself but says nothing of
the messages lost meanwhile, so this keeps one plain ``PubSub`` per node (redis-py's public API)
and follows the topology itself: the seam the hub uses is ``want``/``release``/``confirmed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.cluster import PRIMARY
from redis.crc import key_slot
from redis.exceptions import MovedError, RedisError

from seatlock.engine.transport import HEALTH_S, OnMessage

logger = logging.getLogger(__name__)

RETRY_S = 0.2  # a channel not subscribed (no owner reachable, MOVED) is tried again this often
ASK_S = 2.0  # a node asked for the slot map or to subscribe answers within this, or is skipped

OnChange = Callable[[str, bool], None]  # a channel became live (True) or stopped being live
Slots = list[tuple[int, int, ClusterNode]]  # CLUSTER SLOTS: first slot, last slot, primary


class SlotSource(Protocol):
    """What ``ShardChannels`` asks of the cluster (seatlock.engine.cluster.ClusterTransport)."""

    async def slot_map(self) -> Slots:
        """Every slot range with its primary, as the cluster has it now."""

    def node_redis(self, node: ClusterNode) -> Redis:
        """A client of one node, for subscriptions."""


class NodeFeed:
    """One subscribed connection to one node, read by a task of its own until it ends."""

    def __init__(self, node: ClusterNode, client: Redis, owner: ShardChannels) -> None:
        self.node = node
        self._client = client
        self._pubsub: PubSub = client.pubsub()
        self._owner = owner
        self.channels: set[str] = set()  # SSUBSCRIBE sent here, not yet unsubscribed by us
        self._leaving: set[str] = set()  # SUNSUBSCRIBE sent here: their confirmation is ours
        self._reader: asyncio.Task[None] | None = None

    async def subscribe(self, channel: str) -> None:
        self.channels.add(channel)  # before sending: the reader may see the answer first
        try:
            async with asyncio.timeout(ASK_S):
                await self._pubsub.ssubscribe(channel)
        except BaseException:
            self.channels.discard(channel)
            raise
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        self._leaving.add(channel)
        try:
            async with asyncio.timeout(ASK_S):
                await self._pubsub.sunsubscribe(channel)
        except (RedisError, OSError, TimeoutError) as exc:
            # Sent or not, its confirmation may never come, and an SUNSUBSCRIBE that Redis sends
            # of itself later (the slot leaving) would then be taken for it, the channel's loss
            # unnoticed. This connection is given up: its channels move to a new one.
            self._owner.node_lost(self, f"no answer to SUNSUBSCRIBE: {exc!r}")
            self.close()
            raise

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        else:
            asyncio.get_running_loop().create_task(self._shut())

    async def _shut(self) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
            await self._client.aclose()

    async def _read(self) -> None:
        trouble: str | None = "no answer to a PING"
        try:
            while await self._next():
                pass
        except (RedisError, OSError) as exc:
            trouble = repr(exc)
        except asyncio.CancelledError:
            trouble = None  # closed by its owner (it is stopping): nothing was lost
            raise
        finally:
            await asyncio.shield(self._shut())
            if trouble is not None:
                self._owner.node_lost(self, trouble)

    async def _next(self) -> bool:
        pubsub = self._pubsub
        try:
            message = await pubsub.get_message(timeout=HEALTH_S)
        except MovedError as exc:  # our SSUBSCRIBE reached a node that no longer has the slot
            for channel in [c for c in self.channels if key_slot(c.encode()) == exc.slot_id]:
                self._forget(channel)
                self._owner.channel_lost(self, channel, "moved")
            return True
        if message is None:  # silent: ping, give up if that stays unanswered
            await pubsub.ping()
            message = await pubsub.get_message(timeout=HEALTH_S)
            if message is None:
                return False
        self._handle(message)
        return True

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "smessage":
            self._owner.on_message(message["data"])
            return
        channel = _text(message.get("channel") or b"")
        if kind == "ssubscribe":
            self._owner.confirmed_on(self, channel)
        elif kind == "sunsubscribe":
            if channel in self._leaving:
                self._leaving.discard(channel)
            else:  # the slot left this node (Redis 7 unsubscribes its shard channels)
                self._forget(channel)
                self._owner.channel_lost(self, channel, "its slot left the node")

    def _forget(self, channel: str) -> None:
        self.channels.discard(channel)
        self._pubsub.shard_channels.pop(channel.encode(), None)  # never replayed here


class ShardChannels:
    """The shard channels one hub wants, each kept subscribed on the primary of its slot."""

    def __init__(self, source: SlotSource, on_message: OnMessage, on_change: OnChange) -> None:
        self._source = source
        self.on_message = on_message
        self._on_change = on_change
        self._wanted: set[str] = set()
        self._placed: dict[str, NodeFeed] = {}  # channel -> the feed its SSUBSCRIBE went to
        self._live: set[str] = set()
        self._feeds: dict[str, NodeFeed] = {}  # node name -> its feed
        self._misplaced: dict[str, NodeFeed] = {}  # channel -> a feed not on its slot's primary
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._kick = asyncio.Event()  # something to place or remove

    def want(self, channel: str) -> None:
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._kick.set()

    def release(self, channel: str) -> None:
        if channel in self._wanted:
            self._wanted.discard(channel)
            self._kick.set()

    def follow(self, slots: Slots) -> None:
        """The slot map as the cluster has it now: a channel placed on a node that is not its
        slot's primary in it is moved there (subscribed again, live again, resynced)."""
        for channel, feed in self._placed.items():
            owner = _owner_of(slots, key_slot(channel.encode()))
            if owner is not None and owner.name != feed.node.name:
                self._misplaced[channel] = feed
        if self._misplaced:
            self._kick.set()

    def is_live(self, channel: str) -> bool:
        return channel in self._live

    async def confirmed(self, channel: str) -> None:
        """Want ``channel`` and return once it is live (the caller bounds the wait)."""
        self.want(channel)
        if channel in self._live:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        try:
            await waiter
        finally:
            waiting = self._waiters.get(channel, [])
            if waiter in waiting:
                waiting.remove(waiter)
            if not waiting:  # a wait given up on a channel never live: its entry goes too
                self._waiters.pop(channel, None)

    async def run(self, stop: asyncio.Event) -> None:
        """Place and remove subscriptions until ``stop`` is set, then close every feed."""
        try:
            while not stop.is_set():
                self._kick.clear()
                settled = await self._reconcile()
                waits = [asyncio.ensure_future(e.wait()) for e in (self._kick, stop)]
                await asyncio.wait(
                    waits, timeout=None if settled else RETRY_S, return_when="FIRST_COMPLETED"
                )
                for waiting in waits:
                    waiting.cancel()
        finally:
            for feed in list(self._feeds.values()):
                feed.close()

    async def _reconcile(self) -> bool:
        """Subscribe what is wanted and not placed, unsubscribe what is placed and not wanted;
        False when something is left to retry."""
        misplaced, self._misplaced = self._misplaced, {}
        placed = self._placed.items()
        leaving = [(c, f) for c, f in placed if c not in self._wanted or misplaced.get(c) is f]
        for channel, feed in leaving:
            if self._placed.get(channel) is not feed:
                continue  # lost meanwhile (its node's reader): placed again below
            del self._placed[channel]
            if channel in self._wanted:
                logger.info(
                    "shard channel %s is on %s, not its slot's primary; moving it",
                    channel,
                    feed.node.name,
                )
            self._set_live(channel, False)
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await feed.unsubscribe(channel)
        missing = [c for c in self._wanted if c not in self._placed]
        if not missing:
            return True
        try:
            slots = await self._source.slot_map()
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("no slot map for shard channels: %r", exc)
            return False
        done = True
        for channel in missing:
            done = await self._place(channel, slots) and done
        return done

    async def _place(self, channel: str, slots: Slots) -> bool:
        node = _owner_of(slots, key_slot(channel.encode()))
        if node is None:
            return False  # the slot is not served now (CLUSTERDOWN): retried
        feed = self._feeds.get(node.name)
        if feed is None:
            feed = self._feeds[node.name] = NodeFeed(node, self._source.node_redis(node), self)
        # Placed before the SSUBSCRIBE is sent: the feed's reader may see its confirmation first.
        self._placed[channel] = feed
        try:
            await feed.subscribe(channel)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.info("cannot subscribe %s on %s (%r); retrying", channel, node.name, exc)
            if self._placed.get(channel) is feed:
                del self._placed[channel]
            if not feed.channels:
                self._feeds.pop(node.name, None)
                feed.close()
            return False
        return True

    def confirmed_on(self, feed: NodeFeed, channel: str) -> None:
        if self._placed.get(channel) is not feed:
            return  # released meanwhile, or placed elsewhere since
        logger.debug("shard channel %s live on %s", channel, feed.node.name)
        if channel in self._live:  # confirmed again: the connection was replaced meanwhile
            self._set_live(channel, False)
        self._set_live(channel, True)
        for waiter in self._waiters.pop(channel, []):
            if not waiter.done():
                waiter.set_result(None)

    def channel_lost(self, feed: NodeFeed, channel: str, why: str) -> None:
        if self._placed.get(channel) is feed:
            logger.info("shard channel %s lost on %s (%s); moving it", channel, feed.node.name, why)
            del self._placed[channel]
            self._set_live(channel, False)
            self._kick.set()

    def node_lost(self, feed: NodeFeed, why: str) -> None:
        if self._feeds.get(feed.node.name) is feed:
            del self._feeds[feed.node.name]
        lost = [c for c, f in self._placed.items() if f is feed]
        if lost:
            logger.warning(
                "shard subscriptions on %s lost (%s); %d channel(s) moving",
                feed.node.name,
                why,
                len(lost),
            )
        for channel in lost:
            del self._placed[channel]
            self._set_live(channel, False)
        self._kick.set()

    def _set_live(self, channel: str, live: bool) -> None:
        if live != (channel in self._live):
            if live:
                self._live.add(channel)
            else:
                self._live.discard(channel)
            self._on_change(channel, live)


def node_redis(node: ClusterNode, options: dict[str, Any]) -> Redis:
    """A client of one node for subscriptions: no reconnection behind our back (a new
    connection may have missed messages: the owner decides), replies unparsed."""
    client = Redis(host=node.host, port=int(node.port), retry=Retry(NoBackoff(), 0), **options)
    client.response_callbacks.clear()
    return client


def slots_of(reply: list[Any], asked: str) -> Slots:
    """The slot ranges of a CLUSTER SLOTS reply with their primaries (an empty host is the
    host of the node ``asked``)."""
    found: Slots = []
    for entry in reply:
        host = _text(entry[2][0]) or asked
        found.append((int(entry[0]), int(entry[1]), ClusterNode(host, int(entry[2][1]), PRIMARY)))
    return found


def _owner_of(slots: Slots, slot: int) -> ClusterNode | None:
    for first, last, node in slots:
        if first <= slot <= last:
            return node
    return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
