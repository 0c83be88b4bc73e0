"""``measure_loop_lag``: how late the event loop resumes a task that is due, observed as it goes."""

from __future__ import annotations

import asyncio
import time

from seatlock.heartbeats import measure_loop_lag


async def test_a_loop_held_by_other_work_is_observed_late_by_that_long() -> None:
    observed: list[float] = []
    beats: list[float] = []
    stop = asyncio.Event()
    every_s = 0.02
    task = asyncio.create_task(
        measure_loop_lag(stop, lambda: beats.append(time.monotonic()), every_s, observed.append)
    )
    await asyncio.sleep(every_s * 3.5)
    time.sleep(0.15)  # noqa: ASYNC251 (blocks the loop on purpose: the sample due waits for it)
    await asyncio.sleep(every_s * 3.5)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert len(observed) >= 4 and len(beats) == len(observed)
    # The sample due during the block waited for all of it but what was left of its own sleep.
    assert 0.15 - every_s <= max(observed) < 0.15 + 0.1, observed
    assert sorted(observed)[len(observed) // 2] < 0.05, observed  # the others: about on time
