"""What resuming a seat-map WebSocket costs: a replay of 50 missed events against a snapshot.

    .venv/bin/python -m loadtests.resumecost [--rounds 300]

Starts throw-away embedded Redis and PostgreSQL, seeds the bench catalogue and serves nothing:
it calls what ``/ws/screenings/{id}?since=N`` runs before live events flow (``SeatEngine.resume``
and the messages api/websockets.py ``catch_up`` renders) on the 500-seat screening, for a
client that missed 50 changes (replayed from the event log) and for one beyond the log's window
(one seat_snapshot of the whole map): with the rendered map cached (a server that answers the
availability has it) and after a change (rendered afresh). Prints the median per resume, in
microseconds of this process's CPU (Redis excluded) and of wall time (Redis round trips
included), with the bytes sent; writing the frames to the socket is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from api.seatmaps import rendered_map
from api.websockets import catch_up
from db.migrate import migrate_database
from loadtests.benchseed import seed_catalog
from loadtests.stackcost import scratch_backends
from seatlock.engine.watchers import Room, Watcher
from seatlock.process import end_cleanly_on_sigterm, settle_garbage_collector
from seatlock.server.wiring import create_app
from seatlock.services.container import Services
from seatlock.settings import Settings

MISSED = 50


async def resume(services: Services, screening_id: int, since: int) -> list[bytes]:
    return (await catch_up(services, Watcher(Room(), screening_id, None, None), since))[1]


async def timed(
    rounds: int, run: Callable[[], Awaitable[list[bytes]]], between: Callable[[], Awaitable[None]]
) -> tuple[float, float, int, int]:
    """Median CPU and wall microseconds per resume, messages and bytes of the last."""
    cpu: list[float] = []
    wall: list[float] = []
    texts: list[bytes] = []
    for _ in range(rounds):
        await between()
        started_cpu, started = time.process_time(), time.perf_counter()
        texts = await run()
        cpu.append((time.process_time() - started_cpu) * 1e6)
        wall.append((time.perf_counter() - started) * 1e6)
    size = sum(len(text) for text in texts)
    return statistics.median(cpu), statistics.median(wall), len(texts), size


async def measure(settings: Settings, rounds: int) -> None:
    seeded = await seed_catalog(settings.database_url, 1.0, 2)
    sid, user = seeded.hold_screening, seeded.user_ids[0]
    seat = seeded.hot_seats[0]
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        engine = services.engine
        await engine.seat_map(sid)

        async def change() -> None:  # two changes: seat back to free
            await engine.hold(sid, user, [seat])
            await engine.release(sid, user, [seat])

        async def nothing() -> None:
            return None

        async def warm() -> None:  # the availability read fills the cache, as a server's does
            await rendered_map(services, sid)

        for _ in range(MISSED // 2):
            await change()
        since = await engine.version(sid) - MISSED
        settle_garbage_collector()
        cases = {
            f"replay of {MISSED} events": (lambda: resume(services, sid, since), nothing),
            "snapshot, map cached": (lambda: resume(services, sid, 1), warm),
            "snapshot, map rendered": (lambda: resume(services, sid, 1), change),
        }
        for name, (run, between) in cases.items():
            await timed(max(1, rounds // 10), run, between)  # warm-up
            cpu, wall, count, size = await timed(rounds, run, between)
            print(
                f"{name:<24} {cpu:8.1f} us CPU {wall:8.1f} us wall per resume"
                f"  ({count} message(s), {size} bytes)",
                flush=True,
            )


def main() -> None:
    end_cleanly_on_sigterm()  # stopped by timeout or kill: its servers and scratch data go too
    parser = argparse.ArgumentParser(prog="python -m loadtests.resumecost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    with scratch_backends("resumecost") as settings:

        async def go() -> None:
            await migrate_database(settings.database_url)
            await measure(settings, args.rounds)

        asyncio.run(go())


if __name__ == "__main__":
    main()
