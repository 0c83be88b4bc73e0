"""A throw-away Redis primary with one replica (``--replicaof``) on loopback, both from the suite's
redis-server binary (seatlock/server/embedded.py ``find_redis_server``); the replica can be paused
(SIGSTOP) to stand for one that stopped acknowledging."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import ClassVar, Self

from seatlock.server.embedded import free_port
from seatlock.server.redisnodes import RedisNodes


@dataclass
class ReplicatedRedis(RedisNodes):
    """A primary and its replica in ``root`` (``ports``: primary, replica); ``url`` is the
    primary's."""

    what: ClassVar[str] = "replicated redis"

    paused: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def replica_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[1]}/0"

    def start(self) -> Self:
        self.ports = [free_port(), free_port()]
        self.procs.append(self._spawn(self.ports[0]))
        self._wait(lambda: self._pings(self.ports[0]), "the primary")
        primary = ("127.0.0.1", str(self.ports[0]))
        self.procs.append(self._spawn(self.ports[1], "--replicaof", *primary))
        self._wait(self._linked, "the replica to sync")
        return self

    def pause(self) -> None:
        """Stop the replica (SIGSTOP): connected, but it acknowledges nothing."""
        os.kill(self.procs[1].pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.procs[1].pid, signal.SIGCONT)
        self.paused = False

    def flush(self) -> None:
        """Empty both (the replica follows the primary) and wait until the replica caught up."""
        with self.client(self.ports[0]) as primary:
            primary.flushall()
            acked = primary.execute_command("WAIT", 1, 5000)
        assert acked == 1, "the replica did not catch up"

    def stop(self) -> None:
        if self.paused:
            self.resume()
        super().stop()

    def _linked(self) -> bool:
        try:
            with self.client(self.ports[1]) as replica:
                info = replica.info("replication")
        except Exception:
            return False
        return info.get("master_link_status") == "up"
