"""How the engine reaches Redis: one small interface, two implementations chosen by a setting.

``Transport`` is everything the engine, the event hub, the mirrors and the expiry listener ask of
Redis: run a script of ``lua/`` by name, run a plain command, subscribe to a channel or pattern,
close. ``open_transport`` picks the implementation (``SEATLOCK_REDIS_TRANSPORT``):

- ``fast`` (``seatlock.engine.wire``): our own auto-pipelining RESP connection, fed to hiredis.
- ``redis-py`` (``seatlock.engine.redispy``): redis-py's public API only (registered scripts,
  non-transactional pipelines, PubSub); the plain baseline the fast one is measured against.

Both keep the order of one process's calls: a call (script or command) reaches Redis after every
call this process made before it, so events of one screening are published in the order made.
Replies come as Redis sends them (RESP2, bulk strings as bytes), with no per-command parsing; an
error reply raises redis-py's exception for it (``redis.exceptions``), a lost or refused
connection ``redis.exceptions.ConnectionError``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from seatlock.metrics import SCRIPT_SAMPLE, SCRIPT_SECONDS

KINDS = ("fast", "redis-py")

# Redis cannot answer now: down or unreachable, loading its data (BusyLoadingError is a
# ConnectionError), a replica during failover (ReadOnlyError), a cluster moving slots or without
# a primary (TryAgainError, ClusterDownError), out of memory. The engine turns these into
# Unavailable and the api into 503 with Retry-After; other Redis errors are bugs (500).
REDIS_DOWN: tuple[type[Exception], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,
    rx.ReadOnlyError,
    rx.TryAgainError,
    rx.ClusterDownError,
    rx.RedisClusterUnreachableError,
    rx.OutOfMemoryError,
)
HEALTH_S = 15.0  # a silent subscription is pinged after this, dropped after twice this

Arg = str | int | bytes
T = TypeVar("T")
OnMessage = Callable[[bytes], None]  # one published payload, in publish order


class Feed(Protocol):
    """One subscription on a connection of its own (``Transport.subscribe``)."""

    @property
    def closed(self) -> asyncio.Future[None]:
        """Done once the connection is gone: no message is delivered after it."""

    @property
    def trouble(self) -> str:
        """Why the subscription ended, when we ended it (silence, protocol, a lost connection)."""

    def close(self) -> None:
        """End the subscription; ``closed`` follows."""


class Transport(Protocol):
    """The engine's way to Redis (see the module docstring for the guarantees)."""

    @property
    def db(self) -> int:
        """The database number (keyspace event channels name it)."""

    @property
    def calls(self) -> int:
        """Commands sent so far (scripts, their loading and plain commands): stats and tests."""

    async def run(self, name: str, keys: Sequence[str], args: Sequence[int | str]) -> list[Any]:
        """Run the script ``lua/<name>.lua`` with KEYS and ARGV; its reply."""

    async def command(self, *args: Arg) -> Any:
        """Run one plain command (``"ZADD", key, score, member``); its reply."""

    async def subscribe(
        self,
        channel: str,
        on_message: OnMessage,
        *,
        pattern: bool = False,
        on_live: Callable[[], None] | None = None,
        health_s: float = HEALTH_S,
    ) -> Feed:
        """Subscribe on a new connection; ``on_live`` runs once Redis confirms the subscription
        (every message published from then on is delivered). A connection silent for
        ``health_s`` is pinged, and dropped after another ``health_s`` without an answer. The
        feed never resubscribes by itself: a new subscription may have missed messages, so the
        caller decides (resubscribe, resync)."""

    async def aclose(self) -> None:
        """Close the connections; pending calls fail, a later call connects again."""


class ScriptTimer:
    """Times every SCRIPT_SAMPLE-th script call of a transport (seatlock/metrics.py says why
    not every one): ``if timer.due(): reply = await timer.time(name, reply)``."""

    __slots__ = ("_calls", "_children")

    def __init__(self) -> None:
        self._calls = 0
        self._children: dict[str, Any] = {}

    def due(self) -> bool:
        self._calls += 1
        return self._calls % SCRIPT_SAMPLE == 0

    async def time(self, name: str, reply: Awaitable[T]) -> T:
        started = time.perf_counter()
        result = await reply
        child = self._children.get(name)
        if child is None:
            child = self._children[name] = SCRIPT_SECONDS.labels(name)
        child.observe(time.perf_counter() - started)
        return result


def settle(future: asyncio.Future[Any], reply: Any) -> None:
    """Hand a call its reply (an exception is raised in the caller); a cancelled caller's is
    dropped."""
    if future.done():
        return
    if isinstance(reply, BaseException):
        future.set_exception(reply)
    else:
        future.set_result(reply)


def open_transport(kind: str, redis: Redis | RedisCluster) -> Transport:
    """The transport named by ``kind`` (``Settings.redis_transport``), connecting like ``redis``
    (address, TLS, credentials, database, timeouts) on connections of its own. A cluster client
    (``redis+cluster://``) always gets the cluster transport: ``kind`` names the single-node one.
    """
    # Imported here: the implementations import this module's types and constants.
    if isinstance(redis, RedisCluster):
        from seatlock.engine.cluster import ClusterTransport

        return ClusterTransport.like(redis)
    if kind == "fast":
        from seatlock.engine.wire import FastTransport

        return FastTransport.like(redis)
    if kind == "redis-py":
        from seatlock.engine.redispy import RedisPyTransport

        return RedisPyTransport.like(redis)
    raise ValueError(f"unknown Redis transport {kind!r}: expected one of {', '.join(KINDS)}")
