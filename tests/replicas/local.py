"""A throw-away Redis primary with one replica (``--replicaof``) on loopback, both from the suite's
redis-server binary (seatlock/server/embedded.py ``find_redis_server``); the replica can be paused
(SIGSTOP) to stand for one that stopped acknowledging."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from seatlock.server.embedded import find_redis_server, free_port


@dataclass
class ReplicatedRedis:
    """A primary and its replica in ``root``; ``url`` is the primary's."""

    root: Path
    ports: list[int] = field(default_factory=list)  # primary, replica
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    paused: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def replica_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[1]}/0"

    def client(self, port: int) -> Redis:
        return Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def start(self) -> ReplicatedRedis:
        self.ports = [free_port(), free_port()]
        self.procs.append(self._spawn(self.ports[0]))
        self._wait(lambda: self._pings(self.ports[0]), "the primary")
        primary = ("127.0.0.1", str(self.ports[0]))
        self.procs.append(self._spawn(self.ports[1], "--replicaof", *primary))
        self._wait(self._linked, "the replica to sync")
        return self

    def _spawn(self, port: int, *more: str) -> subprocess.Popen[bytes]:
        data = self.root / str(port)
        data.mkdir(parents=True, exist_ok=True)
        args = [
            str(find_redis_server()),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(data),
            "--appendonly", "no",
            "--save", "",
            "--logfile", str(data / "redis.log"),
            *more,
        ]  # fmt: skip
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

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
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def _linked(self) -> bool:
        try:
            with self.client(self.ports[1]) as replica:
                info = replica.info("replication")
        except Exception:
            return False
        return info.get("master_link_status") == "up"

    def _pings(self, port: int) -> bool:
        try:
            with self.client(port) as node:
                return bool(node.ping())
        except Exception:
            return False

    def _wait(self, check: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"replicated redis: timed out waiting for {what}")
            time.sleep(0.05)
