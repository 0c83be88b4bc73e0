"""A per-process cache of rendered seat maps, told of every change of a screening.

What is cached (``api/seatmaps.py`` renders it) needs only the bookkeeping fields of ``Checked``;
the cache decides whether an entry may be served without asking Redis for the version.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Generic, NamedTuple, Protocol, TypeVar

CACHE_SIZE = 512  # screenings per process
TRUST_MS = 250  # longest a cached map is served on events alone, without a version check


class Checked(Protocol):
    checked_ms: int  # when the version was last confirmed current
    seen: int  # the cache's change count then (-1: never trusted)
    epoch: int  # the hub's subscription epoch then


R = TypeVar("R", bound=Checked)


class Flight(NamedTuple, Generic[R]):
    """A map being read and rendered: its result is the state of ``version`` or newer."""

    version: int
    task: asyncio.Task[R]


class SeatMapCache(Generic[R]):
    """R maps by screening id, least recently used evicted first."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._maps: OrderedDict[int, R] = OrderedDict()
        self.changes = 0  # invalidations so far
        self._changed: dict[int, int] = {}  # screening id -> the count at its last invalidation
        self._floor = 0  # entries checked before this count are not trusted
        # The build under way per screening, which callers that read an older or equal version
        # wait for instead of reading the map again (a crowd after each change: one read).
        self.flights: dict[int, Flight[R]] = {}

    def invalidate(self, screening_id: int) -> None:
        """A seat of the screening changed (event or local script): its entry needs a check."""
        self.changes += 1
        self._changed[screening_id] = self.changes
        if len(self._changed) > 4 * self._size:
            # Bounded memory: forget which screenings changed, distrust every entry instead.
            self._changed.clear()
            self._floor = self.changes

    def mark_checked(self, rendered: R, now_ms: int, seen: int, epoch: int) -> None:
        """``rendered`` matched the version read after the cache had ``seen`` changes."""
        rendered.checked_ms, rendered.seen, rendered.epoch = now_ms, seen, epoch

    def trusted(self, screening_id: int, rendered: R, now_ms: int, epoch: int) -> bool:
        """``epoch``: the hub's while it is live, negative when it is not (nothing trusted)."""
        return (
            epoch >= 0
            and rendered.epoch == epoch
            and now_ms - rendered.checked_ms < TRUST_MS
            and rendered.seen >= max(self._floor, self._changed.get(screening_id, 0))
        )

    def get(self, screening_id: int) -> R | None:
        rendered = self._maps.get(screening_id)
        if rendered is not None:
            self._maps.move_to_end(screening_id)
        return rendered

    def peek(self, screening_id: int) -> R | None:
        return self._maps.get(screening_id)

    def put(self, screening_id: int, rendered: R) -> None:
        self._maps[screening_id] = rendered
        self._maps.move_to_end(screening_id)
        while len(self._maps) > self._size:
            self._maps.popitem(last=False)

    def __len__(self) -> int:
        return len(self._maps)
