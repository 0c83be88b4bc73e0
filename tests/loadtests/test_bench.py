"""Smoke run of ``seatlock bench --quick``: it starts its own servers, runs every workload briefly
and prints the table; the correctness rows must say 0."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtests.bench import Bench, Config, booking_time
from loadtests.benchconfig import PARTS
from loadtests.benchseed import Seeded, books
from loadtests.loadgen import Sample
from loadtests.procmem import children_of
from tests.loadtests.tools import run_tool

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(150)
async def test_bench_quick_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    code, text = await run_tool(
        sys.executable,
        "-c",
        "from seatlock.server.cli import main; main()",
        "bench",
        "--quick",
        # The cluster part starts clusters of its own: test_clusterbench.py runs it.
        "--only",
        ",".join(part for part in PARTS if part != "cluster"),
        "--out",
        str(out),
        cwd=tmp_path,
        timeout_s=140,
    )
    assert code == 0, text
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in text.splitlines()
        if line.startswith("| ")
    }
    assert rows["Double-sold seats"][0] == "0", text
    assert rows["Lost bookings (201 not in PostgreSQL)"][0] == "0", text
    assert rows["HTTP 5xx answers"][0] == "0", text
    assert rows["Dropped connections (no answer)"][0] == "0", text
    for name in (
        "HTTP ceiling",
        "Redis ceiling",
        "Engine holds: SeatEngine.hold",
        "Engine holds on the redis-py transport",
        "Transport gain, engine holds",
        "Hold attempts",
        "Hold attempts via HTTP, fast server beside",
        "Hold attempts via HTTP, redis-py server beside",
        "Transport gain, HTTP hold attempts",
        "Availability reads",
        "Availability reads as a browser asks",
        "Bookings committed, spread",
        "Bookings committed, one hot",
        "WebSocket: 20 watchers at 10",
        "WebSocket: 20 watchers at 1 ",
        "Expiry",
        "Expiry: hold deadline to watchers seeing the seat free, 2,000 other keys with a TTL",
        "Won holds",
        "Availability reads, 500-seat map, run 2 of 2",
        "Release-day crowd: 300 users over 2 s, time to sell out",
        "Release-day crowd: definite answer",
        "Release-day crowd, step: availability",
        "Release-day crowd, step: hold",
        "Release-day crowd, step: book",
        "Release-day crowd: 20 watchers",
        "HTTP ceiling, browsing turns",
        "Catalog: movies list",
        "Catalog: one day's showtimes",
        "Catalog: full-text search, 500 movies",
        "Won holds via HTTP, beyond turns",
        "Best-available holds via HTTP",
        "Won holds on the engine, no HTTP, beyond turns",
        "Best-available holds on the engine",
        "WebSocket connect, no since",
        "WebSocket resume: replay of 50 missed events",
        "WebSocket resume: snapshot, beyond the 500-event window",
        "Won holds via HTTP on one Redis",
        "Won holds via HTTP on a 3-primary cluster, fast transport",
        "Won holds via HTTP on a 3-primary cluster, redis-py transport",
        "Server CPU per won hold and its cancel via HTTP",
    ):
        row = next(cells for key, cells in rows.items() if key.startswith(name))
        assert row[0] and not row[0].startswith("0 "), (name, text)
    for name, cells in rows.items():  # a row with a target says met or missed; others nothing
        if name == "Workload":
            continue
        assert cells[5] in ("", "met", "missed"), (name, text)
        assert bool(cells[4]) == bool(cells[5]), (name, text)
    # Every process's CPU was read, the generators' included: the design rows have figures.
    for name in ("Hold attempts", "Won holds"):
        allows = f"{name}: the ratio its CPU allows, as measured / at best"
        row = next(cells for key, cells in rows.items() if key.startswith(allows))
        assert re.fullmatch(r"\d+\.\d\d / \d+\.\d\d", row[3]), (name, text)
    assert rows["Release-day crowd: 300 users over 2 s, time to sell out"][0].endswith(
        "(100 of 100 seats)"
    ), text
    # The server's own timing of each step, from its /metrics before and after the crowd.
    assert "; in the server p50 <= " in rows["Release-day crowd, step: availability"][0], text
    loops = rows["Release-day crowd: how late the workers' event loops ran what was due"][0]
    assert loops.startswith("sampled every 0.25 s in each worker: p50 <= "), text
    assert rows["Release-day crowd: seats left unsold (tickets sold = seats)"][0] == "0", text
    expiries = [cells[0] for key, cells in rows.items() if key.startswith("Expiry")]
    assert len(expiries) == 2 and all(e.endswith(" seen, 0 missed") for e in expiries), text
    assert rows["Release-day crowd: users without an answer"][0] == "0", text
    won = next(cells for key, cells in rows.items() if key.startswith("Won holds"))
    assert won[4] == ">= 0.30 x HTTP, p99 <= 25 ms", text
    # Every serving process's CPU per won hold was read: the server's, Redis's, PostgreSQL's.
    cpu = next(cells for key, cells in rows.items() if key.startswith("Server CPU per won hold"))
    assert re.fullmatch(
        r"seatlock [\d,]+ \+ Redis [\d,]+ \+ PostgreSQL [\d,]+ = [\d,]+ us;"
        r" GET /health/live [\d,]+ us",
        cpu[0],
    ), text
    assert float(cpu[3]) > 0 and cpu[4] == "<= 2.00 x GET /health/live, per request", text
    assert "won holds: " in text and " attempts won" in text
    assert next(c for k, c in rows.items() if k.startswith("Catalog: movies"))[0].endswith(
        "(100% 304)"
    ), text
    memory = next(
        cells for key, cells in rows.items() if key.startswith("WebSocket: 20 watchers at 1 ")
    )
    assert " KB per watcher" in memory[0] and "RSS <= 20 KB per watcher" in memory[4], text
    targets = {"Transport gain, engine holds": ">= 1.05", "Transport gain, HTTP hold attempts": ""}
    for name, target in targets.items():  # fast / redis-py; the engine row judges the transport
        row = next(cells for key, cells in rows.items() if key.startswith(name))
        assert float(row[3]) > 0 and row[4].startswith(target), text
        assert bool(row[4]) == bool(target), text
    for name in ("WebSocket: 20 watchers at 10", "WebSocket: 20 watchers at 1 "):
        row = next(cells for key, cells in rows.items() if key.startswith(name))
        assert row[0].startswith("20 connected"), text
        assert row[1].endswith(" ms"), text  # the median change reached every watcher
    for name in ("Best-available holds via HTTP", "Best-available holds on the engine"):
        row = next(cells for key, cells in rows.items() if key.startswith(name))
        won, _, attempts = row[0].split("(")[1].removesuffix(" won)").partition(" of ")
        assert won == attempts and float(row[3]) > 0 and not row[4], text  # every attempt won
    sides = [cells for key, cells in rows.items() if key.startswith("Won holds via HTTP on ")]
    assert len(sides) == 3, text  # one Redis, the cluster on each transport
    for row in sides:
        won, _, attempts = row[0].split("(")[1].removesuffix(" won)").partition(" of ")
        assert won == attempts and float(row[3].split()[0]) > 0 and not row[4], text
    # Both servers' CPU was read: each side's own server tree, its Redis and PostgreSQL.
    cpu = next(
        c for k, c in rows.items() if k.startswith("Server CPU per won hold and its cancel via")
    )
    figure = r"[\d,]+ / [\d,]+ / [\d,]+"
    assert re.fullmatch(
        rf"seatlock {figure}; Redis {figure}; PostgreSQL {figure}; in all {figure}", cpu[0]
    ), text
    assert all(float(ratio) > 0 for ratio in cpu[3].split(" / ")), text
    for name in ("WebSocket connect, no since", "WebSocket resume: "):
        row = next(cells for key, cells in rows.items() if key.startswith(name))
        assert " ms, Redis " in row[0] and row[2].endswith(" ms"), text  # CPU per resume, p99
    assert (tmp_path / "results-holds.svg").read_text().startswith("<svg"), text
    assert "sold out (blue)" in (tmp_path / "results-crowd.svg").read_text(), text
    assert "(results-crowd.svg)" in out.read_text()
    assert out.read_text().startswith("# seatlock bench"), out.read_text()
    assert "- machine: " in out.read_text() and "- command: `seatlock bench --quick" in text
    assert re.search(r"^- servers: Redis \d+\.\d+\.\d+, PostgreSQL \d+\.\d+", text, re.M), text


KILLED_BENCH = """
import os, sys, time
from pathlib import Path
from loadtests.bench import Bench, Config
from seatlock.server.embedded import free_port
bench = Bench(Config(generators=1))
bench.redis_url, bench.database_url = sys.argv[1], sys.argv[2]
port = free_port()
server = bench.serve(Path(sys.argv[3]), port, 2, {})
with bench.generators() as pool:
    generator = pool.submit(os.getpid).result()
    print(server.pid, generator, bench.manager._process.pid, port, flush=True)
    time.sleep(120)
"""


def alive(pid: int) -> bool:
    """The process runs (a zombie nobody reaped yet has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc (Linux)")
def test_a_killed_bench_leaves_no_server_or_generator_behind(
    backend_urls: tuple[str, str], tmp_path: Path
) -> None:
    """The bench killed outright (no cleanup of its own runs): its server, with its workers,
    and its generator processes end with it instead of running on."""
    bench = subprocess.Popen(
        [sys.executable, "-c", KILLED_BENCH, *backend_urls, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert bench.stdout is not None
        server, generator, manager, port = map(int, bench.stdout.readline().split())
        with httpx.Client(timeout=2) as client:
            for _ in range(600):  # ready: its workers are up
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                        break
                time.sleep(0.1)
        workers = children_of().get(server, [])
        tree = [server, *workers, generator, manager]
        assert len(workers) >= 2 and all(alive(pid) for pid in tree)
    finally:
        bench.kill()
        bench.wait()
        if bench.stdout is not None:
            bench.stdout.close()
    for _ in range(200):
        if not any(alive(pid) for pid in tree):
            break
        time.sleep(0.1)
    left = [pid for pid in tree if alive(pid)]
    for pid in left:  # not to leave them running when this fails
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert left == []


async def test_books_count_a_lost_booking(backend_urls: tuple[str, str]) -> None:
    """The lost-bookings row is not vacuous: a 201 ticket PostgreSQL does not have is counted."""
    assert await books(backend_urls[1], []) == (0, 0)
    assert await books(backend_urls[1], [(987654321, 1, 1)]) == (0, 1)


def test_booking_rate_is_over_the_time_the_bookings_took() -> None:
    sample = Sample()
    sample.finished_at = [100.5, 104.0, 102.0]
    assert booking_time(sample, 100.0, 20.0) == 4.0  # all sold after 4 s: rate over 4 s
    sample.finished_at = [130.0]
    assert booking_time(sample, 100.0, 20.0) == 20.0  # still selling at the end
    assert booking_time(Sample(), 100.0, 20.0) == 20.0


class ScriptedBench(Bench):
    """A Bench whose HTTP workloads are made up: what interleaved() asks for, and when."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.asked: list[tuple[str, float]] = []
        self.clock = 1000.0
        self.cpu = {"seatlock": 0.0, "Redis": 0.0}  # what the serving processes used so far

    async def http_workload(self, kind: str, duration: float | None = None, **spec: Any) -> Sample:
        assert duration is not None
        name = kind if "hold" in kind else spec["path"].rsplit("/", 1)[-1]
        if spec.get("headers") == b"Accept-Encoding: gzip, br\r\n":
            name = "compressed"
        self.asked.append((name, duration))
        turn = sum(1 for n, _ in self.asked if n == name)
        sample = Sample()
        rates = {"live": 100, "hold": 30 + 10 * turn, "won-hold": 20, "availability": 60}
        ops = rates.get(name, 90)  # 90: the compressed availability reads
        for i in range(ops):
            sample.record(200, 0.0)
            sample.finished_at[-1] = self.clock + 5.0 + duration * i / ops
        self.clock += 100.0  # turns far apart in time, like minutes of other work between them
        self.cpu["seatlock"] += ops / 100
        self.cpu["Redis"] += 0.5 if "hold" in name else 0.0
        return sample

    def serving_cpu(self) -> dict[str, float]:
        return dict(self.cpu)


async def test_ceiling_holds_and_reads_take_turns() -> None:
    bench = ScriptedBench(Config(duration=3.0, turns=3, out="", connections=2, generators=2))
    seeded = Seeded([1, 2], [11, 12, 13, 14], 7, 8, [], 9, [], [21, 22], [])
    live, holds, won, reads, compressed = await bench.interleaved(seeded)
    order = [("live", 0.5), ("hold", 0.5), ("won-hold", 0.5), ("availability", 0.5)]
    order.append(("compressed", 0.5))  # the same reads, as a browser asks them
    assert bench.asked == order + [(name, 1.0) for name, _ in order] * 3  # warm-up: half a turn
    assert (live.ops, holds.ops, won.ops, reads.ops) == (300, 50 + 60 + 70, 60, 180)
    assert compressed.ops == 270
    # What the serving processes used during a workload's turns (not its warm-up) is its own.
    assert won.cpu_s == pytest.approx({"seatlock": 0.6, "Redis": 1.5})
    assert live.cpu_s == pytest.approx({"seatlock": 3.0, "Redis": 0.0})
    assert bench.report.notes == [
        "turn by turn, HTTP ceiling / hold attempts / won holds / availability reads"
        " / compressed availability reads per second (ratio): 100 / 50 (0.50) / 20 (0.20)"
        " / 60 (0.60) / 90 (0.90); 100 / 60 (0.60) / 20 (0.20) / 60 (0.60) / 90 (0.90);"
        " 100 / 70 (0.70) / 20 (0.20) / 60 (0.60) / 90 (0.90)"
    ]
    # The hold turns are put end to end for the plot: one timeline of 3 s, no gaps.
    assert min(holds.finished_at) == 0.0
    assert 2.9 < max(holds.finished_at) < 3.0
    starts = [t for t in holds.finished_at if t in (0.0, 1.0, 2.0)]
    assert starts == [0.0, 1.0, 2.0]


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="a Linux scheduling policy")
def test_generators_run_as_batch_jobs() -> None:
    """A generator process does not preempt the server under test at every answer."""
    code = (
        "import os; from loadtests.loadgen import yield_to_the_server;"
        " os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0)); yield_to_the_server();"
        " print(os.sched_getscheduler(0) == os.SCHED_BATCH)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.split() == ["True"]


def test_won_holds_never_ask_two_connections_for_one_seat() -> None:
    bench = Bench(Config(connections=3, generators=2))
    seeded = Seeded([1], [11, 12, 13, 14, 15, 16], 7, 8, [], 9, [], [21, 22], [])
    work = bench.won_hold_work(seeded)
    assert len(work) == 6  # one (screening, two seats) per connection of every generator
    assert work[:3] == [(21, [11, 12]), (22, [11, 12]), (21, [13, 14])]  # screenings in turn
    assert len({(sid, seat) for sid, seats in work for seat in seats}) == 12
    with pytest.raises(RuntimeError, match="more seats"):
        Bench(Config(connections=7, generators=1)).won_hold_work(seeded)
