"""This process's reading of Redis's clock: the one clock that decides every hold's time.

With many API hosts, a host whose clock is off must not change who gets a seat, when a hold
expires or what watchers see. Every hold time (the ``now`` a script gets in ARGV, the deadlines
it writes, the mirrors' "held for at least another MARGIN_MS", the sweep's "deadline passed",
``expires_at`` in answers and events, the seat-map cache's validity) is therefore read from
Redis's clock, never from the host's. A lease's TTL already runs on Redis's clock; now the
deadline recorded beside it does too, so the two agree on every host.

How: an NTP-style offset. ``sync`` sends TIME a few times, notes the local clock before and
after each reply, and keeps the sample with the shortest round trip: Redis read its clock
somewhere inside that round trip, so the midpoint is off by half of it at most (``error_ms``,
well under a millisecond on a LAN). ``run`` repeats it every few seconds, which follows a host
clock that drifts or is stepped. ``now_ms`` is then the local clock plus the offset: no Redis
call and about a hundred nanoseconds on the hold path.

Why not TIME inside the scripts (allowed since Redis 5 replicates script effects): it would be
exact, but the mirrors, the sweep's candidate query and the seat-map cache decide in Python,
without a script, and need Redis's time anyway; scripts reading TIME would also stop taking
time passed in, which the tests use to reach expiry without sleeping. One offset, used by
everything, keeps a single clock and a single rule: ARGV's now is Redis's now.

On a cluster, TIME goes to one node; the primaries are expected to keep NTP time among
themselves, as Redis itself assumes when a replica takes over a lease's expiry. PostgreSQL's
now() (payment deadlines, ticket timestamps) is a separate clock that only PostgreSQL judges.

``skew_ms`` shifts this process's local clock (SEATLOCK_CLOCK_OFFSET_MS): a test and diagnostic
knob that makes one host's clock wrong on purpose; the offset measured against Redis cancels it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from seatlock.errors import SeatLockError
from seatlock.heartbeats import Beat, no_beat, pause

logger = logging.getLogger(__name__)

SAMPLES = 3  # TIME round trips per sync; the shortest one is kept
REFRESH_S = 5.0  # default period of the sync loop
WARN_MS = 1000  # a host clock further off than this from Redis's is logged as a warning
Command = Callable[..., Awaitable[Any]]


class RedisClock:
    """Redis's clock as this process reads it: the local clock plus a measured offset."""

    def __init__(self, command: Command, *, skew_ms: int = 0) -> None:
        self._command = command  # a transport's command(): TIME goes through it
        self.skew_ms = skew_ms  # shifts the local clock (tests, diagnostics)
        self.offset_ms = 0.0  # Redis's clock minus the (shifted) local clock
        self.error_ms: float | None = None  # half the round trip of the kept sample; None: unsynced
        self._shift = float(skew_ms)  # skew + offset: added to the wall clock on every read

    @property
    def synced(self) -> bool:
        return self.error_ms is not None

    def local_ms(self) -> float:
        """This process's own clock (ms since the epoch), skew included."""
        return time.time() * 1000 + self.skew_ms

    def now_ms(self) -> int:
        """Redis's clock now, in ms since the epoch (the local clock until the first sync)."""
        return int(time.time() * 1000 + self._shift)

    async def sync(self, samples: int = SAMPLES) -> None:
        """Measure the offset to Redis's clock again; raises what the transport raises."""
        best = await self._sample()
        for _ in range(samples - 1):
            sample = await self._sample()
            if sample[1] < best[1]:
                best = sample
        offset, round_trip = best
        first = not self.synced
        self.offset_ms, self.error_ms = offset, round_trip / 2
        self._shift = self.skew_ms + offset
        if first:
            level = logging.WARNING if abs(offset) > WARN_MS else logging.INFO
            logger.log(
                level,
                "Redis's clock is %+.0f ms from this host's (±%.1f ms)",
                offset,
                self.error_ms,
            )

    async def _sample(self) -> tuple[float, float]:
        """One TIME round trip: (offset, round trip), in ms."""
        before = self.local_ms()
        reply = await self._command("TIME")
        after = self.local_ms()
        redis_ms = int(reply[0]) * 1000 + int(reply[1]) / 1000
        return redis_ms - (before + after) / 2, after - before

    async def run(self, interval_s: float, stop: asyncio.Event, beat: Beat = no_beat) -> None:
        """Sync every ``interval_s`` until ``stop`` is set; a failed sync keeps the last offset
        (clocks drift by microseconds per second, so it stays good for a long while)."""
        while not stop.is_set():
            try:
                await self.sync()
            except (SeatLockError, RedisError, OSError) as exc:
                logger.warning("cannot read Redis's clock (%r); keeping the last offset", exc)
            beat()
            await pause(stop, interval_s, beat)
