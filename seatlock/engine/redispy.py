"""The redis-py transport (``SEATLOCK_REDIS_TRANSPORT=redis-py``): redis-py's public API only.

The plain baseline the fast transport (``seatlock.engine.wire``) is measured against, and the one
to build on where ours cannot go. Scripts are registered with ``register_script``. Calls (scripts
and plain commands) go out in non-transactional pipelines, one pipeline at a time: the calls made
in one event-loop iteration share a round trip, calls made while a pipeline is answered wait and
go out together in the next one, so the calls of one process reach Redis in the order they were
made, as with the fast transport (the queue and its NOSCRIPT retry: ``seatlock.engine.batching``,
shared with the cluster transport). A script goes as EVALSHA alone once this transport has loaded
it; before that (and after a NOSCRIPT) it is added to the pipeline through its ``AsyncScript``,
so redis-py loads it (SCRIPT EXISTS, SCRIPT LOAD) before the pipeline is written: a NOSCRIPT
retry would run the call after later ones. Subscriptions use redis-py's ``PubSub``.

The transport has a connection pool of its own, connecting like the client it is made from, on
RESP2 with redis-py's reply parsing off, so replies are the fast transport's. Nothing is retried
after a lost connection: a call's outcome is then unknown, and it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from seatlock.engine.batching import Batcher, Call
from seatlock.engine.scripts import NAMES, source
from seatlock.engine.transport import (
    HEALTH_S,
    Arg,
    OnMessage,
    Replicas,
    ScriptTimer,
    replicated,
    wait_command,
)

# What a transport takes over from the client it is made like (with the ``ssl_*`` options); the
# rest of a pool's connection settings is the pool's own business.
CONNECTION_OPTIONS = frozenset(
    (
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "credential_provider",
        "client_name",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "health_check_interval",
    )
)


class RedisPyTransport(Batcher[AsyncScript]):
    """Every call of the process through one redis-py client, a pipeline per batch."""

    def __init__(self, client: Redis) -> None:
        super().__init__()
        self._client = client
        self._scripts = {name: client.register_script(source(name)) for name in NAMES}
        self._timer = ScriptTimer()
        self.db = int(client.connection_pool.connection_kwargs.get("db") or 0)

    @classmethod
    def like(cls, redis: Redis) -> RedisPyTransport:
        """A transport on a pool of its own, connecting like ``redis``."""
        pool = redis.connection_pool
        given = pool.connection_kwargs
        options = {k: v for k, v in given.items() if k in CONNECTION_OPTIONS or k[:4] == "ssl_"}
        options.update(protocol=2, retry=Retry(NoBackoff(), 0))
        client = Redis.from_pool(ConnectionPool(connection_class=pool.connection_class, **options))
        # Replies as Redis sends them, like the fast transport's (redis-py would make ZMSCORE
        # floats, PING True, ...): the engine parses what it reads itself.
        client.response_callbacks.clear()
        return cls(client)

    async def run(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[int | str],
        replicas: Replicas | None = None,
    ) -> list[Any]:
        script = self._scripts.get(name)
        if script is None:
            raise ValueError(f"no script {name!r}")
        if self._timer.due():
            return list(await self._timer.time(name, self._call(script, keys, args, replicas)))
        return list(await self._call(script, keys, args, replicas))

    async def command(self, *args: Arg) -> Any:
        return await self._call(None, (), args)

    async def _pipeline(self, batch: list[Call[AsyncScript]]) -> list[Any]:
        fresh = {c.script for c in batch if c.script is not None} - self._known
        async with self._client.pipeline(transaction=False) as pipe:
            for call in batch:
                script = call.script
                if script is None:
                    pipe.execute_command(*call.args)
                elif script in fresh:
                    await script(call.keys, call.args, client=pipe)  # loaded before the pipeline
                else:
                    pipe.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
            # A pipeline runs on one pooled connection: a WAIT at its end counts its scripts.
            wanted = [c.replicas for c in batch if c.replicas is not None]
            if wanted:
                pipe.execute_command(*wait_command(wanted))
            self.pipelines += 1
            self.calls += len(batch) + len(fresh) + bool(wanted)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        self._known.update(fresh)
        return _replicated(batch, replies) if wanted else replies

    async def subscribe(
        self,
        channel: str,
        on_message: OnMessage,
        *,
        pattern: bool = False,
        on_live: Callable[[], None] | None = None,
        health_s: float = HEALTH_S,
    ) -> PubSubFeed:
        pubsub = self._client.pubsub()
        try:
            await (pubsub.psubscribe(channel) if pattern else pubsub.subscribe(channel))
        except BaseException:
            await pubsub.aclose()
            raise
        return PubSubFeed(pubsub, on_message, on_live, health_s)

    async def aclose(self) -> None:
        """Fail what waits and close the pool; a later call connects again."""
        await self._stop_sending()
        await self._client.connection_pool.disconnect()


class PubSubFeed:
    """A redis-py ``PubSub`` read by a task of its own until it ends.

    redis-py reconnects and resubscribes a PubSub by itself after a lost connection; messages
    published meanwhile are lost, so a second confirmation ends the feed (its owner resubscribes
    and resyncs). A connection silent for ``health_s`` is pinged, and dropped after another
    ``health_s`` without an answer.
    """

    def __init__(
        self,
        pubsub: PubSub,
        on_message: OnMessage,
        on_live: Callable[[], None] | None,
        health_s: float,
    ) -> None:
        self._pubsub = pubsub
        self._on_message = on_message
        self._on_live = on_live
        self._health_s = health_s
        self._live = False
        self.trouble = "closed by Redis"
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    def close(self) -> None:
        self._reader.cancel()

    async def _read(self) -> None:
        try:
            while await self._next():
                pass
        except (RedisError, OSError) as exc:
            self.trouble = repr(exc)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._pubsub.aclose())
            if not self.closed.done():
                self.closed.set_result(None)

    async def _next(self) -> bool:
        """Deliver the next message; False when the feed must end."""
        pubsub = self._pubsub
        message = await pubsub.get_message(timeout=self._health_s)
        if message is None:  # silent for health_s: ping, and give up if that stays unanswered
            await pubsub.ping()
            message = await pubsub.get_message(timeout=self._health_s)
            if message is None:
                self.trouble = f"no answer from Redis for {self._health_s * 2:g} s"
                return False
        return self._deliver(message)

    def _deliver(self, message: dict[str, Any]) -> bool:
        kind = message["type"]
        if kind in ("message", "pmessage"):
            self._on_message(message["data"])
        elif kind in ("subscribe", "psubscribe"):
            if self._live:  # redis-py reconnected by itself: messages may have been lost
                self.trouble = "resubscribed after a lost connection"
                return False
            self._live = True
            if self._on_live is not None:
                self._on_live()
        return True


def _replicated(batch: Sequence[Call[AsyncScript]], replies: list[Any]) -> list[Any]:
    """The batch's replies, those of calls run with replicas as the WAIT after them allows."""
    acked = replies.pop()
    return [
        reply if call.replicas is None else replicated(reply, acked, call.replicas)
        for call, reply in zip(batch, replies, strict=True)
    ]
