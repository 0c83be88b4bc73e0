"""What SEATLOCK_HOLD_REPLICAS costs a hold: holds/s and latency at the engine (no HTTP), with
replicas 0 and 1, on both single-node transports, against a throw-away primary and replica on this
machine (``python -m tests.replicas.timing [seconds] [concurrency...]``).

Every hold is granted (a new seat, a new user) so each one writes and each batch waits; refusals
would cost less. The runs of one transport take turns with and without replicas, so the machine's
other load hits both alike; figures on a shared box are only comparable within one run.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from redis.asyncio import Redis

from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Replicas, open_transport
from tests.lua.support import DictSource
from tests.replicas.local import ReplicatedRedis

SCREENINGS = 400
SEATS = 500  # per screening: 200,000 seats, more than a run holds
TURNS = 3


async def measure(
    engine: SeatEngine, seats: itertools.count[int], seconds: float, concurrency: int
) -> tuple[float, float, float]:
    """(holds/s, p50 ms, p99 ms) of ``concurrency`` clients holding new seats for ``seconds``."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop:
            n = next(seats)
            started = time.perf_counter()
            await engine.hold(1 + n % SCREENINGS, 1 + n, [1 + n // SCREENINGS % SEATS])
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    took = time.perf_counter() - began
    latencies.sort()
    p50, p99 = (latencies[int(len(latencies) * q)] * 1000 for q in (0.5, 0.99))
    return len(latencies) / took, p50, p99


async def compare(url: str, kind: str, seconds: float, concurrency: int) -> None:
    source = DictSource()
    for screening_id in range(1, SCREENINGS + 1):
        source.add(screening_id, list(range(1, SEATS + 1)))
    client = Redis.from_url(url)
    transport = open_transport(kind, client)
    options = {"hold_ms": 600_000, "max_hold_ms": 1_800_000, "max_seats_per_user": 10}
    engines = {
        0: SeatEngine(transport, source, **options),
        1: SeatEngine(transport, source, **options, replicas=Replicas(1, 200)),
    }
    await client.flushall()
    await asyncio.gather(*(engines[0].seat_map(s) for s in range(1, SCREENINGS + 1)))
    seats = itertools.count()
    await measure(engines[1], seats, 0.5, concurrency)  # warm up: scripts, connections
    results: dict[int, list[tuple[float, float, float]]] = {0: [], 1: []}
    for _ in range(TURNS):
        for replicas, engine in engines.items():
            results[replicas].append(await measure(engine, seats, seconds / TURNS, concurrency))
    for replicas, runs in results.items():
        rate = sum(r[0] for r in runs) / len(runs)
        p50 = sorted(r[1] for r in runs)[len(runs) // 2]
        p99 = sorted(r[2] for r in runs)[len(runs) // 2]
        print(
            f"{kind:9} concurrency {concurrency:4} replicas {replicas}:"
            f" {rate:9,.0f} holds/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
        )
    await transport.aclose()
    await client.aclose()


async def main(seconds: float, concurrencies: list[int]) -> None:
    pair = ReplicatedRedis(Path(tempfile.mkdtemp(prefix="seatlock-replica-timing-"))).start()
    try:
        for kind in ("fast", "redis-py"):
            for concurrency in concurrencies:
                await compare(pair.url, kind, seconds, concurrency)
    finally:
        pair.stop()


if __name__ == "__main__":
    args = sys.argv[1:]
    duration = float(args[0]) if args else 6.0
    uvloop.run(main(duration, [int(c) for c in args[1:]] or [1, 256]))
