"""Restart an embedded server that dies, on its port and data directory, from the supervisor.

A thread per child the supervisor started polls it (``Popen.poll``: it also reaps it), so one
server's slow or failing restart never holds up another's (Redis waiting on PostgreSQL's crash
recovery or its backoff). A dead one is started again at once; one that keeps dying (or cannot
start: a killed postmaster's orphaned backends hold its shared memory for a moment) waits longer
each time, up to ``MAX_DELAY``. The workers' pools reconnect by themselves once the server
answers again.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

logger = logging.getLogger(__name__)

FIRST_DELAY = 0.25  # seconds before retrying a server that died again soon after a (re)start
MAX_DELAY = 30.0
STABLE_SECONDS = 30.0  # up this long after a start: its next death is restarted at once
POLL_SECONDS = 0.25

OnRestart = Callable[[str], None]  # called with the server's name after each restart


class Server(Protocol):
    name: ClassVar[str]
    port: int
    proc: subprocess.Popen[bytes] | None

    def start(self) -> str: ...


@dataclass
class Backoff:
    """When one server may next be started."""

    delay: float = 0.0
    started_at: float = -STABLE_SECONDS  # by the watchdog: a first death is restarted at once

    def next_delay(self) -> float:
        if time.monotonic() - self.started_at >= STABLE_SECONDS:
            self.delay = 0.0
        else:
            self.delay = min(max(self.delay * 2, FIRST_DELAY), MAX_DELAY)
        return self.delay


def _ignore(name: str) -> None:
    pass


class Watchdog:
    """Daemon threads, one per server, that restart dead ``servers`` until ``stop()``."""

    def __init__(
        self,
        servers: Sequence[Server],
        on_restart: OnRestart | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._servers = list(servers)
        self._on_restart = on_restart or _ignore
        self._poll_seconds = poll_seconds
        self._backoff = {server.name: Backoff() for server in self._servers}
        self._stopping = threading.Event()
        # A restarted child's parent-death signal fires when the thread that forked it ends:
        # these threads live until stop(), which the supervisor calls just before it stops them.
        self._threads = [
            threading.Thread(
                target=self._watch, args=(server,), name=f"watchdog-{server.name}", daemon=True
            )
            for server in self._servers
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """No restart after this returns, so the caller may stop the servers."""
        self._stopping.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=90)  # a start under way waits up to 60 s for its server

    def _watch(self, server: Server) -> None:
        while not self._stopping.wait(self._poll_seconds):
            if server.proc is not None and server.proc.poll() is not None:
                self._revive(server)

    def _revive(self, server: Server) -> None:
        backoff = self._backoff[server.name]
        delay = backoff.next_delay()
        assert server.proc is not None
        logger.warning(
            "embedded %s (pid %d) exited with %s; restarting it on port %d in %.2f s",
            server.name, server.proc.pid, server.proc.returncode, server.port, delay,
        )  # fmt: skip
        if self._stopping.wait(delay):
            return
        backoff.started_at = time.monotonic()
        try:
            server.start()
        except Exception as exc:  # the thread must outlive any failed start
            logger.warning("embedded %s did not restart: %s", server.name, exc)
            return
        logger.warning(
            "embedded %s restarted (pid %d) on port %d", server.name, server.proc.pid, server.port
        )
        self._on_restart(server.name)
