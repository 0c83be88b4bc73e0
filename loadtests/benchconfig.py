"""The command line and configuration of ``seatlock bench`` (loadtests/bench.py runs it)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, replace

# The parts of a run, in the order they run; ``--only`` picks some. "cluster"
# (loadtests/clusterbench.py) starts servers of its own, after the others have stopped theirs.
PARTS = (
    "http",
    "engine",
    "transport",
    "bookings",
    "websocket",
    "expiry",
    "crowd",
    "browsing",
    "beyond",  # loadtests/beyondbench.py: best-available holds, WebSocket resumes
    "cluster-http",  # loadtests/clusterhttp.py: won holds via HTTP, one Redis against a cluster
    "cluster",
)


@dataclass(frozen=True)
class Config:
    duration: float = 20.0
    # The HTTP ceiling, hold attempts and availability reads are measured in this many turns of
    # duration/turns seconds each, one after the other (see Bench.interleaved).
    turns: int = 4
    workers: int = 0  # server worker processes; 0: one per core
    generators: int = 0  # load generator processes; 0: one per core
    connections: int = 64  # HTTP/Redis connections per generator process
    watchers_fast: int = 1000  # watchers at 10 changes/s
    watchers_slow: int = 10000  # watchers at 1 change/s
    expiry_holds_per_s: float = 20.0
    # Keys with a TTL beside the expiry part's second run (a release day's 20,000 signed-in
    # users' session caches; their holds add more).
    expiry_other_keys: int = 20000
    # Runs of the HTTP ceiling and the availability reads: the first beside the hold workloads,
    # the others on their own, each with its own ratio and verdict ("not only on one run").
    repeat: int = 3
    crowd_users: int = 20000  # the release-day crowd: users arriving over crowd_arrival_s
    crowd_arrival_s: float = 10.0
    crowd_seats: int = 500
    crowd_watchers: int = 5000  # WebSocket watchers following the crowd's screening
    browse_movies: int = 20000  # movies seeded for the browsing part's full-text search
    # Unmeasured run of each interleaved workload before its turns (Bench.rotation).
    warm_up_s: float = 2.0
    # A workload's generators connect, then start together this long after it was handed out
    # (plus 0.1 s per generator process): the clock measures requests, not set-up.
    start_s: float = 0.3
    only: tuple[str, ...] = PARTS
    out: str = "bench/results.md"
    command: str = "seatlock bench"

    @property
    def server_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def generator_count(self) -> int:
        return self.generators or os.cpu_count() or 1

    def start_at(self) -> float:
        """The wall-clock time a workload handed out now starts at, in every generator."""
        return time.time() + self.start_s + 0.1 * self.generator_count


QUICK = dict(
    # One turn of 0.5 s: each workload starts once, for longer than the two turns of 0.375 s it
    # had (a start costs ~0.5 s of fixed delay). The turn-taking itself is checked by
    # tests/loadtests/test_bench.py with three turns.
    duration=0.5,
    turns=1,
    connections=4,
    watchers_fast=20,
    watchers_slow=20,
    generators=1,
    workers=1,
    expiry_holds_per_s=10.0,
    expiry_other_keys=2000,
    repeat=2,
    crowd_users=300,
    crowd_arrival_s=2.0,
    crowd_seats=100,
    crowd_watchers=20,
    browse_movies=500,
    # Figures of a smoke run judge nothing: no warm-up, and a start as soon as the 4 connections
    # are up (each of the ~25 workloads waited 0.65 s more with the full run's values).
    warm_up_s=0.0,
    start_s=0.05,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, help="seconds per workload (default 20)")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny smoke run (~55 s with the cluster parts)"
    )
    parser.add_argument(
        "--turns", type=positive, help="turns of ceiling, holds and reads, taken in rotation (4)"
    )
    parser.add_argument(
        "--workers", type=int, help="server worker processes (default: $SEATLOCK_WORKERS or cores)"
    )
    parser.add_argument("--generators", type=int, help="load generator processes (default: cores)")
    parser.add_argument("--connections", type=int, help="connections per generator (default 64)")
    parser.add_argument("--watchers-fast", type=int, help="watchers at 10 changes/s (1000)")
    parser.add_argument("--watchers-slow", type=int, help="watchers at 1 change/s (10000)")
    parser.add_argument(
        "--repeat", type=positive, help="runs of the HTTP ceiling and availability reads (3)"
    )
    parser.add_argument("--crowd-users", type=positive, help="release-day crowd users (20000)")
    parser.add_argument("--crowd-watchers", type=int, help="watchers of the crowd (5000)")
    parser.add_argument("--browse-movies", type=int, help="movies seeded for search (20000)")
    parser.add_argument(
        "--only", type=parts, help=f"comma-separated parts to run (default all: {','.join(PARTS)})"
    )
    parser.add_argument("--out", default="bench/results.md", help="where to write the table")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parts(text: str) -> tuple[str, ...]:
    """``--only``: part names, kept in the order they run."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = names - set(PARTS)
    if unknown or not names:
        given = ", ".join(sorted(unknown)) or "(none given)"
        raise argparse.ArgumentTypeError(f"unknown part(s) {given}; parts: {', '.join(PARTS)}")
    return tuple(name for name in PARTS if name in names)


def config_from_args(args: argparse.Namespace) -> Config:
    base = Config(**QUICK) if args.quick else Config()  # type: ignore[arg-type]
    given = {
        "duration": args.duration,
        "turns": args.turns,
        "workers": args.workers if args.workers is not None else workers_from_env(),
        "generators": args.generators,
        "connections": args.connections,
        "watchers_fast": args.watchers_fast,
        "watchers_slow": args.watchers_slow,
        "repeat": args.repeat,
        "crowd_users": args.crowd_users,
        "crowd_watchers": args.crowd_watchers,
        "browse_movies": args.browse_movies,
        "only": args.only,
    }
    command = "seatlock " + " ".join(sys.argv[1:]) if sys.argv[1:] else "seatlock bench"
    changes = {k: v for k, v in given.items() if v is not None}
    return replace(base, out=args.out, command=command, **changes)


def workers_from_env() -> int | None:
    """``SEATLOCK_WORKERS`` sizes the bench's server like ``seatlock serve``; a flag wins."""
    raw = os.environ.get("SEATLOCK_WORKERS", "")
    return int(raw) if raw.strip() else None
