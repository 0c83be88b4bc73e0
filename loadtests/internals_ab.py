"""What each use of a library's private internals earns: an A/B of the server with and without it.

    .venv/bin/python -m loadtests.internals_ab [--seconds 3] [--rounds 4] [--watchers 1000]

The issue's rule: a hack whose gain is under 5 % of its workload goes. Two are measured, each
against a server identical but for it, both running at once (an idle server costs nothing) and
taking turns, so a drift of the machine's speed moves both alike:

- ``http``: ``seatlock.server.serving.HttpProtocol`` (a response's head and body in one send)
  against uvicorn's own httptools protocol. Workloads: ``GET /health/live`` and hold attempts on
  the hot screening (``loadgen.hold_loop``, as ``seatlock bench``), closed loop from one
  generator process; requests per second and the server's CPU per request.
- ``ws``: seat updates written as frames straight to the socket (``api.websockets.direct_socket``)
  against the queued path (a sender task per watcher). Workload: ``--watchers`` WebSockets on one
  screening while a client holds and cancels a seat 10 times a second; the server's CPU per
  change (each fanned out to every watcher) and the last watcher's delay.

Each server is ``seatlock.server.wiring.create_app`` under uvicorn, one worker, on embedded
throw-away Redis and PostgreSQL. Medians and ranges over the rounds are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

from loadtests.bench import sign_in_all
from loadtests.benchseed import Seeded, seed_catalog
from loadtests.loadgen import API, Http, Job, Sample, end_with_the_bench, generator_main
from seatlock.process import end_cleanly_on_sigterm
from seatlock.server.embedded import die_with_parent, embedded_services, free_port

VARIANTS = {"http": ("ours", "uvicorn"), "ws": ("direct", "queue")}
CHANGES_PER_S = 10  # as seatlock bench: one generator process keeps up with 1,000 watchers


def serve(http: str, ws: str, port: int) -> None:
    """A server process: the app under uvicorn with one variant of each hack."""
    import uvicorn

    import api.websockets
    from seatlock.server.serving import http_protocol
    from seatlock.server.wiring import create_app

    if ws == "queue":
        api.websockets.direct_socket = lambda websocket: None
    options: dict[str, Any] = {  # as seatlock serve passes them (seatlock/server/cli.py)
        "host": "127.0.0.1",
        "port": port,
        "loop": "uvloop",
        "http": http_protocol() if http == "ours" else "httptools",
        "log_level": "warning",
        "access_log": False,
        "ws_ping_interval": None,
    }
    uvicorn.run(create_app(), **options)


class Server:
    def __init__(self, root: Path, urls: tuple[str, str], http: str, ws: str) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "SEATLOCK_REDIS_URL": urls[0],
            "SEATLOCK_DATABASE_URL": urls[1],
            "SEATLOCK_DATA_DIR": str(root / f"{http}-{ws}"),
            "SEATLOCK_JWT_SECRET": "ab-secret-" + "a" * 40,
            "SEATLOCK_BCRYPT_ROUNDS": "4",
            "SEATLOCK_LOG_LEVEL": "warning",
        }
        command = [sys.executable, "-m", "loadtests.internals_ab", "--serve", http, ws]
        self.proc = subprocess.Popen(
            [*command, str(self.port)], env=env, preexec_fn=die_with_parent(signal.SIGTERM)
        )

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def ready(self) -> None:
        http = Http("127.0.0.1", self.port)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                if (await http.call("GET", "/health/ready"))[0] == 200:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            await asyncio.sleep(0.2)
        await http.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


class AB:
    def __init__(self, args: argparse.Namespace, pool: concurrent.futures.Executor) -> None:
        self.args = args
        self.pool = pool
        self.manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
        self.manager.start(end_with_the_bench)
        self.results: dict[str, list[float]] = {}

    def note(self, name: str, value: float) -> None:
        self.results.setdefault(name, []).append(value)

    async def run_job(self, job: Job) -> Sample:
        return await asyncio.get_running_loop().run_in_executor(self.pool, generator_main, job)

    async def http_turn(
        self, server: Server, variant: str, seeded: Seeded, tokens: list[str], seconds: float
    ) -> None:
        workloads: list[tuple[str, dict[str, Any]]] = [
            ("get", {"path": "/health/live"}),
            ("hold", {"screening_id": seeded.hold_screening, "seat_ids": seeded.hot_seats}),
        ]
        for kind, spec in workloads:
            job = Job(kind, "127.0.0.1", server.port, time.time() + 0.5, seconds, 32, tokens)
            for name, value in spec.items():
                setattr(job, name, value)
            cpu = server.cpu_seconds()
            sample = await self.run_job(job)
            cpu = server.cpu_seconds() - cpu
            self.note(f"http {kind} {variant} req/s", sample.ops / seconds)
            self.note(f"http {kind} {variant} server us/req", cpu / max(1, sample.ops) * 1e6)

    async def ws_turn(self, server: Server, variant: str, seeded: Seeded, token: str) -> None:
        control = (self.manager.Queue(), self.manager.Event())
        screening = seeded.ws_screenings[0]
        job = Job("watch", "127.0.0.1", server.port, 0.0, 0.0, screening_id=screening)
        job.watchers, job.control = self.args.watchers, control
        running = asyncio.ensure_future(self.run_job(job))
        await asyncio.to_thread(control[0].get, True, 120)
        cpu = server.cpu_seconds()
        changes = await change_seats(server.port, screening, seeded.hot_seats, token, self.args)
        cpu = server.cpu_seconds() - cpu
        await asyncio.sleep(3.0)  # late deliveries (the watchers share one process)
        control[1].set()
        sample = await running
        worst = sorted(w for w, n in sample.events.values() if n >= self.args.watchers)
        self.note(f"ws {variant} server ms/change", cpu / max(1, changes) * 1000)
        self.note(f"ws {variant} last watcher p50 ms", worst[len(worst) // 2] if worst else -1)
        self.note(f"ws {variant} changes not seen by all", changes - len(worst))

    def report(self) -> None:
        for name, values in self.results.items():
            low, high = min(values), max(values)
            print(f"{name:<40} {statistics.median(values):10.1f}  [{low:.1f}-{high:.1f}]")


async def change_seats(
    port: int, screening: int, seats: list[int], token: str, args: argparse.Namespace
) -> int:
    """Hold and cancel a seat at CHANGES_PER_S for --seconds; returns the changes made."""
    http = Http("127.0.0.1", port)
    start, n, made = time.perf_counter(), 0, 0
    while (elapsed := time.perf_counter() - start) < args.seconds:
        await asyncio.sleep(max(0.0, n / CHANGES_PER_S - elapsed))
        seat = seats[(n // 2) % len(seats)]
        if n % 2 == 0:
            body = {"screening_id": screening, "seat_ids": [seat]}
            status, _ = await http.call("POST", f"{API}/seat-reservations/reserve", body, token)
        else:
            path = f"{API}/seat-reservations/cancel/{screening}?seat_ids={seat}"
            status, _ = await http.call("DELETE", path, None, token)
        made += status in (201, 204)
        n += 1
    await http.close()
    return made


async def warm(port: int, seeded: Seeded, token: str) -> None:
    """Load the screenings into Redis (one hold each), so no turn pays for that."""
    http = Http("127.0.0.1", port)
    for screening in (seeded.hold_screening, *seeded.ws_screenings[:1]):
        body = {"screening_id": screening, "seat_ids": [seeded.hot_seats[-1]]}
        await http.call("POST", f"{API}/seat-reservations/reserve", body, token)
        await http.call("DELETE", f"{API}/seat-reservations/cancel/{screening}", None, token)
    await http.close()


@contextlib.contextmanager
def servers(root: Path, urls: tuple[str, str], pairs: list[tuple[str, str]]) -> Iterator[Any]:
    started = [Server(root, urls, http, ws) for http, ws in pairs]
    try:
        yield started
    finally:
        for server in started:
            server.stop()


async def main_async(args: argparse.Namespace, root: Path, urls: tuple[str, str]) -> None:
    from db.migrate import migrate
    from seatlock.process import settle_garbage_collector

    settle_garbage_collector()
    conn = await __import__("asyncpg").connect(urls[1])
    try:
        await migrate(conn)
    finally:
        await conn.close()
    seeded = await seed_catalog(urls[1], 1.0, 40)
    pairs = [("ours", "direct"), ("uvicorn", "direct"), ("ours", "queue")]
    context = multiprocessing.get_context("spawn")
    with (
        concurrent.futures.ProcessPoolExecutor(1, context, initializer=end_with_the_bench) as pool,
        servers(root, urls, pairs) as (ours, uvicorn_http, queued),
    ):
        for server in (ours, uvicorn_http, queued):
            await server.ready()
        signed = await sign_in_all("127.0.0.1", ours.port, seeded.user_ids)
        tokens = [signed[u] for u in seeded.user_ids]
        for server in (ours, uvicorn_http, queued):
            await warm(server.port, seeded, tokens[-1])
        ab = AB(args, pool)
        if "http" in args.only:  # an unmeasured turn each: caches, mirrors, the allocator
            await ab.http_turn(ours, "warm-up", seeded, tokens[:32], 2.0)
            await ab.http_turn(uvicorn_http, "warm-up", seeded, tokens[:32], 2.0)
            ab.results.clear()
        for _ in range(args.rounds):
            if "http" in args.only:
                await ab.http_turn(ours, "ours", seeded, tokens[:32], args.seconds)
                await ab.http_turn(uvicorn_http, "uvicorn", seeded, tokens[:32], args.seconds)
            if "ws" in args.only:
                await ab.ws_turn(ours, "direct", seeded, tokens[-2])
                await ab.ws_turn(queued, "queue", seeded, tokens[-2])
        ab.report()
        ab.manager.shutdown()


def main() -> None:
    end_cleanly_on_sigterm()  # stopped by timeout or kill: its servers and scratch data go too
    parser = argparse.ArgumentParser(prog="python -m loadtests.internals_ab", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per workload and turn")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--only", nargs="+", default=["http", "ws"], choices=["http", "ws"])
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)  # a server process
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], int(args.serve[2]))
        return
    root = Path(tempfile.mkdtemp(prefix="seatlock-ab-"))
    try:
        with embedded_services(root, persistent=False) as urls:
            asyncio.run(main_async(args, root, urls))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
