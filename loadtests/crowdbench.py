"""The bench's release-day crowd: N users arrive at one screening while watchers follow it.

The users run in the load generator processes (loadtests/crowd.py), the watchers in others
(``Bench.watch_jobs``). The rows say how fast the screening sold out, how many users had a
definite answer (a seat or "sold out") within 1 and 5 seconds of arriving, each step's
latency and how late the watchers saw the changes; the checks say that exactly the room's seats
were sold (PostgreSQL counts them) and that every user had an answer.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from loadtests.benchreport import Row, check, crowd_svg, ms, pct
from loadtests.crowd import NONE, SEAT, SOLD_OUT
from loadtests.loadgen import Http, Job, Sample
from loadtests.procmem import tree_cpu_s

if TYPE_CHECKING:
    from loadtests.bench import Bench
    from loadtests.benchseed import Seeded

STEPS = ("availability", "hold", "book")


async def crowd_part(bench: Bench, s: Seeded) -> None:
    config = bench.config
    started = time.monotonic()
    tokens = await bench.login_all(s.crowd_user_ids)
    took = time.monotonic() - started
    bench.report.notes.append(f"crowd: {len(tokens):,} users signed in beforehand in {took:.0f} s")
    await bench.warm_screenings([(s.crowd_screening, s.crowd_seats[-1])])
    watch = bench.watch_jobs("watch", s.crowd_screening, config.crowd_watchers)
    ran: list[tuple[float, Sample]] = []
    histograms: list[Histograms] = []

    async def drive() -> None:
        start_at = time.time() + 0.5 + 0.1 * config.generator_count
        before = cpu_now(bench)
        histograms.append(await server_histograms(bench))
        ran.append((start_at, await bench.gather(crowd_jobs(bench, s, tokens, start_at))))
        bench.report.notes.append(cpu_note(before, cpu_now(bench)))
        await asyncio.sleep(FLUSH_WAIT_S)
        histograms.append(await server_histograms(bench))
        served.update(served_in(*histograms))

    served: dict[str, str] = {}
    watched, connected = await bench.while_watching(watch, drive)
    start_at, sample = ran[0]
    seats = len(s.crowd_seats)
    bench.report.tickets += sample.tickets
    bench.report.rows += crowd_rows(sample, start_at, seats, config.crowd_arrival_s, served)
    # Read once the watchers are done: the last events may go out after the last answer.
    lag = served_in(histograms[0], await server_histograms(bench)).get(WATCHERS)
    bench.report.rows.append(watcher_row(watched, connected, lag))
    unsold = seats - await sold_in_postgres(bench.database_url, s.crowd_screening)
    bench.report.checks += [
        check("Release-day crowd: seats left unsold (tickets sold = seats)", unsold),
        check("Release-day crowd: users without an answer", answered(sample)[NONE]),
    ]
    answers = [(done - start_at, kind) for _, done, kind in sample.answers if kind != NONE]
    sold = [(at - start_at, n) for at, n in sample.sold]
    title = f"Release-day crowd, {len(tokens):,} users, {seats} seats"
    bench.report.plots["crowd"] = crowd_svg(answers, sold, seats, title)


def cpu_now(bench: Bench) -> tuple[float, float, float]:
    """(wall clock, CPU seconds of the server's processes, of every process of the bench)."""
    server = bench.server_procs[0].pid
    return time.monotonic(), tree_cpu_s(server), tree_cpu_s(os.getpid())


def cpu_note(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    """Who used the machine while the crowd ran: on one box the users and watchers share the
    cores with the server they measure, and take a good part of them."""
    wall, server, everything = (b - a for a, b in zip(before, after, strict=True))
    cores = os.cpu_count() or 1
    return (
        f"crowd: CPU over its {wall:.0f} s ({wall * cores:.0f} core-seconds on {cores} cores):"
        f" seatlock {server:.0f} s, the bench's users, watchers, Redis and PostgreSQL"
        f" {everything - server:.0f} s"
    )


def crowd_jobs(bench: Bench, s: Seeded, tokens: list[str], start_at: float) -> list[Job]:
    """One job per generator process, the users dealt out in turn."""
    config = bench.config
    count = config.generator_count
    return [
        Job(
            "crowd",
            bench.host,
            bench.port,
            start_at,
            config.crowd_arrival_s,
            tokens=tokens[g::count],
            screening_id=s.crowd_screening,
        )
        for g in range(count)
    ]


def crowd_rows(
    sample: Sample, start_at: float, seats: int, arrival_s: float, served: dict[str, str]
) -> list[Row]:
    """``served``: per step, how long the server itself took (``served_in``)."""
    users = len(sample.answers)
    kinds = answered(sample)
    times = answer_times(sample)
    within = [sum(1 for t in times if t <= limit) / max(1, users) for limit in (1.0, 5.0)]
    rows = [
        Row(
            f"Release-day crowd: {users:,} users over {arrival_s:g} s, time to sell out",
            sell_out(sample, start_at, seats),
        ),
        Row(
            "Release-day crowd: definite answer (seat or sold out) within 1 s / 5 s",
            f"{within[0]:.1%} / {within[1]:.1%} ({kinds[SEAT]:,} seats, {kinds[SOLD_OUT]:,}"
            f" sold out, {kinds[NONE]:,} none)",
            ms(pct(times, 0.5) * 1000),
            ms(pct(times, 0.99) * 1000),
        ),
    ]
    for name in STEPS:
        latencies = sample.steps.get(name, [])
        value = f"{len(latencies):,} requests"
        if name == "hold":
            value += f", {kinds[SEAT]:,} won"
        if name in served:
            value += f"; in the server {served[name]}"
        rows.append(
            Row(
                f"Release-day crowd, step: {name}",
                value,
                ms(pct(latencies, 0.5)),
                ms(pct(latencies, 0.99)),
            )
        )
    if LOOP in served:  # the time every request waited for other work in its worker
        rows.append(
            Row(
                "Release-day crowd: how late the workers' event loops ran what was due",
                f"sampled every 0.25 s in each worker: {served[LOOP]}",
            )
        )
    return rows


# The steps as the server's request histogram names them: (route template, method).
STEP_ROUTES = {
    "availability": ("/api/v1/seat-reservations/screening/{screening_id}/availability", "GET"),
    "hold": ("/api/v1/seat-reservations/reserve", "POST"),
    "book": ("/api/v1/tickets/book-from-reservation", "POST"),
}
HISTOGRAM = "seatlock_http_request_duration_seconds"
# Each event's delay from its change to its write to a worker's watchers (seatlock/metrics.py),
# kept as if it were a step of its own; and how late the workers' event loops ran what was due.
EVENT_DELAY, WATCHERS = "seatlock_ws_event_delay_seconds", "watchers"
LOOP_LAG, LOOP = "seatlock_event_loop_lag_seconds", "event loop"
FLUSH_WAIT_S = 1.5  # workers add their request timings to /metrics every second
Histograms = dict[str, dict[float, float]]  # step -> bucket bound (s) -> answers at most that


async def server_histograms(bench: Bench) -> Histograms:
    """The server's request-duration histogram of each step, as /metrics shows it now: from
    the request to the end of its answer in the worker, without the client's own delays."""
    http = Http(bench.host, bench.port)
    try:
        status, raw = await http.call("GET", "/metrics")
    finally:
        await http.close()
    found: Histograms = {step: {} for step in (*STEP_ROUTES, WATCHERS, LOOP)}
    steps = {route: step for step, route in STEP_ROUTES.items()}
    whole = {EVENT_DELAY: WATCHERS, LOOP_LAG: LOOP}  # histograms taken as one step each
    for family in text_string_to_metric_families(raw.decode() if status == 200 else ""):
        if family.name not in (HISTOGRAM, *whole):
            continue
        for metric in family.samples:
            labels = metric.labels
            route = (labels.get("route", "").replace(":int", ""), labels.get("method", ""))
            step = steps.get(route) if family.name == HISTOGRAM else whole[family.name]
            if step is not None and metric.name.endswith("_bucket"):
                bound = float(labels["le"])
                found[step][bound] = found[step].get(bound, 0.0) + metric.value
    return found


def served_in(before: Histograms, after: Histograms) -> dict[str, str]:
    """Per step, the bucket bounds under which half and 99 % of the answers given between the
    two readings fell ("p50 <= 5 ms, p99 <= 25 ms")."""
    served = {}
    for step, buckets in after.items():
        counts = {bound: n - before.get(step, {}).get(bound, 0.0) for bound, n in buckets.items()}
        total = counts.get(float("inf"), 0.0)
        if total > 0:
            p50, p99 = (bucket_bound(counts, total * q) for q in (0.5, 0.99))
            served[step] = f"p50 <= {p50}, p99 <= {p99}"
    return served


def bucket_bound(counts: dict[float, float], at_least: float) -> str:
    bound = min(b for b, n in counts.items() if n >= at_least)
    return "+inf" if bound == float("inf") else ms(bound * 1000)


def answered(sample: Sample) -> dict[str, int]:
    counts = dict.fromkeys((SEAT, SOLD_OUT, NONE), 0)
    for _, _, kind in sample.answers:
        counts[kind] += 1
    return counts


def answer_times(sample: Sample) -> list[float]:
    """Seconds from each user's arrival to its definite answer; no answer: infinitely late."""
    return [
        done - arrived if kind != NONE else float("inf") for arrived, done, kind in sample.answers
    ]


def sell_out(sample: Sample, start_at: float, seats: int) -> str:
    """From the crowd's start to the booking that sold the last seat; or how far it got."""
    sold = sum(n for _, n in sample.sold)
    if sold < seats or not sample.sold:
        return f"not sold out: {sold} of {seats} seats"
    last = max(at for at, _ in sample.sold)
    return f"{last - start_at:.2f} s ({sold} of {seats} seats)"


def watcher_row(watched: Sample, connected: int, lag: str | None = None) -> Row:
    """How late the last watcher saw each change of the crowd's screening; a change that not
    every watcher saw within the grace period counts as infinitely late. ``lag``: how late
    the server wrote them (``served_in``'s WATCHERS), the rest being the watchers' own."""
    worst = [w if n >= connected else float("inf") for w, n in watched.events.values()]
    late = sum(1 for w in worst if w == float("inf"))
    value = f"{len(worst):,} changes, {late} not seen by all"
    if lag is not None:
        value += f"; written by the server {lag} after the change"
    return Row(
        f"Release-day crowd: {connected:,} watchers, last watcher",
        value,
        ms(pct(worst, 0.5)),
        ms(pct(worst, 0.99)),
    )


async def sold_in_postgres(database_url: str, screening_id: int) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        sold = await conn.fetchval(
            "SELECT count(*) FROM tickets WHERE screening_id = $1"
            " AND status IN ('pending', 'confirmed')",
            screening_id,
        )
    finally:
        await conn.close()
    return int(sold)
