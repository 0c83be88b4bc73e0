"""The list of screenings Redis has loaded (``sl:screenings``, scored by start): what the sweep
and the reconciler walk.

It is one key, so on a Redis Cluster it lives on one primary while the screenings live on all of
them. Nothing else stops while that primary does not answer: a screening loaded meanwhile is
served and listed later (this process remembers it and lists it with its next read that works), a
screening dropped meanwhile stays listed until the sweep finds it not loaded, and a read falls back
to what this process last read plus what it loaded since. Only a process that never read the list
has nothing to fall back on: its read fails as before.
"""

from __future__ import annotations

import logging
from typing import Any

from seatlock import keys
from seatlock.engine.transport import REDIS_DOWN, Transport

logger = logging.getLogger(__name__)
KEY = keys.LOADED_SCREENINGS


class LoadedScreenings:
    """This process's way to the list of loaded screenings (one per engine)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._known: set[int] = set()  # the last read, and the loads since
        self._unlisted: dict[int, int] = {}  # screening -> start (ms): loads the list missed
        self._failing = False

    async def add(self, screening_id: int, starts_at_ms: int) -> None:
        """List a screening just loaded (again: its start may have moved)."""
        self._known.add(screening_id)
        try:
            await self.transport.command("ZADD", KEY, starts_at_ms, screening_id)
        except REDIS_DOWN as exc:
            self._unlisted[screening_id] = starts_at_ms
            self._trouble(exc)

    async def remove(self, screening_id: int) -> None:
        """Unlist a screening Redis no longer has; if the list does not answer, the sweep drops
        it later (it finds the screening not loaded)."""
        self._known.discard(screening_id)
        self._unlisted.pop(screening_id, None)
        try:
            await self.transport.command("ZREM", KEY, screening_id)
        except REDIS_DOWN as exc:
            self._trouble(exc)

    async def read(self, started_after_ms: int | None = None) -> list[int]:
        """The listed screenings, in id order; with ``started_after_ms``, those starting after it
        (the others stay listed until they are unloaded: ``remove``). While the list does not
        answer: the last read's."""
        try:
            await self._list_the_missed()
            if started_after_ms is None:
                members: list[Any] = await self.transport.command("ZRANGE", KEY, 0, -1)
            else:
                members = await self.transport.command(
                    "ZRANGEBYSCORE", KEY, f"({started_after_ms}", "+inf"
                )
        except REDIS_DOWN as exc:
            if not self._known:
                raise
            self._trouble(exc)
            return sorted(self._known)
        if self._failing:
            self._failing = False
            logger.warning("the list of loaded screenings answers again")
        self._known = {int(m) for m in members} | set(self._unlisted)
        return sorted(self._known)

    async def started_before(self, ms: int, at_most: int) -> list[int]:
        """Up to ``at_most`` listed screenings starting at ``ms`` or before, in start order; none
        while the list does not answer (they are there for the next call)."""
        try:
            members: list[Any] = await self.transport.command(
                "ZRANGEBYSCORE", KEY, "-inf", ms, "LIMIT", 0, at_most
            )
        except REDIS_DOWN as exc:
            self._trouble(exc)
            return []
        return [int(m) for m in members]

    async def _list_the_missed(self) -> None:
        missed = dict(self._unlisted)
        if not missed:
            return
        pairs = [arg for item in missed.items() for arg in (item[1], item[0])]
        await self.transport.command("ZADD", KEY, *pairs)
        for screening_id, start in missed.items():
            if self._unlisted.get(screening_id) == start:
                del self._unlisted[screening_id]

    def _trouble(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            logger.warning(
                "the list of loaded screenings (%s) does not answer: %r; screenings loaded "
                "meanwhile are listed when it does, the sweep and the reconciler walk this "
                "process's last read of it",
                KEY,
                exc,
            )
