"""The bench's part "beyond": best-available holds against plain ones, and what a resume costs.

Best available (``POST /seat-reservations/reserve-best`` of 2 seats, then the guide's DELETE
cancel of the seats it gave) takes turns with the won holds (``/reserve`` of 2 seats of the
connection's own, then cancel: the "http" part's job) on screenings of a room of this part's
own, the connections dealt out over them in turn, so every attempt wins and the ratio best /
plain is measured across the same seconds. The same pair runs on the engine alone
(``SeatEngine.hold_best`` against ``SeatEngine.hold``, no HTTP). No target: the issue asks for
the figures and the ratio.

Resumes go through real WebSockets against the bench's server, from a generator process: a
watcher reconnecting with ``?since=N`` after 50 changes (the events replayed from the log) and
after more than the log's window (one seat_snapshot), and, as their baseline, a plain connect.
Each is timed from the start of its connect to the last replayed event, the snapshot or the
connection_confirmed; the server's CPU per resume is read from /proc (the ``seatlock serve``
process and its workers) and Redis's from ``INFO cpu``, before and after each batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loadtests.benchreport import Row, ms, pct, quantiles, rate
from loadtests.benchseed import seed_room_of_a_part
from loadtests.loadgen import API, Http, Job, Resp, Sample, redis_address
from loadtests.procmem import tree_cpu_s
from seatlock import keys
from seatlock.settings import Settings

if TYPE_CHECKING:
    from loadtests.bench import Bench
    from loadtests.benchseed import Seeded

ROWS, PER_ROW = 12, 25  # the part's room: 300 seats
SCREENINGS = 8  # the holds' screenings; one more is the resumes' own, quiet but for its changes
MISSED = 50  # changes a replayed watcher missed
RESUME_CONNECTIONS = 4  # watchers resuming at a time
CHANGERS = 5  # connections making the changes, a seat and a user each (MISSED / 2 / CHANGERS)


@dataclass
class Room:
    screenings: list[int]
    seats: list[int]
    resume_screening: int


@dataclass
class Resumes:
    """A batch of resumes, and the CPU they cost the server and Redis (ms per resume)."""

    sample: Sample
    server_ms: float
    redis_ms: float


async def beyond_part(bench: Bench, s: Seeded) -> None:
    room = await seed_room_of_our_own(bench.database_url)
    screenings = [*room.screenings, room.resume_screening]
    await bench.warm_screenings([(sid, room.seats[-1]) for sid in screenings])
    mine = dataclasses.replace(s, spread_screenings=room.screenings, spread_seats=room.seats)
    work = bench.won_hold_work(mine)  # (screening, two seats) per connection, none shared
    await http_pair(bench, work)
    await engine_pair(bench, s, work)
    await resume_rows(bench, room)


async def seed_room_of_our_own(database_url: str) -> Room:
    """A room and screenings no other part touches: nothing sold in them, nobody else holding."""
    screenings, seats = await seed_room_of_a_part(
        database_url, "Beyond", "Beyond the Guide", ROWS, PER_ROW, SCREENINGS + 1
    )
    return Room(screenings[:-1], seats, screenings[-1])


async def http_pair(bench: Bench, work: list[tuple[int, list[int]]]) -> None:
    """Plain won holds and best-available holds via HTTP, in turns, half the duration in all."""
    seconds = bench.config.duration / 2
    plain, best = await bench.rotation(
        "beyond: turn by turn, won holds / best-available holds",
        [("won-hold", {"work": work}), ("best-hold", {"work": work})],
        seconds,
    )
    bench.report.rows += pair_rows("via HTTP", plain, best, seconds, "cancel")
    cancels = best.steps.get("cancel", [])
    bench.report.notes.append(
        f"best-available holds via HTTP: their cancels p50 {ms(pct(cancels, 0.5))},"
        f" p99 {ms(pct(cancels, 0.99))}"
    )


async def engine_pair(bench: Bench, s: Seeded, work: list[tuple[int, list[int]]]) -> None:
    """The same pair on ``SeatEngine`` in the generator processes, a quarter of the duration."""
    seconds = bench.config.duration / 4
    spec = {"work": work, "redis_url": bench.redis_url, "user_ids": list(s.user_ids)}
    plain, best = await bench.rotation(
        "beyond: turn by turn, engine holds / engine best-available holds",
        [("engine-won-hold", spec), ("engine-best-hold", spec)],
        seconds,
    )
    bench.report.rows += pair_rows("on the engine, no HTTP", plain, best, seconds, "release")


def pair_rows(where: str, plain: Sample, best: Sample, seconds: float, undo: str) -> list[Row]:
    """The plain holds (the base) and the best-available ones with their ratio to it; no
    target: the figures and the ratio are reported, not judged."""
    base, per_s = rate(plain, seconds), rate(best, seconds)
    ratio = f"{per_s / base:.2f}" if base > 0 else "n/a"
    return [
        Row(
            f"Won holds {where}, beyond turns: 2 own seats + {undo} (the ratio's base)",
            f"{base:,.0f} holds/s ({won(plain)})",
            *quantiles(plain),
            "1.00 (base)",
        ),
        Row(
            f"Best-available holds {where}: 2 seats + {undo}, ratio to won holds",
            f"{per_s:,.0f} holds/s ({won(best)})",
            *quantiles(best),
            ratio,
        ),
    ]


def won(sample: Sample) -> str:
    return f"{sample.won:,} of {sample.ops:,} won"


async def resume_rows(bench: Bench, room: Room) -> None:
    """A plain connect, a replay of MISSED events and a snapshot, an eighth of the duration
    each, on the resumes' own screening (nothing changes it while the watchers resume)."""
    sid, seconds = room.resume_screening, bench.config.duration / 8
    redis = Resp(*redis_address(bench.redis_url))
    await redis.connect()
    try:
        plain = await resume_batch(bench, redis, sid, None, 0, seconds)
        since = await map_version(redis, sid)
        await change(bench, sid, room.seats, MISSED)
        until = await map_version(redis, sid)
        replay = await resume_batch(bench, redis, sid, since, until, seconds)
        missed, window = until - since, event_window()
        since = await map_version(redis, sid)
        await beyond_the_log(bench, redis, sid, room.seats, since, window)
        snapshot = await resume_batch(bench, redis, sid, since, 0, seconds)
    finally:
        await redis.close()
    bench.report.rows += [
        resume_row("WebSocket connect, no since (the resumes' baseline)", plain, seconds),
        resume_row(f"WebSocket resume: replay of {missed} missed events", replay, seconds),
        resume_row(
            f"WebSocket resume: snapshot, beyond the {window}-event window", snapshot, seconds
        ),
    ]
    bench.report.notes.append(
        f"resumes: {RESUME_CONNECTIONS} watchers at a time, each timed from its connect to the"
        " last replayed event / the snapshot / connection_confirmed; CPU per resume from /proc"
        " (server) and INFO cpu (Redis) over each batch, idle work included"
    )


def resume_row(name: str, batch: Resumes, seconds: float) -> Row:
    sample = batch.sample
    value = (
        f"{sample.ops:,} in {seconds:.3g} s; CPU per resume: server {batch.server_ms:.2f} ms,"
        f" Redis {batch.redis_ms:.2f} ms"
    )
    return Row(name, value, *quantiles(sample))


async def resume_batch(
    bench: Bench, redis: Resp, sid: int, since: int | None, until: int, seconds: float
) -> Resumes:
    """Watchers resuming from ``since`` for ``seconds``, and the CPU it cost from start to end."""
    start_at = bench.config.start_at()
    connections = min(RESUME_CONNECTIONS, bench.config.connections)
    job = Job(
        "resume",
        bench.host,
        bench.port,
        start_at,
        seconds,
        connections=connections,
        screening_id=sid,
        since=since,
        until=until,
    )
    running = asyncio.ensure_future(bench.gather([job]))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    server, redis_s = tree_cpu_s(bench.server_procs[0].pid), await redis_cpu_s(redis)
    sample = await running
    server = tree_cpu_s(bench.server_procs[0].pid) - server
    redis_s = await redis_cpu_s(redis) - redis_s
    per = 1000 / max(1, sample.ops)
    return Resumes(sample, server * per, redis_s * per)


async def map_version(redis: Resp, sid: int) -> int:
    """The screening's version as the scripts keep it (not a cached availability answer)."""
    return int(await redis.call("GET", keys.screening_version(sid)) or 0)


async def beyond_the_log(
    bench: Bench, redis: Resp, sid: int, seats: list[int], since: int, window: int
) -> None:
    """Changes until the log no longer holds every event after ``since`` (lua/resume.lua's test):
    the stream is trimmed with MAXLEN ~, so it may keep a little more than ``window``."""
    await change(bench, sid, seats, window + 10)
    log = keys.screening_log(sid)
    while await map_version(redis, sid) - since <= int(await redis.call("XLEN", log)):
        await change(bench, sid, seats, MISSED)


def event_window() -> int:
    """The events the server keeps per screening (its Settings.event_log_length)."""
    return int(os.environ.get("SEATLOCK_EVENT_LOG_LENGTH") or Settings().event_log_length)


async def change(bench: Bench, sid: int, seats: list[int], count: int) -> None:
    """At least ``count`` changes of the screening: CHANGERS users each hold and cancel a seat
    of their own, in pairs (every seat ends free again)."""
    pairs = math.ceil(count / 2 / CHANGERS)
    tokens = bench.tokens[-2 - CHANGERS : -2]  # the last two: warm_screenings, change_seats
    await asyncio.gather(*(toggle(bench, sid, seats[i], tokens[i], pairs) for i in range(CHANGERS)))


async def toggle(bench: Bench, sid: int, seat: int, token: str, pairs: int) -> None:
    http = Http(bench.host, bench.port)
    body = {"screening_id": sid, "seat_ids": [seat]}
    try:
        for _ in range(pairs):
            status, raw = await http.call("POST", f"{API}/seat-reservations/reserve", body, token)
            if status != 201:
                raise RuntimeError(f"a change of the resume screening failed: {status} {raw!r}")
            path = f"{API}/seat-reservations/cancel/{sid}?seat_ids={seat}"
            await http.call("DELETE", path, None, token)
    finally:
        await http.close()


async def redis_cpu_s(redis: Resp) -> float:
    """Redis's own CPU seconds so far, user and system (``INFO cpu``)."""
    info = (await redis.call("INFO", "cpu")).decode()
    figures = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return float(figures["used_cpu_sys"]) + float(figures["used_cpu_user"])
