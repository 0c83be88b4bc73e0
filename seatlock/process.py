"""Settings of a long-running process of ours (API workers, load generators)."""

from __future__ import annotations

import asyncio
import gc
import resource
import signal
from types import FrameType

# Young-generation size for the cyclic garbage collector (CPython's default is 700 allocations).
GC_YOUNG_THRESHOLD = 20_000


def settle_garbage_collector() -> None:
    """Keep garbage collection pauses short once the process is up.

    Everything alive after start-up (modules, routes, pools, caches) lives as long as the process:
    ``gc.freeze`` moves it out of the collector's sight, so a full collection scans only what was
    allocated since, instead of ~20 ms of pause over every object (which showed in p99 latencies).
    A larger young generation lets most request garbage die before it is promoted at all.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


# Open files a server process asks for at most (its soft limit raised to the hard one, up to
# this): each connection is one, and release day brings thousands of watchers per worker.
MAX_OPEN_FILES = 1 << 20
FEW_OPEN_FILES = 4096  # below this, a start-up warning: a worker serves fewer connections


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft limit of open files to its hard limit (at most MAX_OPEN_FILES),
    as servers that hold many connections do; children started after inherit it. Returns the
    soft limit (before, after). A soft limit of 1024, the default of many systems, would stop
    a worker at about a thousand WebSocket watchers: accept fails and new clients are turned
    away."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_FILES, MAX_OPEN_FILES  # as good as unlimited
    wanted = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    if soft >= wanted:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):  # pragma: no cover - a sandbox that refuses it
        return soft, soft
    return soft, wanted


def end_cleanly_on_sigterm() -> None:
    """Let SIGTERM end this process as Ctrl-C does: by an exception (``SystemExit``, status
    128 + 15), so every ``finally`` and context manager on the way out runs: embedded servers
    stopped, scratch directories removed. Python's default is to die on the spot, and a load
    test stopped by ``timeout`` or ``kill`` left its PostgreSQL and Redis data (~120 MB) in the
    temporary directory. While an event loop runs, the exception is raised from a callback of
    its own, between tasks: the loop stops and cancels them, and none ends with it (which
    asyncio would report as an exception never retrieved). A second SIGTERM kills at once."""

    def ended(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop running: unwind from here
            raise SystemExit(128 + signum) from None
        loop.call_soon_threadsafe(_exit, 128 + signum)

    signal.signal(signal.SIGTERM, ended)


def _exit(status: int) -> None:
    raise SystemExit(status)
