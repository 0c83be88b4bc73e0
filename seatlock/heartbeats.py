"""Heartbeats of a process's background loops: readiness fails when one stops beating.

A loop beats whenever it goes round, and at least every BEAT_S while idle (its waits are cut into
slices, ``pause``), so a silence longer than its allowed one means it is stuck (an await that
never returns, a busy loop) or gone. Each app has its own registry (tests run several in one
process); the beat also goes to the ``seatlock_loop_last_beat_timestamp_seconds`` gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from seatlock.metrics import LOOP_BEAT, LOOP_LAG

logger = logging.getLogger(__name__)

BEAT_S = 1.0  # the longest an idle loop stays silent
LAG_EVERY_S = 0.25  # how often ``measure_loop_lag`` samples the event loop
RESTART_FIRST_S = 1.0  # a loop that raised starts again after this, doubled while it keeps failing
RESTART_MAX_S = 30.0
STABLE_S = 60.0  # a run that lasted this long before it raised starts again after RESTART_FIRST_S
Beat = Callable[[], None]


def no_beat() -> None:
    """The beat of a loop that nobody watches (tests that run one loop alone)."""


class Heartbeats:
    """The last beat of each background loop of this process, and the tasks running them."""

    def __init__(self, silence_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.silence_s = silence_s  # allowed silence before a loop counts as stalled
        self._clock = clock
        self._last: dict[str, float] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def beater(self, name: str) -> Beat:
        """The beat of loop ``name``; the loop counts as beating from now."""
        gauge = LOOP_BEAT.labels(name)
        last, clock = self._last, self._clock

        def beat() -> None:
            last[name] = clock()
            gauge.set(time.time())

        beat()
        return beat

    def watch(self, name: str, task: asyncio.Task[None]) -> None:
        """``task`` runs loop ``name``: once it ends, the loop is stalled whatever it beat."""
        self._tasks[name] = task

    def forget(self, name: str) -> None:
        self._last.pop(name, None)
        self._tasks.pop(name, None)

    def stalled(self) -> dict[str, str]:
        """Each loop's state: "ok", "stopped" (its task ended) or "silent for N s"."""
        now = self._clock()
        states: dict[str, str] = {}
        for name, last in sorted(self._last.items()):
            task = self._tasks.get(name)
            if task is not None and task.done():
                states[name] = "stopped"
            elif now - last > self.silence_s:
                states[name] = f"silent for {now - last:.0f} s"
            else:
                states[name] = "ok"
        return states


async def pause(stop: asyncio.Event, seconds: float, beat: Beat) -> None:
    """Wait ``seconds`` or until ``stop`` is set, beating every BEAT_S meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not stop.is_set():
        left = deadline - loop.time()
        if left <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(left, BEAT_S))
        beat()


async def supervised(name: str, start: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run loop ``name`` (each ``start()`` is a new run of it) until ``stop`` is set. A run that
    raises is logged and started again after a pause, doubled up to RESTART_MAX_S while runs keep
    failing soon after their start; the loop beats nothing meanwhile, so it shows as silent to
    readiness if that lasts. (A loop that raised used to stay down: the process unready for good,
    its work undone, e.g. a history writer's queue growing until it dropped changes.)"""
    delay = RESTART_FIRST_S
    while True:
        started = time.monotonic()
        try:
            await start()
            return
        except Exception as exc:
            if stop.is_set():
                raise
            if time.monotonic() - started >= STABLE_S:
                delay = RESTART_FIRST_S
            logger.error(
                "background loop %s failed, starting it again in %.0f s: %r",
                name,
                delay,
                exc,
                exc_info=exc,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return
        delay = min(delay * 2, RESTART_MAX_S)


async def measure_loop_lag(
    stop: asyncio.Event,
    beat: Beat,
    every_s: float = LAG_EVERY_S,
    observe: Callable[[float], None] = LOOP_LAG.observe,
) -> None:
    """Every ``every_s``, observe how much later than due the loop resumed this task, until
    ``stop`` is set: the time the loop spent on other work first, which every request and event
    of this worker waited too (a saturated worker, a long fan-out, a call that blocks). Timed
    with the clock, not the loop's: uvloop reads its own once per turn of the loop."""
    while not stop.is_set():
        due = time.monotonic() + every_s
        await asyncio.sleep(every_s)
        observe(max(0.0, time.monotonic() - due))
        beat()
