"""Memory per WebSocket watcher, and how late a change reaches the last one.

    .venv/bin/python -m loadtests.wsmemory --watchers 2000
    .venv/bin/python -m loadtests.wsmemory --watchers 10000 --clients 2 --changes 40

Starts throw-away embedded Redis and PostgreSQL (or uses ``--redis-url`` / ``--database-url``),
seeds one 500-seat screening, and runs ``seatlock serve`` with ``--workers`` worker processes. It
reads the workers' RSS (``VmRSS`` of the supervisor's children), connects ``--watchers``
anonymous watchers to the screening from ``--clients`` separate processes, waits for the
figures to settle, reads the RSS again and prints the growth per watcher. Then it holds and
releases a seat ``--changes`` times at ``--per-s`` changes a second and prints, per change, the
delay from the server's ``timestamp`` to its arrival at the last watcher (p50/p99), the RSS
once more (buffers used by the fan-out) and the workers' CPU time per update delivered (which a
busy machine distorts less than the delays).

The watchers are the lean client of ``seatlock bench`` (loadtests/wsclient.py; no JSON parsing:
a message is keyed by its bytes), so at 10,000 the client's own cost stays small next to the
server's. Like browsers they offer permessage-deflate in the handshake; ``--no-deflate`` leaves
it out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import orjson

from loadtests import wsclient
from loadtests.bench import stop_process
from loadtests.benchreport import pct
from loadtests.benchseed import PASSWORD, bench_email, seed_catalog
from loadtests.loadgen import API, Http, parse_time, yield_to_the_server
from seatlock.process import end_cleanly_on_sigterm, raise_open_files_limit
from seatlock.server.embedded import die_with_parent, embedded_services, free_port

HOST = "127.0.0.1"
DEFLATE = "permessage-deflate; client_max_window_bits"


@dataclass
class Config:
    watchers: int = 2000
    clients: int = 2
    workers: int = 2
    changes: int = 40
    per_s: float = 4.0
    deflate: bool = True
    redis_url: str = ""
    database_url: str = ""


# --- The watchers (run in the client processes) ---------------------------------------------------


async def open_watch(port: int, sid: int, ext: str, seen: dict[bytes, float]) -> bool:
    """One watcher (loadtests/wsclient.py); each update's latest arrival noted by its bytes."""

    def on_messages(raws: list[bytes], now: float) -> None:
        for raw in raws:
            if b"seat_update" in raw:
                seen[raw] = max(seen.get(raw, 0.0), now)

    try:
        async with asyncio.timeout(60):
            watch = await wsclient.connect(HOST, port, f"/ws/screenings/{sid}", on_messages, ext)
            first = await watch.first
    except (TimeoutError, OSError, wsclient.HandshakeFailed):
        return False
    return b"connection_confirmed" in first


async def watch_all(port: int, sid: int, count: int, deflate: bool, pipe: Connection) -> None:
    seen: dict[bytes, float] = {}
    gate = asyncio.Semaphore(100)
    ext = DEFLATE if deflate else ""

    async def one() -> bool:
        async with gate:
            with contextlib.suppress(OSError):
                return await open_watch(port, sid, ext, seen)
        return False

    results = await asyncio.gather(*(one() for _ in range(count)))
    pipe.send(sum(results))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_reader(pipe.fileno(), stop.set)
    await stop.wait()
    pipe.recv()
    pipe.send(seen)


def client_main(port: int, sid: int, count: int, deflate: bool, pipe: Connection) -> None:
    yield_to_the_server()
    import uvloop

    uvloop.run(watch_all(port, sid, count, deflate, pipe))


# --- The run --------------------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    token: str = ""
    seats: list[int] = field(default_factory=list)
    screening: int = 0


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's worker processes (multiprocessing's spawned children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
            if ppid == supervisor and b"spawn_main" in cmdline:
                pids.append(int(entry.name))
    return sorted(pids)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pids: list[int]) -> float:
    """User and system CPU seconds the processes used so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_line(label: str, pids: list[int]) -> int:
    sizes = [rss_kb(p) for p in pids]
    print(f"{label}: workers' RSS " + " + ".join(f"{s / 1024:.1f}" for s in sizes) + " MB")
    return sum(sizes)


def serve(config: Config, root: Path, redis_url: str, database_url: str) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "SEATLOCK_REDIS_URL": redis_url,
        "SEATLOCK_DATABASE_URL": database_url,
        "SEATLOCK_PORT": str(port),
        "SEATLOCK_WORKERS": str(config.workers),
        "SEATLOCK_DATA_DIR": str(root / "serve"),
        "SEATLOCK_JWT_SECRET": "wsmemory-secret-" + "w" * 40,
        "SEATLOCK_BCRYPT_ROUNDS": "4",
        "SEATLOCK_SEED_DEMO": "false",
        "SEATLOCK_LOG_LEVEL": "warning",
    }
    code = "from seatlock.server.cli import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve"],
        env=env,
        start_new_session=True,
        preexec_fn=die_with_parent(signal.SIGTERM),  # never outlives this tool
    )
    return Server(proc, port)


async def wait_ready(server: Server, workers: int) -> list[int]:
    http = Http(HOST, server.port)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            pids = worker_pids(server.proc.pid)
            if (await http.call("GET", "/health/ready"))[0] == 200 and len(pids) == workers:
                await http.close()
                return pids
        if server.proc.poll() is not None:
            raise RuntimeError(f"seatlock serve exited with {server.proc.returncode}")
        await asyncio.sleep(0.3)
    raise RuntimeError("seatlock serve did not become ready")


async def prepare(server: Server, database_url: str) -> None:
    from db.migrate import migrate_database

    await migrate_database(database_url)
    seeded = await seed_catalog(database_url, 1.0, 2)
    server.screening, server.seats = seeded.ws_screenings[0], seeded.hot_seats[-20:]
    http = Http(HOST, server.port)
    body = {"email": bench_email(seeded.user_ids[0]), "password": PASSWORD}
    status, raw = await http.call("POST", f"{API}/auth/login", body)
    await http.close()
    if status != 200:
        raise RuntimeError(f"login failed: {status} {raw[:200]!r}")
    server.token = orjson.loads(raw)["access_token"]


async def warm_up(server: Server, config: Config) -> None:
    """Some HTTP and a few watchers first, so the first RSS reading has every import and pool."""
    http = Http(HOST, server.port)
    for _ in range(200):
        await http.call("GET", f"{API}/screenings/{server.screening}/availability")
    await http.close()
    with start_clients(server, config, 50) as pipes:
        await gather_counts(pipes)
        await change_seats(server, 4, 20.0)
        await collect(pipes)


@contextlib.contextmanager
def start_clients(server: Server, config: Config, watchers: int) -> Iterator[list[Connection]]:
    context = multiprocessing.get_context("spawn")
    procs, pipes = [], []
    clients = max(1, min(config.clients, watchers // 20))
    for n in range(clients):
        share = watchers // clients + (1 if n < watchers % clients else 0)
        mine, theirs = context.Pipe()
        args = (server.port, server.screening, share, config.deflate, theirs)
        proc = context.Process(target=client_main, args=args, daemon=True)
        proc.start()
        procs.append(proc)
        pipes.append(mine)
    try:
        yield pipes
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


async def gather_counts(pipes: list[Connection]) -> int:
    return sum([await asyncio.to_thread(pipe.recv) for pipe in pipes])


async def collect(pipes: list[Connection]) -> dict[bytes, float]:
    """Stop the clients; each update's arrival at the last watcher (wall clock)."""
    for pipe in pipes:
        pipe.send("stop")
    seen: dict[bytes, float] = {}
    for pipe in pipes:
        for key, at in (await asyncio.to_thread(pipe.recv)).items():
            seen[key] = max(seen.get(key, 0.0), at)
    return seen


async def change_seats(server: Server, changes: int, per_s: float) -> int:
    """Hold and release seats: ``changes`` seat events at ``per_s``; returns those made."""
    http, start, made = Http(HOST, server.port), time.perf_counter(), 0
    for n in range(changes):
        await asyncio.sleep(max(0.0, n / per_s - (time.perf_counter() - start)))
        seat = server.seats[(n // 2) % len(server.seats)]
        if n % 2 == 0:
            body = {"screening_id": server.screening, "seat_ids": [seat]}
            status, _ = await http.call(
                "POST", f"{API}/seat-reservations/reserve", body, server.token
            )
        else:
            path = f"{API}/seat-reservations/cancel/{server.screening}?seat_ids={seat}"
            status, _ = await http.call("DELETE", path, None, server.token)
        made += status in (201, 204)
    await http.close()
    return made


def delays_ms(seen: dict[bytes, float]) -> list[float]:
    return sorted(
        (at - parse_time(orjson.loads(raw)["timestamp"])) * 1000 for raw, at in seen.items()
    )


async def measure(config: Config, server: Server) -> None:
    pids = await wait_ready(server, config.workers)
    await warm_up(server, config)
    await asyncio.sleep(1.0)
    before = rss_line("before", pids)
    with start_clients(server, config, config.watchers) as pipes:
        connected = await gather_counts(pipes)
        await asyncio.sleep(3.0)  # the server settles (the last handshakes' tasks, GC)
        after = rss_line(f"{connected:,} watchers connected", pids)
        print(f"RSS per watcher: {(after - before) * 1024 / max(1, connected) / 1000:.1f} KB")
        cpu = cpu_s(pids)
        made = await change_seats(server, config.changes, config.per_s)
        await asyncio.sleep(2.0)  # late deliveries
        cpu = cpu_s(pids) - cpu
        seen = await collect(pipes)
    rss_line(f"after {made} changes", pids)
    # Less sensitive to a busy machine than the delays: the workers' CPU per update delivered.
    print(f"workers' CPU per update delivered: {cpu * 1e6 / max(1, made * connected):.1f} us")
    delays = delays_ms(seen)
    print(
        f"last watcher, {len(delays)} of {made} changes seen: p50 {pct(delays, 0.5):.1f} ms,"
        f" p99 {pct(delays, 0.99):.1f} ms, max {max(delays, default=0):.1f} ms"
    )


async def run(config: Config) -> None:
    root = Path(tempfile.mkdtemp(prefix="seatlock-wsmemory-"))
    try:
        with services(config, root) as (redis_url, database_url):
            server = serve(config, root, redis_url, database_url)
            try:
                await wait_ready(server, config.workers)
                await prepare(server, database_url)
                await measure(config, server)
            finally:
                stop_process(server.proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def services(config: Config, root: Path) -> Iterator[tuple[str, str]]:
    if config.redis_url and config.database_url:
        yield config.redis_url, config.database_url
        return
    with embedded_services(root, persistent=False) as urls:
        yield urls


def main() -> None:
    end_cleanly_on_sigterm()  # stopped by timeout or kill: its servers and scratch data go too
    parser = argparse.ArgumentParser(prog="python -m loadtests.wsmemory", description=__doc__)
    parser.add_argument("--watchers", type=int, default=Config.watchers)
    parser.add_argument("--clients", type=int, default=Config.clients, help="client processes")
    parser.add_argument("--workers", type=int, default=Config.workers)
    parser.add_argument("--changes", type=int, default=Config.changes)
    parser.add_argument("--per-s", type=float, default=Config.per_s)
    parser.add_argument("--no-deflate", dest="deflate", action="store_false")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    raise_open_files_limit()
    asyncio.run(run(Config(**vars(args))))


if __name__ == "__main__":
    main()
