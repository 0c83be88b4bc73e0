"""Which sessions a process may trust without asking Redis, kept current by pub/sub.

A signed-in request normally costs no I/O: the token's signature is verified once per process
(seatlock/accounts/tokens.py) and its session is found in ``SessionTrust.confirmed``, the
sessions this process saw active in Redis or PostgreSQL within the last ``CONFIRM_SECONDS``.
Every revocation is written to Redis ("0") and published on ``CHANNEL``; the revoking process
applies it to its own state before answering, so its next request is refused at once. What
outlives a request (an open WebSocket) registers with ``SessionTrust.on_revoke`` and is told by
``revoke`` in every process, as the revocation arrives.

Cross-process window: another process drops the session when the pub/sub message reaches it
(well under a millisecond on one host, a network round trip otherwise). A request that process
serves in between is still accepted; none after. Redis writes the "0" before publishing, so a
process that checks Redis meanwhile already sees the revocation.

What the channel cannot tell, and how it is covered:
- a lost subscription (messages missed): nothing is trusted while disconnected, and every
  session is checked in Redis again after resubscribing (``on_resubscribe`` tells what holds
  sessions open, which checks its own again);
- a Redis flush erases the "0"s the revocations wrote: the subscriber's connection tracks
  ``FLUSH_CANARY`` (client-side caching), and Redis notifies every tracking client of a
  flush; the notice empties ``confirmed``, so each session is next checked in Redis, which no
  longer knows it, and then in PostgreSQL, the record of every revocation;
- a revocation written to PostgreSQL only (by hand) is seen within ``CONFIRM_SECONDS``, or at
  once after a flush;
- a Redis restored from an older snapshot (restarted from an RDB or AOF older than its last
  writes, or failed over to a replica that lagged) has its sessions' "1" again where revocations
  had written "0", and neither the channel nor the flush tracking says so. So each time the feed
  (re)subscribes, which a restart makes it do, and when the process starts, the revocations
  PostgreSQL recorded within the revoked set's window are read (``recent``) and applied before
  anything is trusted: no access token of those sessions is accepted, by a process that was
  running or one started since.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from redis.asyncio import Connection, Redis, SSLConnection
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from seatlock import keys
from seatlock.heartbeats import Beat, no_beat, pause, supervised

logger = logging.getLogger(__name__)

# Pub/sub channel of revoked session ids (space-separated), and the never-written key whose
# client-side tracking tells this module that Redis was flushed.
CHANNEL = f"{keys.PREFIX}sess-revoked"
FLUSH_CANARY = f"{keys.PREFIX}flush-canary"
CONFIRM_SECONDS = 30.0
MAX_CONFIRMED = 100_000
INVALIDATIONS = "__redis__:invalidate"  # where RESP2 delivers client-tracking notices
RETRY_SECONDS = 1.0
# How the feed connects to the canary's node of a Redis Cluster (with the ssl_* options). Only
# that node's flush is noticed: a flush (or a failover losing writes) of another primary erases
# the "0"s stored there and leaves ``confirmed`` as it is.
# The revocations PostgreSQL recorded within the revoked set's window (``listening``'s ``recent``).
RecentRevocations = Callable[[], Awaitable[Iterable[str]]]
NODE_OPTIONS = frozenset(
    ("host", "port", "username", "password", "socket_timeout", "socket_connect_timeout")
)


class SessionTrust:
    """Per-process session state: confirmed active sessions and recently revoked ones."""

    def __init__(self, keep_revoked_seconds: float) -> None:
        # session id -> monotonic deadline, soonest first (a confirmation goes to the end)
        self.confirmed: OrderedDict[str, float] = OrderedDict()
        self.revoked: dict[str, float] = {}  # session id -> monotonic time it was learned
        self.live = False  # subscribed and tracking flushes: confirmations may be kept
        self.epoch = 0
        # session id -> what to call once it is revoked (its open WebSockets: ``on_revoke``)
        self._watching: dict[str, list[Callable[[], None]]] = {}
        # called each time the feed (re)subscribed: revocations may have been missed before
        self.on_resubscribe: list[Callable[[], None]] = []
        self.keep_revoked_seconds = keep_revoked_seconds
        self._trimmed = time.monotonic()

    def trusts(self, session_id: str) -> bool:
        deadline = self.confirmed.get(session_id)
        return deadline is not None and deadline > time.monotonic()

    def confirm(self, session_id: str, epoch: int) -> None:
        """Trust a session found active by a check that started in ``epoch``."""
        # A revocation or flush that arrived while the check awaited Redis/PostgreSQL changed the
        # epoch or the revoked set: the check's answer may predate it, so it is not kept.
        if not self.live or epoch != self.epoch or session_id in self.revoked:
            return
        now, confirmed = time.monotonic(), self.confirmed
        # Lapsed confirmations go from the front as new ones come, and at MAX_CONFIRMED the
        # oldest live one: the others stay trusted (the sessions of a crowd were all checked
        # again at once when a full dict was emptied).
        while confirmed:
            oldest, deadline = next(iter(confirmed.items()))
            if deadline > now and len(confirmed) < MAX_CONFIRMED:
                break
            del confirmed[oldest]
        confirmed[session_id] = now + CONFIRM_SECONDS
        confirmed.move_to_end(session_id)

    def revoke(self, session_ids: Iterable[str]) -> None:
        now = time.monotonic()
        called: list[Callable[[], None]] = []  # after the state changed: they may read it
        for session_id in session_ids:
            self.revoked[session_id] = now
            self.confirmed.pop(session_id, None)
            called.extend(self._watching.pop(session_id, ()))
        if now - self._trimmed > 60:
            self._trim(now)
        for callback in called:
            _call(callback)

    def on_revoke(self, session_id: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once, from ``revoke``) when the session is revoked in any process;
        what holds a session open beyond one request (a WebSocket) closes it then."""
        self._watching.setdefault(session_id, []).append(callback)

    def forget_callback(self, session_id: str, callback: Callable[[], None]) -> None:
        """Take back ``on_revoke``'s callback (its connection ended)."""
        callbacks = self._watching.get(session_id)
        if callbacks is None or callback not in callbacks:
            return
        callbacks.remove(callback)
        if not callbacks:
            del self._watching[session_id]

    def watched(self) -> list[str]:
        """The sessions with a callback waiting for their revocation."""
        return list(self._watching)

    def resubscribed(self) -> None:
        """The feed is subscribed again: revocations published meanwhile were missed."""
        for callback in list(self.on_resubscribe):
            _call(callback)

    def forget_all(self) -> None:
        """Distrust every session (flush or lost subscription); checks in flight are void."""
        self.epoch += 1
        self.confirmed.clear()

    def _trim(self, now: float) -> None:
        # A session's access tokens expire within the token lifetime of its revocation, and
        # new ones are never issued for it, so older entries can no longer matter.
        self._trimmed = now
        keep = self.keep_revoked_seconds
        self.revoked = {s: t for s, t in self.revoked.items() if now - t < keep}


@contextlib.asynccontextmanager
async def listening(
    redis: Redis | RedisCluster,
    trust: SessionTrust,
    beat: Beat = no_beat,
    recent: RecentRevocations | None = None,
) -> AsyncIterator[asyncio.Task[None]]:
    """Follow revocations and flushes for as long as the block runs (the task that does);
    ``recent`` is read each time the feed subscribes (see the module's note)."""
    stop = asyncio.Event()
    start = functools.partial(follow, redis, trust, stop, beat, recent)  # raised: started again
    task = asyncio.create_task(supervised("session_feed", start, stop))
    try:
        yield task
    finally:
        stop.set()
        task.cancel()  # it may be waiting a second for a message
        await asyncio.gather(task, return_exceptions=True)
        trust.live = False


async def follow(
    redis: Redis | RedisCluster,
    trust: SessionTrust,
    stop: asyncio.Event,
    beat: Beat = no_beat,
    recent: RecentRevocations | None = None,
) -> None:
    while not stop.is_set():
        try:
            await _follow_once(redis, trust, stop, beat, recent)
        except (RedisError, OSError) as exc:
            logger.warning("session revocation feed lost (%s); retrying", exc)
        finally:
            trust.live = False
            trust.forget_all()
        await pause(stop, RETRY_SECONDS, beat)


async def _follow_once(
    redis: Redis | RedisCluster,
    trust: SessionTrust,
    stop: asyncio.Event,
    beat: Beat,
    recent: RecentRevocations | None,
) -> None:
    if not isinstance(redis, RedisCluster):
        await _follow_node(redis, trust, stop, beat, recent)
        return
    # A cluster forwards PUBLISH to every node, so one node's subscription hears every
    # revocation; the canary's own node is the one whose flush is noticed (see NODE_OPTIONS).
    await redis.initialize()
    node = redis.get_node_from_key(FLUSH_CANARY)
    if node is None:
        raise RedisError("no cluster node serves the flush canary's slot")
    given = node.connection_kwargs
    options = {k: v for k, v in given.items() if k in NODE_OPTIONS or k.startswith("ssl_")}
    tls = issubclass(given.get("connection_class", Connection), SSLConnection)
    async with Redis(ssl=tls, **options) as client:
        await _follow_node(client, trust, stop, beat, recent)


async def _follow_node(
    redis: Redis,
    trust: SessionTrust,
    stop: asyncio.Event,
    beat: Beat,
    recent: RecentRevocations | None,
) -> None:
    pubsub = redis.pubsub()
    tracker = _FlushTracker(trust)
    try:
        await tracker.attach(pubsub)
        await pubsub.subscribe(CHANNEL, INVALIDATIONS)
        # Messages missed before this point were revocations already written to Redis:
        # checking every session there again covers them; PostgreSQL's recent ones cover a
        # Redis that went back in time (see the module's note).
        trust.forget_all()
        await _learn_recent(trust, recent)
        trust.live = True
        trust.resubscribed()
        while not stop.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            beat()
            if tracker.broken:
                raise RedisError("the subscription reconnected without flush tracking")
            if message is not None:
                _apply(trust, message)
    finally:
        trust.live = False
        tracker.detach()
        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed in redis-py 8


async def _learn_recent(trust: SessionTrust, recent: RecentRevocations | None) -> None:
    if recent is None:
        return
    try:
        trust.revoke(await recent())
    except Exception as exc:  # PostgreSQL down: Redis's word stands, as it did before
        logger.warning("recent session revocations not read from PostgreSQL: %r", exc)


class _FlushTracker:
    """Client tracking on the subscriber's own connection, redirected to itself."""

    def __init__(self, trust: SessionTrust) -> None:
        self.trust = trust
        self.broken = False
        self._conn: Any = None

    async def attach(self, pubsub: PubSub) -> None:
        await pubsub.connect()  # type: ignore[no-untyped-call]
        conn = self._conn = pubsub.connection
        assert conn is not None
        await conn.send_command("CLIENT", "ID")
        client_id = await conn.read_response()
        await conn.send_command(
            "CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST", "PREFIX", FLUSH_CANARY
        )
        if await conn.read_response() not in (b"OK", "OK"):
            raise RedisError("CLIENT TRACKING refused")
        # RESP3 delivers tracking notices as push messages to the parser, not to the channel.
        parser = getattr(conn, "_parser", None)
        if parser is not None and hasattr(parser, "set_invalidation_push_handler"):
            parser.set_invalidation_push_handler(self.on_invalidation)
        conn.register_connect_callback(self.on_reconnect)

    def detach(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.deregister_connect_callback(self.on_reconnect)
        parser = getattr(conn, "_parser", None)
        if parser is not None and hasattr(parser, "set_invalidation_push_handler"):
            parser.set_invalidation_push_handler(None)

    async def on_invalidation(self, response: Any) -> None:
        self.trust.forget_all()

    async def on_reconnect(self, connection: Any) -> None:
        # redis-py resubscribes after a reconnect, but tracking went with the old connection.
        self.trust.live = False
        self.trust.forget_all()
        self.broken = True


def _call(callback: Callable[[], None]) -> None:
    # A callback's failure is its own: the revocation stands and the others are still called.
    try:
        callback()
    except Exception:
        logger.exception("session callback %r failed", callback)


def _apply(trust: SessionTrust, message: dict[str, Any]) -> None:
    channel = message.get("channel")
    if channel in (INVALIDATIONS, INVALIDATIONS.encode()):
        trust.forget_all()
        return
    data = message.get("data")
    if isinstance(data, bytes):
        trust.revoke(data.decode().split())
    elif isinstance(data, str):
        trust.revoke(data.split())
