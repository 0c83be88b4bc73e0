"""Even shares of the HTTP connections between ``seatlock serve``'s workers.

Each worker accepts connections on a socket of its own (SO_REUSEPORT, seatlock/server/workers.py)
and the kernel picks the worker by a hash of each connection's addresses: 128 keep-alive
connections split 57/71 or so, and the split lasts as long as the connections do. The workers get
the same CPU, so each answers about as many requests a second, and the requests of the one with
more connections wait longer in proportion. Measured (``seatlock serve``, 2 workers, 128
connections reading a 500-seat map in a closed loop, three runs): split 75/53, p99 16.2 ms on the
first worker and 10.9 ms on the other, 14.3 ms for all; split 62/66, 12.1 and 12.3 ms, 12.2 ms for
all. A load balancer's pool of a few dozen keep-alive connections splits as unevenly.

Each worker publishes how many HTTP connections it holds in an array shared by the workers (one
slot each, written only by its own worker; WebSockets are not counted, as they cannot move). Every
LOOK_S a worker compares its count with an even share of the total. When it holds more than the
share and the slack (``slack``) together, it closes as many connections as it holds above the
share, each after its next response, which says ``Connection: close`` (how uvicorn ends a
connection in a graceful shutdown: announced, after a whole response, never under a request). The
clients connect again, and the kernel's hash sends each to a worker anew: the excess drains in a
few looks. A connection stops counting once it is asked to close.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableSequence

from seatlock.metrics import CONNECTIONS_REBALANCED

LOOK_S = 0.1


def slack(share: int) -> int:
    """How many connections above its share a worker may hold before it sheds: about 3%, at least
    one (every connection moved costs its client a new TCP connection)."""
    return max(1, share // 32)


class Balance:
    """One worker's side of the shared counts: ``counts[index]`` is this worker's."""

    __slots__ = ("_counts", "_index", "_mine", "_timer", "excess")

    def __init__(self, counts: MutableSequence[int], index: int) -> None:
        self._counts = counts
        self._index = index
        self._mine = 0  # HTTP connections held, not asked to close
        self._timer: asyncio.TimerHandle | None = None
        # Connections to ask to close, as their next requests come; read by HttpProtocol for
        # each request, so a plain int.
        self.excess = 0

    @property
    def connections(self) -> int:
        return self._mine

    def joined(self) -> None:
        """A new HTTP connection (looks start with the first)."""
        self._publish(self._mine + 1)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(LOOK_S, self._look)

    def left(self) -> None:
        """A connection closed, became a WebSocket, or was asked to close."""
        self._publish(self._mine - 1)

    def shed(self) -> None:
        """A connection was asked to close after its response."""
        self.excess -= 1
        self.left()
        CONNECTIONS_REBALANCED.inc()

    def _publish(self, mine: int) -> None:
        self._mine = mine
        self._counts[self._index] = mine

    def _look(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(LOOK_S, self._look)
        self.excess = excess(self._mine, list(self._counts))


def excess(mine: int, counts: list[int]) -> int:
    """How many connections a worker holding ``mine`` of ``counts`` (every worker's) should let
    go: down to an even share of them all, once it holds more than that share and its slack."""
    share = -(-sum(counts) // len(counts))  # rounded up: an odd one out stays where it is
    return mine - share if mine > share + slack(share) else 0
