"""``seatlock bench``: release-day figures and the ceilings they are judged against, in one run.

It starts throw-away embedded Redis and PostgreSQL, three ``seatlock serve`` processes (the main
one; one on the redis-py transport for the transport comparison; a one-worker one with 1-second
holds for the expiry workload), seeds a 500-seat hot room and many screenings, then runs fixed,
time-bounded workloads from the load generator processes of ``loadtests.loadgen``. Both Redis
transports (seatlock/engine/transport.py) are measured side by side, taking turns, and the fast
one's gain over redis-py is a row of its own. It prints one table and writes it with the date,
the machine and the command to ``--out``.

Figures are only meaningful on a quiet machine: the generators share the cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from loadtests.benchconfig import PARTS as PARTS
from loadtests.benchconfig import Config as Config
from loadtests.benchconfig import add_arguments as add_arguments
from loadtests.benchconfig import config_from_args
from loadtests.benchreport import (
    Report,
    Row,
    Target,
    at_least,
    at_most,
    cpu_row,
    design_rows,
    latency_svg,
    ms,
    pct,
    process_cpu_note,
    quantiles,
    rate,
    render,
)
from loadtests.benchseed import PASSWORD, Seeded, bench_email, books, seed_catalog
from loadtests.beyondbench import beyond_part
from loadtests.browsebench import browsing_part
from loadtests.clusterbench import add_cluster_part
from loadtests.clusterhttp import cluster_http_part
from loadtests.crowdbench import crowd_part
from loadtests.loadgen import API, Http, Job, Sample, end_with_the_bench, generator_main, parse_time
from loadtests.procmem import children_named, children_of, tree_cpu_s, tree_rss_kb
from seatlock.process import raise_open_files_limit
from seatlock.server.embedded import die_with_parent, embedded_services, free_port

nan = float("nan")
BOOK_CHUNK = 2  # seats per booking
EXPIRY_HOLD_SECONDS = 1
TRANSPORTS = ("fast", "redis-py")  # Settings.redis_transport, the default first
KEEP_FAST = 1.05  # a fast path must gain 5 %
LOGIN_CONNECTIONS = 32  # keep-alive connections signing the bench's users in
# The bars (issue of 2026-12: "what sells tickets"); each row says met / missed from its figures.
HOLD_ATTEMPTS = Target(ratio=0.40, p99_ms=25)
WON_HOLDS = Target(ratio=0.30, p99_ms=25)
# The serving processes' CPU per request of a won hold and its cancel, against an empty request's
WON_HOLD_CPU = 2.0
# What a browser sends with every request: the seat map then comes as its stored compressed body
BROWSER = b"Accept-Encoding: gzip, br\r\n"
AVAILABILITY = Target(ratio=0.5, p99_ms=15)
ENGINE = Target(ratio=0.6, of="Redis")
SPREAD_TICKETS_PER_S, HOT_TICKETS_PER_S = 5000, 1500
WS_FAST_P99_MS, WS_SLOW_P99_MS = 60.0, 250.0
RSS_PER_WATCHER_KB = 20.0
EXPIRY_P99_MS = 100.0

# --- Command line -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """The ``bench`` subcommand: returns the exit code (1 when a correctness check failed)."""
    config = config_from_args(args)
    raise_open_files_limit()  # 10,000 watchers: as many sockets on each side (inherited)
    report = asyncio.run(Bench(config).run())
    setup = (
        f"{config.duration:g} s per workload, {config.server_workers} server worker(s),"
        f" {config.generator_count} generator process(es) x {config.connections} connections"
    )
    table = render(report, config.command, setup)
    print(table)
    if config.out:
        write_results(Path(config.out), table, report.plots)
    return 0 if report.correct else 1


PLOTS = {
    "holds": "latency of the hold workload over time",
    "crowd": "the release-day crowd: answers per second and tickets sold",
}


def write_results(out: Path, table: str, plots: dict[str, str]) -> None:
    """The table, and next to it each plot of the run as ``<name>-<plot>.svg``, linked."""
    out.parent.mkdir(parents=True, exist_ok=True)
    links = []
    for suffix, svg in plots.items():
        plot = out.with_name(f"{out.stem}-{suffix}.svg")
        plot.write_text(svg)
        links.append(f"![{PLOTS.get(suffix, suffix)}]({plot.name})")
    out.write_text("\n\n".join([table, *links]) + "\n")


# --- The run --------------------------------------------------------------------------------------


async def server_versions(redis_url: str, database_url: str) -> str:
    """The run's Redis and PostgreSQL, as they say themselves."""
    redis = Redis.from_url(redis_url)
    try:
        info = await redis.info("server")
    finally:
        await redis.aclose()
    conn = await asyncpg.connect(database_url)
    try:
        postgres = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return f"Redis {info['redis_version']}, PostgreSQL {postgres}"


class Bench:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.report = Report()
        self.tokens: list[str] = []
        self.host = "127.0.0.1"
        self.port = 0
        self.expiry_port = 0
        self.redispy_port = 0
        self.redis_url = ""
        self.database_url = ""
        self.hot_seats: list[int] = []
        self.server_procs: list[subprocess.Popen[bytes]] = []
        self.root = Path()
        self.ceiling = 0.0  # the HTTP ceiling of the "http" part; 0: not measured

    async def run(self) -> Report:
        root = Path(tempfile.mkdtemp(prefix="seatlock-bench-"))
        try:
            with embedded_services(root, persistent=False) as (redis_url, database_url):
                self.redis_url, self.database_url = redis_url, database_url
                await self.prepare_database()
                self.report.servers = await server_versions(redis_url, database_url)
                with self.servers(root), self.generators() as pool:
                    self.pool = pool
                    await wait_ready(self.host, self.port, self.server_procs[0])
                    seeded = await self.seed()
                    await self.workloads(seeded)
                await self.check_books()
                if "cluster" in self.config.only:  # its own servers, ours stopped
                    await add_cluster_part(self.report, self.config)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return self.report

    async def prepare_database(self) -> None:
        from db.migrate import migrate

        conn = await asyncpg.connect(self.database_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    @contextlib.contextmanager
    def servers(self, root: Path) -> Iterator[None]:
        """The server under test; the expiry workload starts its own one-worker server later,
        so no second server takes CPU (it would receive every seat event) meanwhile."""
        self.root = root
        self.port = free_port()
        self.server_procs = [self.serve(root / "main", self.port, self.config.server_workers, {})]
        try:
            yield
        finally:
            for proc in self.server_procs:
                stop_process(proc)

    @contextlib.asynccontextmanager
    async def expiry_server(self) -> AsyncIterator[None]:
        """A one-worker server with 1-second holds, for the expiry workload only."""
        short = {"SEATLOCK_HOLD_SECONDS": str(EXPIRY_HOLD_SECONDS)}
        async with self.another_server("expiry", 1, short) as (self.expiry_port, _):
            yield

    @contextlib.asynccontextmanager
    async def redispy_server(self) -> AsyncIterator[None]:
        """A server like the main one on the redis-py transport, for the transport comparison
        only (an idle server still takes every seat event)."""
        workers = self.config.server_workers
        transport = {"SEATLOCK_REDIS_TRANSPORT": "redis-py"}
        async with self.another_server("redis-py", workers, transport) as (self.redispy_port, _):
            yield

    @contextlib.asynccontextmanager
    async def another_server(
        self, name: str, workers: int, extra: dict[str, str]
    ) -> AsyncIterator[tuple[int, subprocess.Popen[bytes]]]:
        """A server beside the main one, its data in ``name``, with the ``extra`` settings: its
        port and process once it is ready; stopped on the way out."""
        port = free_port()
        proc = self.serve(self.root / name, port, workers, extra)
        self.server_procs.append(proc)
        try:
            await wait_ready(self.host, port, proc)
            yield port, proc
        finally:
            stop_process(proc)

    def serve(
        self, data_dir: Path, port: int, workers: int, extra: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        return serve(self.redis_url, self.database_url, data_dir, port, workers, extra)

    @contextlib.contextmanager
    def generators(self) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
        context = multiprocessing.get_context("spawn")
        self.manager = SyncManager(ctx=context)
        self.manager.start(end_with_the_bench)
        # Twice the generators: watcher jobs hold theirs for a whole workload, while the crowd's
        # users run in others (a process is only started when a job needs one).
        workers = 2 * self.config.generator_count
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, context, initializer=end_with_the_bench
        )
        try:
            yield pool
        finally:
            pool.shutdown(cancel_futures=True)
            self.manager.shutdown()

    # --- Seeding ---

    async def seed(self) -> Seeded:
        crowd = "crowd" in self.config.only
        seeded = await seed_catalog(
            self.database_url,
            self.config.duration,
            self.user_count,
            self.config.crowd_users if crowd else 0,
            self.config.crowd_seats if crowd else 0,
        )
        self.hot_seats = seeded.hot_seats
        self.tokens = await self.login_all(seeded.user_ids)
        return seeded

    @property
    def user_count(self) -> int:
        return self.config.generator_count * self.config.connections + 16

    async def login_all(self, user_ids: list[int]) -> list[str]:
        """Sign every user in (``sign_in_all``): their tokens, in order."""
        tokens = await sign_in_all(self.host, self.port, user_ids)
        return [tokens[u] for u in user_ids]

    # --- Workloads ---

    async def workloads(self, s: Seeded) -> None:
        screenings = [s.hold_screening, s.redis_screening, *s.ws_screenings]
        await self.warm_screenings([(sid, s.hot_seats[-1]) for sid in screenings])
        parts, took = self.parts(s), []
        for name in (n for n in self.config.only if n in parts):  # "cluster" runs after us
            started = time.monotonic()
            await parts[name]()
            took.append(f"{name} {time.monotonic() - started:.0f} s")
        self.report.notes.append(f"time per part: {', '.join(took)}")

    def parts(self, s: Seeded) -> dict[str, Callable[[], Awaitable[None]]]:
        """Each part of PARTS by name: the workloads that make its rows."""
        return {
            "http": lambda: self.http_rows(s),
            "engine": lambda: self.engine_rows(s),
            "transport": lambda: self.transport_holds(s, self.ceiling),
            "bookings": lambda: self.bookings(s),
            "websocket": lambda: self.websockets(s),
            "expiry": lambda: self.expiry(s),
            "crowd": lambda: crowd_part(self, s),
            "browsing": lambda: browsing_part(self),
            "beyond": lambda: beyond_part(self, s),
            "cluster-http": lambda: cluster_http_part(self, s),
        }

    async def http_rows(self, s: Seeded) -> None:
        """The HTTP ceiling with the hold attempts, the won holds and the availability reads,
        in turns; then ``repeat - 1`` more runs of the ceiling and the reads."""
        live, holds, won, reads, compressed = await self.interleaved(s)
        self.ceiling = ceiling = rate(live, self.config.duration)
        self.row("HTTP ceiling: GET /health/live", live, "req/s", None)
        self.row(
            "Hold attempts via HTTP, hot 500 seats", holds, "attempts/s", ceiling, HOLD_ATTEMPTS
        )
        self.report.notes.append(f"hold attempts won: {holds.won} of {holds.ops}")
        self.report.hold_timeline = list(zip(holds.finished_at, holds.latencies_ms, strict=True))
        title = "Hold attempts via HTTP, hot screening"
        self.report.plots["holds"] = latency_svg(self.report.hold_timeline, title)
        name = "Won holds: hold 2 seats + cancel, spread over screenings"
        self.row(name, won, "holds/s", ceiling, WON_HOLDS)
        name = "Server CPU per won hold and its cancel (us), against GET /health/live"
        row = cpu_row(name, won, 2, live, "GET /health/live", WON_HOLD_CPU)
        self.report.rows.append(row)
        attempt = 1 + holds.won / holds.ops if holds.ops else 1.0  # a won attempt's cancel too
        self.report.rows += design_rows("Hold attempts", holds, attempt, live, "GET /health/live")
        self.report.rows += design_rows("Won holds", won, 2, live, "GET /health/live")
        every = {"GET /health/live": live, "hold attempt": holds, "won hold and its cancel": won}
        self.report.notes.append(process_cpu_note({**every, "availability read": reads}))
        cancels = won.steps.get("cancel", [])
        self.report.notes.append(
            f"won holds: {won.won} of {won.ops} attempts won; their cancels:"
            f" p50 {ms(pct(cancels, 0.5))}, p99 {ms(pct(cancels, 0.99))}"
        )
        self.availability_row(reads, ceiling, 1)
        name = "Availability reads as a browser asks (Accept-Encoding: gzip, br), 500-seat map"
        self.row(name, compressed, "reads/s", ceiling)
        for run in range(2, self.config.repeat + 1):
            label = f"availability run {run}: turn by turn, HTTP ceiling / availability reads"
            live, reads = await self.rotation(
                label, self.workload_specs(s, ("live", "reads")), self.config.duration
            )
            self.availability_row(reads, rate(live, self.config.duration), run)

    def availability_row(self, reads: Sample, ceiling: float, run: int) -> None:
        name = "Availability reads, 500-seat map"
        if self.config.repeat > 1:
            name += f", run {run} of {self.config.repeat}"
        self.row(name, reads, "reads/s", ceiling, AVAILABILITY, note=f"ceiling {ceiling:,.0f}/s")

    async def engine_rows(self, s: Seeded) -> None:
        """The Redis ceiling (the hold script straight on Redis) and the engine on both
        transports, judged against it."""
        redis = await self.http_workload(
            "redis-hold",
            screening_id=s.redis_screening,
            seat_ids=s.hot_seats,
            redis_url=self.redis_url,
            user_ids=s.user_ids,
        )
        engines = await self.engine_holds(s)
        self.row("Redis ceiling: hold script straight on Redis", redis, "holds/s", None)
        redis_ceiling = rate(redis, self.config.duration)
        name = "Engine holds: SeatEngine.hold, no HTTP"
        self.row(name, engines["fast"], "holds/s", redis_ceiling, ENGINE)
        name = "Engine holds on the redis-py transport"
        self.row(name, engines["redis-py"], "holds/s", redis_ceiling)
        self.gain("Transport gain, engine holds: fast / redis-py", engines, self.config.duration)

    async def warm_screenings(self, holds: list[tuple[int, int]], port: int = 0) -> None:
        """Load the screenings into Redis (one hold of a (screening, seat) each, cancelled), so
        no workload pays for that; through the server on ``port`` (0: the main one)."""
        http = Http(self.host, port or self.port)
        for sid, seat in holds:
            body = {"screening_id": sid, "seat_ids": [seat]}
            status, raw = await http.call(
                "POST", f"{API}/seat-reservations/reserve", body, self.tokens[-1]
            )
            if status != 201:
                raise RuntimeError(f"warm-up hold failed: {status} {raw[:200]!r}")
            await http.call(
                "DELETE", f"{API}/seat-reservations/cancel/{sid}", None, self.tokens[-1]
            )
        await http.close()

    def workload_specs(self, s: Seeded, names: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        """The HTTP workloads of the "http" part by name, as (kind, spec) for rotation()."""
        specs: dict[str, tuple[str, dict[str, Any]]] = {
            "live": ("get", {"path": "/health/live"}),
            "holds": ("hold", {"screening_id": s.hold_screening, "seat_ids": s.hot_seats}),
            "won": ("won-hold", {"work": self.won_hold_work(s)}),
            "reads": ("get", {"path": availability(s.hold_screening)}),
            "compressed": ("get", {"path": availability(s.hold_screening), "headers": BROWSER}),
        }
        return [specs[name] for name in names]

    def won_hold_work(self, s: Seeded) -> list[tuple[int, list[int]]]:
        """Two seats of its own for every connection of every generator, on screenings dealt
        out in turn: no two connections ever ask for the same seat, so every hold wins."""
        screenings, seats = s.spread_screenings, s.spread_seats
        count = self.config.generator_count * self.config.connections
        per_room = len(seats) // BOOK_CHUNK
        if count > per_room * len(screenings):
            raise RuntimeError(f"{count} connections need more seats than the spread screenings")
        return [
            (screenings[i % len(screenings)], seats[k * BOOK_CHUNK : (k + 1) * BOOK_CHUNK])
            for i in range(count)
            for k in [i // len(screenings)]
        ]

    async def interleaved(self, s: Seeded) -> tuple[Sample, Sample, Sample, Sample, Sample]:
        """The HTTP ceiling, hold attempts, won holds and availability reads (plain, and as a
        browser asks them: compressed), taking turns (``rotation``): the ceiling is measured
        across the same minute as the figures judged against it."""
        label = (
            "turn by turn, HTTP ceiling / hold attempts / won holds / availability reads"
            " / compressed availability reads"
        )
        names = ("live", "holds", "won", "reads", "compressed")
        workloads = self.workload_specs(s, names)
        live, holds, won, reads, compressed = await self.rotation(
            label, workloads, self.config.duration
        )
        return live, holds, won, reads, compressed

    async def rotation(
        self, label: str, workloads: list[tuple[str, dict[str, Any]]], duration: float
    ) -> list[Sample]:
        """Workloads taking turns, the first of them the ceiling the others are judged against.

        The reference machine's speed drifts by 10% and more within a minute. Each workload runs
        ``turns`` times for duration/turns seconds, in the order given, so a ceiling is measured
        across the same minute as the figures judged against it and a drift moves them alike.
        Each sample is the sum of its turns (rates over the whole duration); the finishing times
        are shifted to one timeline without the gaps, for the plots. Each workload first runs
        for ``warm_up_s`` unmeasured: without that, the first turn had the run's lowest hold
        ratio in each of four runs (0.33 against 0.37-0.38 in one). The note gives each turn's
        figures per second and their ratio to that turn's ceiling.
        """
        turns = self.config.turns
        seconds = duration / turns
        warm_up = min(self.config.warm_up_s, seconds / 2)
        for kind, spec in workloads:  # not measured: the server's first seconds of each
            if warm_up > 0:
                await self.http_workload(kind, warm_up, **spec)
        totals = [Sample() for _ in workloads]
        per_turn = []
        for turn in range(turns):
            samples = [await self.measured(kind, seconds, spec) for kind, spec in workloads]
            for sample in samples:
                first = min(sample.finished_at, default=0.0)
                sample.finished_at = [t - first + turn * seconds for t in sample.finished_at]
            top = max(1, samples[0].ops)
            figures = [f"{samples[0].ops / seconds:,.0f}"] + [
                f"{x.ops / seconds:,.0f} ({x.ops / top:.2f})" for x in samples[1:]
            ]
            per_turn.append(" / ".join(figures))
            for total, sample in zip(totals, samples, strict=True):
                total.merge(sample)
        self.report.notes.append(f"{label} per second (ratio): {'; '.join(per_turn)}")
        return totals

    async def measured(self, kind: str, seconds: float, spec: dict[str, Any]) -> Sample:
        """An HTTP workload, with the CPU the serving processes used meanwhile (``cpu_s``, next
        to the generators' own)."""
        before = self.serving_cpu()
        sample = await self.http_workload(kind, seconds, **spec)
        after = self.serving_cpu()
        sample.cpu_s.update({who: after[who] - before[who] for who in after if who in before})
        return sample

    def serving_cpu(self) -> dict[str, float]:
        """CPU seconds so far of the main server (supervisor and workers) and of the bench's
        own Redis and PostgreSQL (with its backends), found among the bench's children."""
        children = children_of()  # one reading of /proc's process tree for all three
        cpu = {"seatlock": tree_cpu_s(self.server_procs[0].pid, children)}
        for who, command in (("Redis", "redis-server"), ("PostgreSQL", "postgres")):
            pids = children_named(os.getpid(), command, children)
            if pids:
                cpu[who] = sum(tree_cpu_s(pid, children) for pid in pids)
        return cpu

    async def engine_holds(self, s: Seeded) -> dict[str, Sample]:
        """``SeatEngine.hold`` in the generator processes on each transport, taking turns."""
        spec: dict[str, Any] = {
            "screening_id": s.redis_screening,
            "seat_ids": s.hot_seats,
            "redis_url": self.redis_url,
        }

        def run(kind: str, seconds: float) -> Awaitable[Sample]:
            # user_ids: a fresh list each time, http_workload takes it apart per generator
            users = list(s.user_ids)
            return self.http_workload(
                "engine-hold", seconds, transport=kind, user_ids=users, **spec
            )

        return await self.in_turns("engine holds", run, self.config.duration)

    async def transport_holds(self, s: Seeded, ceiling: float) -> None:
        """Hold attempts via HTTP on the main server and on one on redis-py, taking turns, each
        for half the duration; both servers run throughout, so each sees the other's events."""
        spec = {"screening_id": s.hold_screening, "seat_ids": s.hot_seats}
        seconds = self.config.duration / 2
        async with self.redispy_server():
            ports = {"fast": self.port, "redis-py": self.redispy_port}
            warm_up = min(self.config.warm_up_s, seconds / self.config.turns / 2)
            for port in ports.values():  # not measured: the server's first seconds
                if warm_up > 0:
                    await self.http_workload("hold", warm_up, port=port, **spec)

            def run(kind: str, turn_s: float) -> Awaitable[Sample]:
                return self.http_workload("hold", turn_s, port=ports[kind], **spec)

            holds = await self.in_turns("HTTP hold attempts", run, seconds)
        for kind in TRANSPORTS:
            name = f"Hold attempts via HTTP, {kind} server beside the other"
            self.row(name, holds[kind], "attempts/s", ceiling or float("nan"), seconds=seconds)
        # No target: on this contended workload most attempts are refused by the seat mirrors
        # without a Redis call, so the transport hardly shows (the engine row above judges it).
        self.gain("Transport gain, HTTP hold attempts: fast / redis-py", holds, seconds, None)

    async def in_turns(
        self, what: str, run: Callable[[str, float], Awaitable[Sample]], seconds: float
    ) -> dict[str, Sample]:
        """Each transport's workload, ``turns`` times for seconds/turns, in rotation, so a drift
        of the machine's speed moves both alike; each sample is the sum of its turns."""
        turns = self.config.turns
        totals = {kind: Sample() for kind in TRANSPORTS}
        per_turn = []
        for _ in range(turns):
            rates = []
            for kind in TRANSPORTS:
                sample = await run(kind, seconds / turns)
                rates.append(f"{sample.ops * turns / seconds:,.0f}")
                totals[kind].merge(sample)
            per_turn.append(" / ".join(rates))
        self.report.notes.append(
            f"{what} turn by turn, {' / '.join(TRANSPORTS)} per second: {'; '.join(per_turn)}"
        )
        return totals

    def gain(
        self, name: str, samples: dict[str, Sample], seconds: float, bar: float | None = KEEP_FAST
    ) -> None:
        fast, plain = (rate(samples[kind], seconds) for kind in TRANSPORTS)
        gain = fast / plain if plain > 0 else float("nan")
        value = f"{fast:,.0f} / {plain:,.0f} per s"
        if bar is None:
            self.report.rows.append(Row(name, value, "", "", f"{gain:.2f}"))
            return
        target = f">= {bar:.2f} (a fast path must gain {bar - 1:.0%})"
        row = Row(name, value, "", "", f"{gain:.2f}", target, at_least(gain, bar))
        self.report.rows.append(row)

    async def http_workload(
        self, kind: str, duration: float | None = None, port: int = 0, **spec: Any
    ) -> Sample:
        generators = self.config.generator_count
        start_at = self.config.start_at()
        user_ids = spec.pop("user_ids", [])
        work = spec.pop("work", [])  # one item per connection (won holds)
        per, conns = self.user_count // generators, self.config.connections
        jobs = [
            Job(
                kind,
                self.host,
                port or self.port,
                start_at,
                duration or self.config.duration,
                connections=conns,
                tokens=self.tokens[g * per : (g + 1) * per],
                user_ids=user_ids[g * per : (g + 1) * per],
                work=work[g * conns : (g + 1) * conns],
                **spec,
            )
            for g in range(generators)
        ]
        return await self.gather(jobs)

    async def gather(self, jobs: Sequence[Job]) -> Sample:
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(self.pool, generator_main, job) for job in jobs)
        )
        total = Sample()
        for sample in results:
            total.merge(sample)
        self.report.server_errors += sum(n for code, n in total.statuses.items() if code >= 500)
        self.report.dropped += total.dropped
        self.report.notes += [f"{jobs[0].kind}: {error}" for error in total.errors[:3]]
        return total

    async def bookings(self, s: Seeded) -> None:
        spread = booking_work(s.spread_screenings, s.spread_seats, interleave=True)
        hot = booking_work(s.hot_screenings, s.hot_seats, interleave=False)
        for name, work, bar in (
            ("Bookings committed, spread over screenings", spread, SPREAD_TICKETS_PER_S),
            ("Bookings committed, one hot screening at a time", hot, HOT_TICKETS_PER_S),
        ):
            start_at = self.config.start_at()
            sample = await self.booking_workload(work, start_at)
            self.report.tickets += sample.tickets
            # The seeded seats may all be sold before the time is up: the rate is over the time
            # the bookings took, not over a duration partly spent with nothing left to sell.
            elapsed = booking_time(sample, start_at, self.config.duration)
            per_s = sample.won / elapsed if elapsed > 0 else 0.0
            result = f"{per_s:,.0f} tickets/s"
            if elapsed < self.config.duration:
                result += f" ({sample.won:,} tickets, all sold in {elapsed:.1f} s)"
            target = f">= {bar:,} tickets/s"
            met = at_least(per_s, bar)
            self.report.rows.append(Row(name, result, *quantiles(sample), "", target, met))

    async def booking_workload(self, work: list[tuple[int, list[int]]], start_at: float) -> Sample:
        generators = self.config.generator_count
        per = self.user_count // generators
        jobs = [
            Job(
                "book",
                self.host,
                self.port,
                start_at,
                self.config.duration,
                connections=self.config.connections,
                tokens=self.tokens[g * per : (g + 1) * per],
                work=work[g::generators],
            )
            for g in range(generators)
        ]
        return await self.gather(jobs)

    async def websockets(self, s: Seeded) -> None:
        fast, slow = self.config.watchers_fast, self.config.watchers_slow
        await self.watchers(s.ws_screenings[0], fast, 10.0, WS_FAST_P99_MS)
        await self.watchers(s.ws_screenings[1], slow, 1.0, WS_SLOW_P99_MS, memory=True)

    async def watchers(
        self, screening_id: int, count: int, per_s: float, p99_ms: float, memory: bool = False
    ) -> None:
        """Watchers of one screening while seats change at ``per_s``: the delay to the last
        watcher; with ``memory``, also the server's RSS growth per connected watcher (read
        before the watchers connect and once all are connected and the changes are made)."""
        jobs = self.watch_jobs("watch", screening_id, count)
        changes: list[int] = []
        server = self.server_procs[0].pid
        rss = [tree_rss_kb(server)]

        async def drive() -> None:
            changes.append(await self.change_seats(screening_id, per_s))
            rss.append(tree_rss_kb(server))

        sample, connected = await self.while_watching(jobs, drive)
        # A change not seen by every watcher within the grace period counts as infinitely late.
        worst = [w for w, n in sample.events.values() if n >= connected]
        late = max(0, sum(changes) - len(worst))
        worst += [float("inf")] * late
        name = f"WebSocket: {count:,} watchers at {per_s:g} change/s, last watcher"
        value = f"{connected:,} connected, {sum(changes)} changes, {late} not seen by all"
        target, p99 = f"p99 <= {p99_ms:g} ms", pct(worst, 0.99)
        met = at_most(p99, p99_ms)
        if memory:
            per_watcher = (rss[-1] - rss[0]) / connected if connected and len(rss) > 1 else nan
            value += f"; server RSS {rss[0] / 1024:,.0f} -> {rss[-1] / 1024:,.0f} MB"
            value += f", {per_watcher:.1f} KB per watcher"
            target += f", RSS <= {RSS_PER_WATCHER_KB:g} KB per watcher"
            met = met and at_most(per_watcher, RSS_PER_WATCHER_KB)
        self.report.rows.append(Row(name, value, ms(pct(worst, 0.5)), ms(p99), "", target, met))

    def watch_jobs(self, kind: str, screening_id: int, count: int) -> list[Job]:
        generators = min(self.config.generator_count, max(1, count // 50))
        control = (self.manager.Queue(), self.manager.Event())
        return [
            Job(
                kind,
                self.host,
                self.port,
                0.0,
                0.0,
                screening_id=screening_id,
                watchers=count // generators + (1 if g < count % generators else 0),
                control=control,
            )
            for g in range(generators)
        ]

    async def while_watching(
        self, jobs: list[Job], drive: Callable[[], Awaitable[None]]
    ) -> tuple[Sample, int]:
        """Start the watchers, run ``drive`` once all are connected, then collect what they saw."""
        ready, stop = jobs[0].control
        running = asyncio.ensure_future(self.gather(jobs))
        connected, reported = 0, 0
        while reported < len(jobs) and not running.done():
            with contextlib.suppress(queue.Empty):
                connected += await asyncio.to_thread(ready.get, True, 0.5)
                reported += 1
        try:
            await drive()
            await asyncio.sleep(self.grace)  # late deliveries
        finally:
            stop.set()
        return await running, connected

    @property
    def grace(self) -> float:
        """How long watchers keep listening after the last change."""
        return min(5.0, max(1.0, self.config.duration / 4))

    async def change_seats(self, screening_id: int, per_s: float) -> int:
        """Hold and release seats at ``per_s`` changes per second; returns the changes made."""
        http, token = Http(self.host, self.port), self.tokens[-2]
        start, n, made = time.perf_counter(), 0, 0
        while (elapsed := time.perf_counter() - start) < self.config.duration:
            await asyncio.sleep(max(0.0, n / per_s - elapsed))
            seat = self.changer_seat(n)
            if n % 2 == 0:
                body = {"screening_id": screening_id, "seat_ids": [seat]}
                status, _ = await http.call("POST", f"{API}/seat-reservations/reserve", body, token)
            else:
                path = f"{API}/seat-reservations/cancel/{screening_id}?seat_ids={seat}"
                status, _ = await http.call("DELETE", path, None, token)
            made += status in (201, 204)
            n += 1
        await http.close()
        return made

    def changer_seat(self, n: int) -> int:
        return self.hot_seats[(n // 2) % len(self.hot_seats)]

    async def expiry(self, s: Seeded) -> None:
        """Holds abandoned on a server with 1-second holds: from each deadline to the last
        watcher seeing the seat free. Measured twice: on a Redis with few other keys, and beside
        ``expiry_other_keys`` keys with a TTL (a release day's session caches and holds), where
        Redis's own expiry cycle, which scans the keys with a TTL a few dozen at a time, notices
        an expired lease seconds late."""
        name = "Expiry: hold deadline to watchers seeing the seat free"
        async with self.expiry_server():
            await self.expiry_row(s, name)
            others = self.config.expiry_other_keys
            if others:
                async with keys_with_a_ttl(self.redis_url, others):
                    await self.expiry_row(s, f"{name}, {others:,} other keys with a TTL in Redis")

    async def expiry_row(self, s: Seeded, name: str) -> None:
        deadlines: dict[int, float] = {}
        jobs = self.watch_jobs("watch-expiry", s.expiry_screening, 4)
        sample, _ = await self.while_watching(
            jobs, lambda: self.hold_and_abandon(s.expiry_screening, s.hot_seats, deadlines)
        )
        delays = [
            (sample.freed_at[seat] - at) * 1000
            for seat, at in deadlines.items()
            if seat in sample.freed_at
        ]
        missed = len(deadlines) - len(delays)
        value = f"{len(delays)} expiries seen, {missed} missed"
        p99 = pct(delays + [float("inf")] * missed, 0.99)  # a missed expiry: never seen
        met = at_most(p99, EXPIRY_P99_MS)
        target = f"p99 <= {EXPIRY_P99_MS:g} ms"
        self.report.rows.append(Row(name, value, ms(pct(delays, 0.5)), ms(p99), "", target, met))

    async def hold_and_abandon(
        self, screening_id: int, seats: list[int], deadlines: dict[int, float]
    ) -> None:
        """Hold single seats on the 1-second-hold server and never come back for them."""
        http = Http(self.host, self.expiry_port)
        rate_per_s = self.config.expiry_holds_per_s
        count = min(len(seats), int(rate_per_s * self.config.duration))
        start = time.perf_counter()
        for n, seat in enumerate(seats[:count]):
            await asyncio.sleep(max(0.0, n / rate_per_s - (time.perf_counter() - start)))
            body = {"screening_id": screening_id, "seat_ids": [seat]}
            token = self.tokens[n % 8]  # several users: the per-user seat cap is never reached
            status, raw = await http.call("POST", f"{API}/seat-reservations/reserve", body, token)
            if status == 201:
                deadlines[seat] = parse_time(orjson.loads(raw)["reservations"][0]["expires_at"])
        await http.close()
        await asyncio.sleep(EXPIRY_HOLD_SECONDS + 1.0)

    def row(
        self,
        name: str,
        sample: Sample,
        unit: str,
        ceiling: float | None,
        target: Target | None = None,
        seconds: float | None = None,
        note: str = "",
    ) -> None:
        """A rate's row: its ratio to ``ceiling`` (None: it is the ceiling; 0 or NaN: not
        measured) and, with a ``target``, met or missed from its own ratio and p99."""
        per_s = rate(sample, seconds or self.config.duration)
        value = f"{per_s:,.0f} {unit}" + (f" ({note})" if note else "")
        if ceiling is None:
            self.report.rows.append(Row(name, value, *quantiles(sample), "1.00 (ceiling)"))
            return
        ratio = per_s / ceiling if ceiling > 0 else nan
        shown = f"{ratio:.2f}" if ratio == ratio else "n/a"
        met = None if target is None else target.met(ratio, pct(sample.latencies_ms, 0.99))
        row = Row(name, value, *quantiles(sample), shown, str(target or ""), met)
        self.report.rows.append(row)

    async def check_books(self) -> None:
        self.report.double_sold, self.report.lost = await books(
            self.database_url, self.report.tickets
        )


@contextlib.asynccontextmanager
async def keys_with_a_ttl(redis_url: str, count: int) -> AsyncIterator[None]:
    """``count`` keys with an hour's TTL in the bench's Redis for the block, then deleted."""
    names = [f"sl:bench:ttl:{i}" for i in range(count)]
    redis = Redis.from_url(redis_url)
    try:
        for start in range(0, count, 1000):
            async with redis.pipeline(transaction=False) as pipe:
                for key in names[start : start + 1000]:
                    pipe.set(key, b"1", ex=3600)
                await pipe.execute()
        yield
    finally:
        for start in range(0, count, 1000):
            await redis.unlink(*names[start : start + 1000])
        await redis.aclose()


def booking_time(sample: Sample, start_at: float, duration: float) -> float:
    """Seconds from the start to the last booking answered, at most the workload's duration."""
    if not sample.finished_at:
        return duration
    return max(0.0, min(duration, max(sample.finished_at) - start_at))


def booking_work(
    screenings: list[int], seats: list[int], *, interleave: bool
) -> list[tuple[int, list[int]]]:
    """Bookings of BOOK_CHUNK seats; interleaved: consecutive ones on different screenings."""
    chunks = [seats[i : i + BOOK_CHUNK] for i in range(0, len(seats), BOOK_CHUNK)]
    if interleave:
        return [(sid, chunk) for chunk in chunks for sid in screenings]
    return [(sid, chunk) for sid in screenings for chunk in chunks]


def availability(screening_id: int) -> str:
    return f"{API}/seat-reservations/screening/{screening_id}/availability"


async def wait_ready(host: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until ``seatlock serve`` (``proc``) on ``port`` answers /health/ready with 200."""
    deadline = time.monotonic() + 90
    http = Http(host, port)
    while True:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            if (await http.call("GET", "/health/ready"))[0] == 200:
                break
        if proc.poll() is not None:
            raise RuntimeError(f"seatlock serve exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"seatlock serve on port {port} did not become ready")
        await asyncio.sleep(0.2)
    await http.close()


def serve(
    redis_url: str,
    database_url: str,
    data_dir: Path,
    port: int,
    workers: int,
    extra: dict[str, str],
) -> subprocess.Popen[bytes]:
    """``seatlock serve`` on the given Redis and PostgreSQL, as the bench and the other tools
    run it (bcrypt at cost 4, no demo, warnings only), with the ``extra`` settings; started, not
    yet ready (``wait_ready``)."""
    env = {
        **os.environ,
        "SEATLOCK_REDIS_URL": redis_url,
        "SEATLOCK_DATABASE_URL": database_url,
        "SEATLOCK_PORT": str(port),
        "SEATLOCK_WORKERS": str(workers),
        "SEATLOCK_DATA_DIR": str(data_dir),
        "SEATLOCK_JWT_SECRET": "bench-secret-" + "b" * 40,
        "SEATLOCK_BCRYPT_ROUNDS": "4",
        "SEATLOCK_SEED_DEMO": "false",
        "SEATLOCK_LOG_LEVEL": "warning",
        "SEATLOCK_DB_POOL_MAX": "20",
        **extra,
    }
    env.pop("SEATLOCK_ADMIN_EMAIL", None)
    code = "from seatlock.server.cli import main; main()"
    # Its own session (a Ctrl-C of the tool does not reach it: the tool stops it), and it ends
    # with the tool however the tool ends, SIGKILL included.
    return subprocess.Popen(
        [sys.executable, "-c", code, "serve"],
        env=env,
        start_new_session=True,
        preexec_fn=die_with_parent(signal.SIGTERM),
    )


@contextlib.contextmanager
def serving(
    redis_url: str, database_url: str, data_dir: Path, extra: dict[str, str]
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``serve`` with two workers on a free port: the port and the process, stopped on the way
    out (``stop_process``); the caller waits for it (``wait_ready``)."""
    port = free_port()
    proc = serve(redis_url, database_url, data_dir, port, 2, extra)
    try:
        yield port, proc
    finally:
        stop_process(proc)


async def sign_in_all(host: str, port: int, user_ids: list[int]) -> dict[int, str]:
    """Sign the seeded users in, LOGIN_CONNECTIONS at a time over keep-alive connections:
    user id -> access token."""
    tokens: dict[int, str] = {}
    todo = iter(user_ids)  # shared: each connection takes the next user

    async def sign_in() -> None:
        http = Http(host, port)
        try:
            for user_id in todo:
                body = {"email": bench_email(user_id), "password": PASSWORD}
                status, raw = await http.call("POST", f"{API}/auth/login", body)
                if status != 200:
                    raise RuntimeError(f"login failed: {status} {raw[:200]!r}")
                tokens[user_id] = str(orjson.loads(raw)["access_token"])
        finally:
            await http.close()

    await asyncio.gather(*(sign_in() for _ in range(LOGIN_CONNECTIONS)))
    return tokens


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
