"""When this process next frees expired holds, per screening it holds seats in.

Redis publishes a lease's expiry (the keyspace notification the expiry listener waits for) only
once its active expiry cycle gets to the key, and that cycle scans the keys with a TTL a few dozen
at a time, stopping while it finds few expired: beside a release day's 20,000 session caches and
holds, a lease's expiry came 3.7 s late (median; 33 s beside 200,000), and the per-second sweep
freed the seat first. So the engine does not wait for Redis to notice: each hold or extension
made here notes its screening's earliest deadline, and ``seatlock.engine.expiry.free_at_deadlines``
sweeps that screening when it comes, then reads the screening's next deadline from Redis (its
deadlines index, every process's holds) and waits for that. One timer per screening, whatever the
number of holds; a screening with no hold left is dropped until its next hold here. Processes
that hold seats in a screening each keep its timer: the first to sweep frees the seats, the others
find none due (one ZRANGEBYSCORE). The listener and the sweep stay, for holds whose process died.
"""

from __future__ import annotations

import asyncio
import heapq

# A screening is swept at most this often by one process: the holds due within it go in one
# sweep (one event to watchers), rather than one script per hold under a stream of holds.
SPACING_MS = 10
IDLE_S = 1.0  # with no deadline nearer, the timer loop wakes (and beats) this often


class Deadlines:
    """The next time to sweep each screening (``note``), and the screenings due (``due``)."""

    def __init__(self) -> None:
        self._next: dict[int, int] = {}  # screening -> the deadline (ms) its timer is set for
        # (deadline, screening), soonest first; an entry no longer in _next is stale, skipped.
        self._heap: list[tuple[int, int]] = []
        self.sooner = asyncio.Event()  # set when a timer became the soonest: the loop rewaits

    def __len__(self) -> int:
        return len(self._next)

    def note(self, screening_id: int, deadline_ms: int) -> None:
        """A hold of the screening ends at ``deadline_ms``: sweep it then, unless sooner."""
        current = self._next.get(screening_id)
        if current is not None and current <= deadline_ms:
            return
        self._next[screening_id] = deadline_ms
        heapq.heappush(self._heap, (deadline_ms, screening_id))
        if self._heap[0][0] == deadline_ms:
            self.sooner.set()

    def due(self, now_ms: int) -> list[int]:
        """The screenings whose timer has come, taken off (``note`` them again as needed)."""
        screenings = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            deadline_ms, screening_id = heapq.heappop(heap)
            if self._next.get(screening_id) == deadline_ms:
                del self._next[screening_id]
                screenings.append(screening_id)
        return screenings

    def wait_s(self, now_ms: int) -> float:
        """Seconds until the soonest timer (IDLE_S at most)."""
        heap = self._heap
        while heap and self._next.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # stale: the screening's timer was set sooner since
        if not heap:
            return IDLE_S
        return min(IDLE_S, max(0.0, (heap[0][0] - now_ms) / 1000))
