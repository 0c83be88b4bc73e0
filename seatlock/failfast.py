"""Fail fast while a backing server does not answer: refuse at once until a probe gets through.

A wait on PostgreSQL or Redis that timed out says the server does not answer (stopped, hung, cut
off). From then on, what needs it is refused at once (a 503 with Retry-After) instead of each
request waiting a whole timeout, while one probe at a time asks the server again, pausing
PAUSE_S between tries; its first answer ends it. A timeout while the server is fine (one slow
statement) costs only the probe's round trip. Used by the PostgreSQL pools (db/pool.py) and the
fast Redis transport (seatlock/engine/wire.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

PAUSE_S = (0.05, 1.0)  # between probes: first, at most (doubling in between)


class FailFast:
    """Whether ``what`` is known not to answer, and the probe that finds out when it does.

    ``probe`` makes one try and raises unless the server answered; ``logger`` is the owner's,
    so its lines say where they come from."""

    def __init__(
        self, what: str, probe: Callable[[], Awaitable[object]], logger: logging.Logger
    ) -> None:
        self.what = what
        self._probe = probe
        self._logger = logger
        self._task: asyncio.Task[None] | None = None

    @property
    def answering(self) -> bool:
        """False from a timeout until a probe has had an answer."""
        return self._task is None

    def timed_out(self) -> None:
        """A wait on the server timed out: refuse at once until a probe has an answer."""
        if self._task is None:
            self._logger.warning(
                "%s did not answer in time: what needs it is refused at once until it does",
                self.what,
            )
            self._task = asyncio.get_running_loop().create_task(self._until_answered())

    async def _until_answered(self) -> None:
        pause, longest = PAUSE_S
        started = time.monotonic()
        while True:
            try:
                await self._probe()
                break
            except Exception as exc:  # anything but an answer: still not answering
                self._logger.debug("%s probe: %r", self.what, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, longest)
        self._task = None
        self._logger.warning("%s answers again after %.1f s", self.what, time.monotonic() - started)

    def stop(self) -> asyncio.Task[None] | None:
        """Stop probing (the owner closes); the probe's task, cancelled, if one ran."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task

    async def aclose(self) -> None:
        """Stop probing, and wait until the probe has ended."""
        task = self.stop()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
