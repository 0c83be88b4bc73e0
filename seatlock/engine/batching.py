"""The call queues shared by the transports built on redis-py (``redispy.py``, ``cluster.py``).

Calls (scripts and plain commands) wait in a queue, a ``Lane``, and go out in batches, one batch
of the lane at a time: the calls made in one event-loop iteration share a batch, calls made while
a batch is answered wait and go out together in the next one. So the calls of a lane reach Redis
in the order they were made, and the events a script publishes keep that order. A transport to
one Redis has one lane; the cluster transport has one per primary, so a primary that does not
answer holds up its own calls only. A script call answered with NOSCRIPT (a restart, SCRIPT
FLUSH, a promoted replica that never loaded it) is sent once more after its scripts are loaded
again; only those calls run late.

A transport supplies ``_pipeline``: how one batch is written (a pipeline of one node, a cluster
pipeline split by node) and how the scripts it needs are loaded first (``_known`` holds the
scripts loaded since the last NOSCRIPT), and, for calls run with replicas
(``SEATLOCK_HOLD_REPLICAS``), the WAIT after them on the connection that carried them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from seatlock.engine.transport import Arg, Replicas, settle

MAX_BATCH = 512  # calls per pipeline
MAX_QUEUE = 20_000  # calls of a lane waiting (queued or in a pipeline); beyond: an error

S = TypeVar("S")  # how a transport names a script (its registered script, or the script's name)


class Call(Generic[S]):
    """A script call (``script``), or a plain command (``script`` None, ``args`` the command)."""

    __slots__ = ("args", "future", "keys", "node", "replicas", "script")

    def __init__(
        self,
        script: S | None,
        keys: Sequence[str],
        args: Sequence[Arg],
        future: asyncio.Future[Any],
        replicas: Replicas | None = None,
        node: Any = None,
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.future = future
        self.replicas = replicas  # set: answered after a WAIT that follows it (transport.py)
        self.node = node  # a cluster's call: the primary of its slot when it was made, or None


class Lane(Generic[S]):
    """Calls sent a batch at a time, in the order they were made."""

    __slots__ = ("calls", "in_flight", "sender")

    def __init__(self) -> None:
        self.calls: deque[Call[S]] = deque()  # made, not yet sent
        self.in_flight = 0  # calls in the batch being answered
        self.sender: asyncio.Task[None] | None = None


class Batcher(Generic[S]):
    """Queues calls and sends them a batch at a time through ``_pipeline``."""

    def __init__(self) -> None:
        self._known: set[S] = set()  # scripts loaded by this transport since the last NOSCRIPT
        self._lane: Lane[S] = Lane()  # a single Redis's calls (a cluster has one per node)
        self.pipelines = 0  # pipelines sent so far (tests and stats)
        self.calls = 0  # commands sent so far

    async def _pipeline(self, batch: list[Call[S]]) -> list[Any]:
        """Send one batch, loading the scripts not in ``_known`` first; one reply per call
        (an error reply as its exception). Raises when no reply can be trusted."""
        raise NotImplementedError

    def _failure(self, exc: Exception) -> Exception:
        """What the calls of a batch that failed as a whole are given."""
        if isinstance(exc, OSError):
            return RedisConnectionError(f"Lost the connection to Redis: {exc!r}")
        return exc

    def _call(
        self,
        script: S | None,
        keys: Sequence[str],
        args: Sequence[Arg],
        replicas: Replicas | None = None,
    ) -> Any:
        return self._enqueue(self._lane, script, keys, args, replicas)

    def _enqueue(
        self,
        lane: Lane[S],
        script: S | None,
        keys: Sequence[str],
        args: Sequence[Arg],
        replicas: Replicas | None = None,
        node: Any = None,
    ) -> asyncio.Future[Any]:
        if len(lane.calls) + lane.in_flight >= MAX_QUEUE:
            raise RedisConnectionError("Too many calls waiting for Redis")
        loop = asyncio.get_running_loop()
        call = Call(script, keys, args, loop.create_future(), replicas, node)
        lane.calls.append(call)
        if lane.sender is None:
            # Its first step runs after every callback already ready: the calls made in this
            # iteration go out in one batch.
            lane.sender = loop.create_task(self._send_all(lane))
        return call.future

    def _lanes(self) -> list[Lane[S]]:
        """Every lane of the transport (``_stop_sending`` stops their senders)."""
        return [self._lane]

    async def _send_all(self, lane: Lane[S]) -> None:
        """Send the lane's calls, a batch at a time, until none is left."""
        queue = lane.calls
        try:
            while queue:
                size = min(len(queue), MAX_BATCH)
                batch = [c for c in (queue.popleft() for _ in range(size)) if not c.future.done()]
                if batch:
                    lane.in_flight = len(batch)
                    await self._send(batch)
                    lane.in_flight = 0
        except BaseException:  # cancelled: the loop is shutting down, or aclose()
            for call in queue:
                settle(call.future, RedisConnectionError("Redis transport stopped"))
            queue.clear()
            raise
        finally:
            lane.sender = None
            lane.in_flight = 0

    async def _send(self, batch: list[Call[S]], retry: bool = True) -> None:
        try:
            replies = await self._pipeline(batch)
        except asyncio.CancelledError:
            for call in batch:
                settle(call.future, RedisConnectionError("Redis transport stopped"))
            raise
        except Exception as exc:  # the connection failed: no reply of the batch can be trusted
            failure = self._failure(exc)
            for call in batch:
                settle(call.future, failure)
            return
        again: list[Call[S]] = []
        for call, reply in zip(batch, replies, strict=True):
            if retry and call.script is not None and isinstance(reply, NoScriptError):
                again.append(call)
            else:
                settle(call.future, reply)
        if again:
            # The server lost our scripts (restart, SCRIPT FLUSH, a promoted replica): load them
            # again; only these calls run late, after the batch they were part of.
            self._known.clear()
            await self._send(again, retry=False)

    async def _stop_sending(self) -> None:
        """Cancel the batches in flight: what waits fails with a ConnectionError."""
        senders = [lane.sender for lane in self._lanes() if lane.sender is not None]
        for sender in senders:
            sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
