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

A script run with ``replicas`` (``SEATLOCK_HOLD_REPLICAS``) is answered only after ``WAIT``
confirmed that many replicas have its writes, or raises ``NotReplicated`` carrying its reply.
WAIT counts the writes of the connection it is sent on, so each transport sends it right after
the scripts, on their connection; one WAIT covers every script of a batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
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
    rx.ClusterError,  # redis-py gave up following redirections (TTL exhausted): a slot moving
    rx.RedisClusterUnreachableError,
    rx.OutOfMemoryError,
)
HEALTH_S = 15.0  # a silent subscription is pinged after this, dropped after twice this

Arg = str | int | bytes
T = TypeVar("T")


async def answered(calls: Iterable[Awaitable[T]]) -> tuple[list[T | None], list[BaseException]]:
    """The replies of calls made together (the transport sends them in one round trip), None
    for each whose Redis node could not answer (REDIS_DOWN: on a cluster, one primary down),
    and those errors; any other error is raised."""
    replies = await asyncio.gather(*calls, return_exceptions=True)
    values: list[T | None] = []
    down: list[BaseException] = []
    for reply in replies:
        if isinstance(reply, REDIS_DOWN):
            down.append(reply)
            values.append(None)
        elif isinstance(reply, BaseException):
            raise reply
        else:
            values.append(reply)
    return values, down


OnMessage = Callable[[bytes], None]  # one published payload, in publish order


@dataclass(frozen=True, slots=True)
class Replicas:
    """How many replicas must have a script's writes before its reply is handed out, and how
    long ``WAIT`` may take to confirm it (``SEATLOCK_HOLD_REPLICAS[_TIMEOUT_MS]``)."""

    count: int
    timeout_ms: int


class NotReplicated(Exception):
    """A script ran on the primary, but WAIT did not see its writes on enough replicas in time:
    a failover now could lose them. ``reply`` is the script's own reply."""

    def __init__(self, reply: Any, acked: int, wanted: int) -> None:
        super().__init__(f"{acked} of {wanted} replicas confirmed the write")
        self.reply = reply
        self.acked = acked
        self.wanted = wanted


def replicated(reply: Any, acked: Any, wanted: Replicas) -> Any:
    """What a script call run with ``wanted`` gets once its batch's WAIT answered ``acked``: its
    reply, or NotReplicated (also when WAIT itself was refused); an error reply stays one."""
    if isinstance(reply, BaseException):
        return reply
    count = 0 if isinstance(acked, BaseException) else int(acked)  # WAIT refused: none known
    return reply if count >= wanted.count else NotReplicated(reply, count, wanted.count)


def wait_command(wanted: Sequence[Replicas]) -> tuple[str, int, int]:
    """The one WAIT sent after a batch for its calls run with replicas (the most any asks)."""
    return ("WAIT", max(r.count for r in wanted), max(r.timeout_ms for r in wanted))


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

    async def run(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[int | str],
        replicas: Replicas | None = None,
    ) -> list[Any]:
        """Run the script ``lua/<name>.lua`` with KEYS and ARGV; its reply. With ``replicas``,
        the reply comes once WAIT confirmed that many replicas have the writes, else
        ``NotReplicated`` is raised (the script did run)."""

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
    (``redis+cluster://``) always gets the cluster transport: "fast" sends its calls on a
    connection of ours to each primary, "redis-py" in redis-py's cluster pipelines.
    """
    # Imported here: the implementations import this module's types and constants.
    if isinstance(redis, RedisCluster):
        from seatlock.engine.cluster import ClusterTransport

        return ClusterTransport.like(redis, wired=kind == "fast")
    if kind == "fast":
        from seatlock.engine.wire import FastTransport

        return FastTransport.like(redis)
    if kind == "redis-py":
        from seatlock.engine.redispy import RedisPyTransport

        return RedisPyTransport.like(redis)
    raise ValueError(f"unknown Redis transport {kind!r}: expected one of {', '.join(KINDS)}")
