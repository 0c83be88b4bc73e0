"""``seatlock bench``: release-day figures and the ceilings they are judged against, in one run.

It starts throw-away embedded Redis and PostgreSQL, two ``seatlock serve`` processes (the main one,
and a one-worker one with 1-second holds for the expiry workload), seeds a 500-seat hot room and
many screenings, then runs fixed, time-bounded workloads from the load generator processes of
``seatlock.loadgen``. It prints one table and writes it with the date, the machine and the command
to ``--out``.

Figures are only meaningful on a quiet machine: the generators share the cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import multiprocessing
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from seatlock.embedded import embedded_services, free_port
from seatlock.loadgen import API, Http, Job, Sample, generator_main, parse_time

PASSWORD = "Bench-pass-1!"
HOT_ROWS, HOT_PER_ROW = 20, 25  # the 500-seat hot room
SPREAD_ROWS, SPREAD_PER_ROW = 12, 25
BOOK_CHUNK = 2  # seats per booking
SCREENING_GAP = dt.timedelta(hours=3)
EXPIRY_HOLD_SECONDS = 1

# --- Command line -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    duration: float = 20.0
    workers: int = 0  # server worker processes; 0: one per core
    generators: int = 0  # load generator processes; 0: one per core
    connections: int = 64  # HTTP/Redis connections per generator process
    watchers_fast: int = 1000  # watchers at 10 changes/s
    watchers_slow: int = 10000  # watchers at 1 change/s
    expiry_holds_per_s: float = 20.0
    out: str = "bench/results.md"
    command: str = "seatlock bench"

    @property
    def server_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def generator_count(self) -> int:
        return self.generators or os.cpu_count() or 1


QUICK = dict(
    duration=0.75,
    connections=4,
    watchers_fast=20,
    watchers_slow=20,
    generators=1,
    workers=1,
    expiry_holds_per_s=10.0,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, help="seconds per workload (default 20)")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (~20 s)")
    parser.add_argument(
        "--workers", type=int, help="server worker processes (default: $SEATLOCK_WORKERS or cores)"
    )
    parser.add_argument("--generators", type=int, help="load generator processes (default: cores)")
    parser.add_argument("--connections", type=int, help="connections per generator (default 64)")
    parser.add_argument("--watchers-fast", type=int, help="watchers at 10 changes/s (1000)")
    parser.add_argument("--watchers-slow", type=int, help="watchers at 1 change/s (10000)")
    parser.add_argument("--out", default="bench/results.md", help="where to write the table")


def config_from_args(args: argparse.Namespace) -> Config:
    base = Config(**QUICK) if args.quick else Config()  # type: ignore[arg-type]
    given = {
        "duration": args.duration,
        "workers": args.workers if args.workers is not None else workers_from_env(),
        "generators": args.generators,
        "connections": args.connections,
        "watchers_fast": args.watchers_fast,
        "watchers_slow": args.watchers_slow,
    }
    command = "seatlock " + " ".join(sys.argv[1:]) if sys.argv[1:] else "seatlock bench"
    changes = {k: v for k, v in given.items() if v is not None}
    return replace(base, out=args.out, command=command, **changes)


def workers_from_env() -> int | None:
    """``SEATLOCK_WORKERS`` sizes the bench's server like ``seatlock serve``; a flag wins."""
    raw = os.environ.get("SEATLOCK_WORKERS", "")
    return int(raw) if raw.strip() else None


def run(args: argparse.Namespace) -> int:
    """The ``bench`` subcommand: returns the exit code (1 when a correctness check failed)."""
    config = config_from_args(args)
    report = asyncio.run(Bench(config).run())
    table = render(report, config)
    print(table)
    if config.out:
        out = Path(config.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        plot = out.with_name(out.stem + "-holds.svg")
        plot.write_text(latency_svg(report.hold_timeline, "Hold attempts via HTTP, hot screening"))
        out.write_text(f"{table}\n\n![latency of the hold workload over time]({plot.name})\n")
    return 0 if report.correct else 1


# --- The run --------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    value: str
    p50: str = ""
    p99: str = ""
    ratio: str = ""
    target: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    tickets: list[tuple[int, int, int]] = field(default_factory=list)
    server_errors: int = 0
    dropped: int = 0
    double_sold: int = -1
    lost: int = -1
    notes: list[str] = field(default_factory=list)
    hold_timeline: list[tuple[float, float]] = field(default_factory=list)  # (finished, ms)

    @property
    def correct(self) -> bool:
        failures = (self.double_sold, self.lost, self.server_errors, self.dropped)
        return failures == (0, 0, 0, 0)


@dataclass
class Seeded:
    hot_seats: list[int]
    spread_seats: list[int]
    hold_screening: int
    redis_screening: int
    ws_screenings: list[int]
    expiry_screening: int
    hot_screenings: list[int]
    spread_screenings: list[int]
    user_ids: list[int]


class Bench:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.report = Report()
        self.tokens: list[str] = []
        self.host = "127.0.0.1"
        self.port = 0
        self.expiry_port = 0
        self.redis_url = ""
        self.database_url = ""
        self.hot_seats: list[int] = []
        self.server_procs: list[subprocess.Popen[bytes]] = []

    async def run(self) -> Report:
        root = Path(tempfile.mkdtemp(prefix="seatlock-bench-"))
        try:
            with embedded_services(root, persistent=False) as (redis_url, database_url):
                self.redis_url, self.database_url = redis_url, database_url
                await self.prepare_database()
                with self.servers(root), self.generators() as pool:
                    self.pool = pool
                    await self.wait_ready()
                    seeded = await self.seed()
                    await self.workloads(seeded)
                await self.check_books()
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
        self.port, self.expiry_port = free_port(), free_port()
        main = self.serve(root / "main", self.port, self.config.server_workers, {})
        short = {"SEATLOCK_HOLD_SECONDS": str(EXPIRY_HOLD_SECONDS)}
        expiry = self.serve(root / "expiry", self.expiry_port, 1, short)
        self.server_procs = [main, expiry]
        try:
            yield
        finally:
            for proc in (main, expiry):
                stop_process(proc)

    def serve(
        self, data_dir: Path, port: int, workers: int, extra: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "SEATLOCK_REDIS_URL": self.redis_url,
            "SEATLOCK_DATABASE_URL": self.database_url,
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
        code = "from seatlock.cli import main; main()"
        return subprocess.Popen(
            [sys.executable, "-c", code, "serve"], env=env, start_new_session=True
        )

    @contextlib.contextmanager
    def generators(self) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
        context = multiprocessing.get_context("spawn")
        self.manager = context.Manager()
        pool = concurrent.futures.ProcessPoolExecutor(self.config.generator_count, context)
        try:
            yield pool
        finally:
            pool.shutdown(cancel_futures=True)
            self.manager.shutdown()

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 90
        for port, proc in zip((self.port, self.expiry_port), self.server_procs, strict=True):
            http = Http(self.host, port)
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

    # --- Seeding ---

    async def seed(self) -> Seeded:
        seeded = await seed_catalog(self.database_url, self.config, self.user_count)
        self.hot_seats = seeded.hot_seats
        self.tokens = await self.login_all(seeded.user_ids)
        return seeded

    @property
    def user_count(self) -> int:
        return self.config.generator_count * self.config.connections + 16

    async def login_all(self, user_ids: list[int]) -> list[str]:
        gate = asyncio.Semaphore(16)

        async def login(user_id: int) -> str:
            async with gate:
                http = Http(self.host, self.port)
                body = {"email": bench_email(user_id), "password": PASSWORD}
                status, raw = await http.call("POST", f"{API}/auth/login", body)
                await http.close()
            if status != 200:
                raise RuntimeError(f"login failed: {status} {raw[:200]!r}")
            return str(orjson.loads(raw)["access_token"])

        return list(await asyncio.gather(*(login(u) for u in user_ids)))

    # --- Workloads ---

    async def workloads(self, s: Seeded) -> None:
        live = await self.http_workload("get", path="/health/live")
        self.row("HTTP ceiling: GET /health/live", live, "req/s", None, "")
        ceiling = rate(live, self.config.duration)
        await self.warm(s)
        redis = await self.http_workload(
            "redis-hold",
            screening_id=s.redis_screening,
            seat_ids=s.hot_seats,
            redis_url=self.redis_url,
            user_ids=s.user_ids,
        )
        self.row("Redis ceiling: hold script straight on Redis", redis, "holds/s", None, "")
        engine = await self.http_workload(
            "engine-hold",
            screening_id=s.redis_screening,
            seat_ids=s.hot_seats,
            redis_url=self.redis_url,
            user_ids=s.user_ids,
        )
        redis_ceiling = rate(redis, self.config.duration)
        self.row(
            "Engine holds: SeatEngine.hold, no HTTP",
            engine,
            "holds/s",
            redis_ceiling,
            ">= 0.6 x Redis",
        )
        holds = await self.http_workload(
            "hold", screening_id=s.hold_screening, seat_ids=s.hot_seats
        )
        self.row(
            "Hold attempts via HTTP, hot 500 seats",
            holds,
            "attempts/s",
            ceiling,
            ">= 0.35 x HTTP, p99 <= 25 ms",
        )
        self.report.notes.append(f"hold attempts won: {holds.won} of {holds.ops}")
        self.report.hold_timeline = list(zip(holds.finished_at, holds.latencies_ms, strict=True))
        reads = await self.http_workload("get", path=availability(s.hold_screening))
        self.row(
            "Availability reads, 500-seat map",
            reads,
            "reads/s",
            ceiling,
            ">= 0.5 x HTTP, p99 <= 15 ms",
        )
        await self.bookings(s)
        await self.watchers(s.ws_screenings[0], self.config.watchers_fast, 10.0, "<= 60 ms")
        await self.watchers(s.ws_screenings[1], self.config.watchers_slow, 1.0, "<= 500 ms")
        await self.expiry(s)

    async def warm(self, s: Seeded) -> None:
        """Load the screenings into Redis (one hold each), so no workload pays for that."""
        http = Http(self.host, self.port)
        for sid in (s.hold_screening, s.redis_screening, *s.ws_screenings):
            body = {"screening_id": sid, "seat_ids": [s.hot_seats[-1]]}
            status, raw = await http.call(
                "POST", f"{API}/seat-reservations/reserve", body, self.tokens[-1]
            )
            if status != 201:
                raise RuntimeError(f"warm-up hold failed: {status} {raw[:200]!r}")
            await http.call(
                "DELETE", f"{API}/seat-reservations/cancel/{sid}", None, self.tokens[-1]
            )
        await http.close()

    async def http_workload(self, kind: str, **spec: Any) -> Sample:
        generators = self.config.generator_count
        start_at = time.time() + 0.3 + 0.1 * generators
        user_ids = spec.pop("user_ids", [])
        per = self.user_count // generators
        jobs = [
            Job(
                kind,
                self.host,
                self.port,
                start_at,
                self.config.duration,
                connections=self.config.connections,
                tokens=self.tokens[g * per : (g + 1) * per],
                user_ids=user_ids[g * per : (g + 1) * per],
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
        for name, work, target in (
            ("Bookings committed, spread over screenings", spread, ">= 3000 tickets/s"),
            ("Bookings committed, one hot screening at a time", hot, ">= 1500 tickets/s"),
        ):
            sample = await self.booking_workload(work)
            self.report.tickets += sample.tickets
            per_s = sample.won / self.config.duration
            self.report.rows.append(
                Row(name, f"{per_s:,.0f} tickets/s", *quantiles(sample), "", target)
            )

    async def booking_workload(self, work: list[tuple[int, list[int]]]) -> Sample:
        generators = self.config.generator_count
        start_at = time.time() + 0.3 + 0.1 * generators
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

    async def watchers(self, screening_id: int, count: int, per_s: float, target: str) -> None:
        jobs = self.watch_jobs("watch", screening_id, count)
        changes: list[int] = []

        async def drive() -> None:
            changes.append(await self.change_seats(screening_id, per_s))

        sample, connected = await self.while_watching(jobs, drive)
        # A change not seen by every watcher within the grace period counts as infinitely late.
        worst = [w for w, n in sample.events.values() if n >= connected]
        late = max(0, sum(changes) - len(worst))
        worst += [float("inf")] * late
        name = f"WebSocket: {count:,} watchers at {per_s:g} change/s, last watcher"
        value = f"{connected:,} connected, {sum(changes)} changes, {late} not seen by all"
        self.report.rows.append(
            Row(name, value, ms(pct(worst, 0.5)), ms(pct(worst, 0.99)), "", f"p99 {target}")
        )

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
        jobs = self.watch_jobs("watch-expiry", s.expiry_screening, 4)
        deadlines: dict[int, float] = {}
        sample, _ = await self.while_watching(
            jobs, lambda: self.hold_and_abandon(s.expiry_screening, s.hot_seats, deadlines)
        )
        delays = [
            (sample.freed_at[seat] - at) * 1000
            for seat, at in deadlines.items()
            if seat in sample.freed_at
        ]
        missed = len(deadlines) - len(delays)
        name = "Expiry: hold deadline to watchers seeing the seat free"
        value = f"{len(delays)} expiries seen, {missed} missed"
        self.report.rows.append(
            Row(name, value, ms(pct(delays, 0.5)), ms(pct(delays, 0.99)), "", "p99 <= 250 ms")
        )

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

    def row(self, name: str, sample: Sample, unit: str, ceiling: float | None, target: str) -> None:
        per_s = rate(sample, self.config.duration)
        if ceiling is None:
            ratio = "1.00 (ceiling)"
        else:
            ratio = f"{per_s / ceiling:.2f}" if ceiling > 0 else "n/a"
        self.report.rows.append(
            Row(name, f"{per_s:,.0f} {unit}", *quantiles(sample), ratio, target)
        )

    async def check_books(self) -> None:
        self.report.double_sold, self.report.lost = await books(
            self.database_url, self.report.tickets
        )


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


def bench_email(user_id: int) -> str:
    return f"bench-{user_id}@bench.invalid"


def rate(sample: Sample, duration: float) -> float:
    return sample.ops / duration if duration else 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float) -> str:
    if value != value:
        return "n/a"
    return "never" if value == float("inf") else f"{value:.1f} ms"


def quantiles(sample: Sample) -> tuple[str, str]:
    return ms(pct(sample.latencies_ms, 0.5)), ms(pct(sample.latencies_ms, 0.99))


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- Seed data (straight into PostgreSQL: the bench measures seat traffic, not the catalog) ------


async def seed_catalog(database_url: str, config: Config, users: int) -> Seeded:
    from seatlock.passwords import hash_password

    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            hashed = await hash_password(PASSWORD, 4)
            user_ids = await seed_users(conn, users, hashed)
            hot_room, hot_seats = await seed_room(conn, "Hot", HOT_ROWS, HOT_PER_ROW)
            spread_room, spread_seats = await seed_room(conn, "Spread", SPREAD_ROWS, SPREAD_PER_ROW)
            movie = await conn.fetchval(
                "INSERT INTO movies (title, duration_minutes, genre) VALUES"
                " ('Release Day', 120, 'Action') RETURNING id"
            )
            hot_count = 5 + screenings_needed(config, 1500, len(hot_seats))
            spread_count = screenings_needed(config, 3000, len(spread_seats))
            hot = await seed_screenings(conn, movie, hot_room, hot_count)
            spread = await seed_screenings(conn, movie, spread_room, max(8, spread_count))
    finally:
        await conn.close()
    return Seeded(
        hot_seats, spread_seats, hot[0], hot[1], hot[2:4], hot[4], hot[5:], spread, user_ids
    )


def screenings_needed(config: Config, target_per_s: int, seats: int) -> int:
    """Enough seats that the booking workloads cannot run out below twice the target rate."""
    return max(2, int(2 * target_per_s * config.duration) // seats + 1)


async def seed_users(conn: asyncpg.Connection, count: int, hashed: str) -> list[int]:
    first = await conn.fetchval("SELECT coalesce(max(id), 0) + 1 FROM users")
    rows = [(bench_email(first + i), hashed, f"Bench user {i}") for i in range(count)]
    await conn.copy_records_to_table(
        "users", records=rows, columns=["email", "password_hash", "full_name"]
    )
    fetched = await conn.fetch("SELECT id, email FROM users WHERE email LIKE 'bench-%'")
    by_email = {r["email"]: r["id"] for r in fetched}
    ids = sorted(by_email.values())
    # The login e-mail must name the real id (identity values need not start where we guessed).
    await conn.executemany(
        "UPDATE users SET email = $1 WHERE id = $2", [(bench_email(i), i) for i in ids]
    )
    return ids


async def seed_room(
    conn: asyncpg.Connection, name: str, rows: int, per_row: int
) -> tuple[int, list[int]]:
    cinema = await conn.fetchval(
        "INSERT INTO cinemas (name, city) VALUES ($1, 'Benchville') RETURNING id", f"{name} cinema"
    )
    room = await conn.fetchval(
        "INSERT INTO rooms (cinema_id, name) VALUES ($1, $2) RETURNING id", cinema, name
    )
    labels = [chr(ord("A") + r) for r in range(rows)]
    await conn.copy_records_to_table(
        "seats",
        records=[(room, label, n) for label in labels for n in range(1, per_row + 1)],
        columns=["room_id", "row_label", "seat_number"],
    )
    seats = await conn.fetch(
        "SELECT id FROM seats WHERE room_id = $1 ORDER BY row_label, seat_number", room
    )
    return room, [r["id"] for r in seats]


async def seed_screenings(conn: asyncpg.Connection, movie: int, room: int, count: int) -> list[int]:
    first = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
    rows = [
        (
            movie,
            room,
            first + i * SCREENING_GAP,
            first + i * SCREENING_GAP + dt.timedelta(hours=2),
            12.5,
        )
        for i in range(count)
    ]
    await conn.copy_records_to_table(
        "screenings", records=rows, columns=["movie_id", "room_id", "starts_at", "ends_at", "price"]
    )
    found = await conn.fetch(
        "SELECT id FROM screenings WHERE room_id = $1 ORDER BY starts_at", room
    )
    return [r["id"] for r in found]


async def books(database_url: str, tickets: list[tuple[int, int, int]]) -> tuple[int, int]:
    """(seats sold twice, 201 tickets missing from PostgreSQL)."""
    conn = await asyncpg.connect(database_url)
    try:
        double = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM tickets WHERE status IN ('pending', 'confirmed')"
            " GROUP BY screening_id, seat_id HAVING count(*) > 1) d"
        )
        lost = await conn.fetchval(
            "SELECT count(*) FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])"
            " AS b(id, screening_id, seat_id) WHERE NOT EXISTS (SELECT 1 FROM tickets t"
            " WHERE t.id = b.id AND t.screening_id = b.screening_id AND t.seat_id = b.seat_id"
            " AND t.status IN ('pending', 'confirmed'))",
            [t[0] for t in tickets],
            [t[1] for t in tickets],
            [t[2] for t in tickets],
        )
    finally:
        await conn.close()
    return int(double), int(lost)


# --- The table ------------------------------------------------------------------------------------


def render(report: Report, config: Config) -> str:
    rows = [
        *report.rows,
        Row("Double-sold seats", str(report.double_sold), target="must be 0"),
        Row("Lost bookings (201 not in PostgreSQL)", str(report.lost), target="must be 0"),
        Row("HTTP 5xx answers", str(report.server_errors), target="must be 0"),
        Row("Dropped connections (no answer)", str(report.dropped), target="must be 0"),
    ]
    header = ["Workload", "Result", "p50", "p99", "Ratio to ceiling", "Target"]
    lines = [
        f"# seatlock bench, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {machine()}",
        f"- command: `{config.command}`",
        f"- {config.duration:g} s per workload, {config.server_workers} server worker(s),"
        f" {config.generator_count} generator process(es) x {config.connections} connections",
        "- figures are only meaningful on a quiet machine (generators share the cores)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *(
            "| " + " | ".join([r.name, r.value, r.p50, r.p99, r.ratio, r.target]) + " |"
            for r in rows
        ),
        "",
        *(f"- {note}" for note in report.notes),
        f"- verdict: {'OK' if report.correct else 'FAILED'}",
    ]
    return "\n".join(lines)


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model or platform.processor() or 'unknown CPU'}), " + (
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def latency_svg(timeline: list[tuple[float, float]], title: str, width: int = 800) -> str:
    """p50 and p99 latency per time slice, as a small dependency-free SVG line chart."""
    height, left, bottom = 300, 60, 40
    if not timeline:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40">' + (
            f'<text x="10" y="25">{title}: no data</text></svg>'
        )
    start = min(t for t, _ in timeline)
    span = max(t for t, _ in timeline) - start or 1.0
    slices: dict[int, list[float]] = {}
    for at, latency in timeline:
        slices.setdefault(int((at - start) / span * 59.999), []).append(latency)
    p50 = {i: pct(v, 0.5) for i, v in slices.items()}
    p99 = {i: pct(v, 0.99) for i, v in slices.items()}
    top = max(p99.values()) * 1.1 or 1.0

    def points(series: dict[int, float]) -> str:
        return " ".join(
            f"{left + i * (width - left - 10) / 59:.1f},"
            f"{height - bottom - v / top * (height - bottom - 20):.1f}"
            for i, v in sorted(series.items())
        )

    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
            ' font-family="sans-serif" font-size="12">',
            f'<text x="{left}" y="14">{title}: p50 (blue), p99 (red) per slice of {span / 60:.2f} s'
            "</text>",
            f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}"'
            ' stroke="black"/>',
            f'<line x1="{left}" y1="20" x2="{left}" y2="{height - bottom}" stroke="black"/>',
            f'<text x="5" y="24">{top:.0f} ms</text><text x="5" y="{height - bottom}">0 ms</text>',
            f'<text x="{width - 60}" y="{height - 10}">{span:.1f} s</text>',
            f'<polyline fill="none" stroke="blue" points="{points(p50)}"/>',
            f'<polyline fill="none" stroke="red" points="{points(p99)}"/>',
            "</svg>",
        ]
    )
