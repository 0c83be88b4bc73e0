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
clock that drifts or is stepped; a sample made imprecise by load does not replace a better one
that still agrees with it (``preferred``). ``now_ms`` is then the local clock plus the offset:
no Redis call, and well under a microsecond on the hold path.

Why not TIME inside the scripts (allowed since Redis 5 replicates script effects): it would be
exact, but the mirrors, the sweep's candidate query and the seat-map cache decide in Python,
without a script, and need Redis's time anyway; scripts reading TIME would also stop taking
time passed in, which the tests use to reach expiry without sleeping. One offset, used by
everything, keeps a single clock and a single rule: ARGV's now is Redis's now.

A deadline is decided when the engine reads the clock, the lease's TTL counts from when the
script runs: a lease may outlive its deadline by the call's latency (a first hold loads the
screening in between), never end before it. Scripts end a hold at its deadline whatever the
lease says (lua/lib.lua, ``owned_lease``), and the sweep frees it from then on.

On a cluster, TIME goes to one node; the primaries are expected to keep NTP time among
themselves, as Redis itself assumes when a replica takes over a lease's expiry. PostgreSQL's
now() (payment deadlines, ticket timestamps) is a separate clock that only PostgreSQL judges.

``skew_ms`` shifts this process's local clock (SEATLOCK_CLOCK_OFFSET_MS): a test and diagnostic
knob that makes one host's clock wrong on purpose; the offset measured against Redis cancels it.
Each sync publishes the offset and its error as gauges, one sample per worker
(``seatlock_clock_offset_seconds{clock="redis"}``): a host whose offset grows lost its NTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from seatlock.errors import SeatLockError
from seatlock.heartbeats import Beat, no_beat, pause
from seatlock.metrics import CLOCK_ERROR, CLOCK_OFFSET

logger = logging.getLogger(__name__)

SAMPLES = 3  # TIME round trips per sync; the shortest one is kept
WARN_MS = 1000  # an offset this large (or a jump this large) is logged as a warning
# How fast two clocks may drift apart (100 ppm: generous for NTP-less hosts): a kept sample's
# error grows by this much per ms since it was taken.
DRIFT = 1e-4
Command = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of Redis's clock: its offset to the local clock and how far off it may be."""

    offset_ms: float  # Redis's clock minus the (shifted) local clock
    error_ms: float  # half the round trip (grown by DRIFT while kept)
    taken_ms: float  # local clock when taken


def preferred(kept: Sample | None, fresh: Sample) -> Sample:
    """The sample to go on with. Under load a TIME reply may wait behind a batch of scripts, so
    a fresh sample can be less precise than the kept one: the kept one stays (its error aged by
    the drift since) while it is more precise and agrees with the fresh one within both errors.
    When they disagree, a clock was stepped: the fresh one wins."""
    if kept is None:
        return fresh
    aged = kept.error_ms + DRIFT * max(0.0, fresh.taken_ms - kept.taken_ms)
    agree = abs(fresh.offset_ms - kept.offset_ms) <= fresh.error_ms + aged
    if agree and aged < fresh.error_ms:
        return Sample(kept.offset_ms, aged, fresh.taken_ms)
    return fresh


class RedisClock:
    """Redis's clock as this process reads it: the local clock plus a measured offset."""

    def __init__(self, command: Command, *, skew_ms: int = 0) -> None:
        self._command = command  # a transport's command(): TIME goes through it
        self.skew_ms = skew_ms  # shifts the local clock (tests, diagnostics)
        self.sample: Sample | None = None  # the reading in use; None: never synced
        self._shift = float(skew_ms)  # skew + offset: added to the wall clock on every read

    @property
    def synced(self) -> bool:
        return self.sample is not None

    @property
    def offset_ms(self) -> float:
        """Redis's clock minus this process's (shifted) clock; 0 until the first sync."""
        return 0.0 if self.sample is None else self.sample.offset_ms

    @property
    def error_ms(self) -> float | None:
        """How far ``now_ms`` may be from Redis's clock; None until the first sync."""
        return None if self.sample is None else self.sample.error_ms

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
            if sample.error_ms < best.error_ms:
                best = sample
        kept, self.sample = self.sample, preferred(self.sample, best)
        self._shift = self.skew_ms + self.sample.offset_ms
        # Once per sync, never per request. labels() here, not at import: a child made at import
        # would show a 0 for every process that imports this module (seatlock/metrics.py).
        CLOCK_OFFSET.labels("redis").set(self.sample.offset_ms / 1000)
        CLOCK_ERROR.labels("redis").set(self.sample.error_ms / 1000)
        moved = self.sample.offset_ms - (kept.offset_ms if kept else 0.0)
        if kept is None or abs(moved) > WARN_MS:
            offset = self.sample.offset_ms
            loud = abs(offset) > WARN_MS or kept is not None
            logger.log(
                logging.WARNING if loud else logging.INFO,
                "Redis's clock is %+.0f ms from this host's (±%.1f ms)",
                offset,
                self.sample.error_ms,
            )

    async def _sample(self) -> Sample:
        """One TIME round trip."""
        before = self.local_ms()
        reply = await self._command("TIME")
        after = self.local_ms()
        redis_ms = int(reply[0]) * 1000 + int(reply[1]) / 1000
        return Sample(redis_ms - (before + after) / 2, (after - before) / 2, after)

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
