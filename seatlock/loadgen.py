"""The load generator processes of ``seatlock bench``: raw clients and the workload loops.

HTTP/1.1 keep-alive over asyncio streams and a raw RESP client, because httpx and redis-py cost
more CPU per request than the server does and would measure themselves. Each generator process
runs one ``Job`` (``generator_main``) and returns a ``Sample``; every process starts and stops at
the same wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

API = "/api/v1"

# --- A raw HTTP/1.1 keep-alive client -----------------------------------------------------------


class Http:
    """One keep-alive connection; enough HTTP/1.1 for JSON APIs (Content-Length or chunked)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def call(
        self, method: str, path: str, body: Any = None, token: str = ""
    ) -> tuple[int, bytes]:
        """Send one request and read its response; reconnects once if the server hung up.

        The retry may repeat a request the server already handled; every bench request is safe
        to repeat (GETs, re-holding one's own seats, cancels, bookings keyed by payment_id).
        """
        request = self._encode(method, path, body, token)
        for attempt in (1, 2):
            try:
                return await self._exchange(request)
            except (OSError, asyncio.IncompleteReadError):
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _encode(self, method: str, path: str, body: Any, token: str) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        payload = b"" if body is None else orjson.dumps(body)
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status, length, chunked = _parse_head(head)
        if chunked:
            return status, await self._read_chunked()
        return status, await self._reader.readexactly(length)

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readline()).split(b";")[0], 16)
            data = await self._reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(data[:-2])


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    lines = head.split(b"\r\n")
    status, length, chunked = int(lines[0][9:12]), 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return status, length, chunked


# --- A raw RESP client for the Redis ceiling -----------------------------------------------------


class RespError(Exception):
    pass


class Resp:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def call(self, *parts: str | int | bytes) -> Any:
        assert self._writer is not None
        out = [b"*%d\r\n" % len(parts)]
        for part in parts:
            raw = part if isinstance(part, bytes) else str(part).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        self._writer.write(b"".join(out))
        return await self._read()

    async def _read(self) -> Any:
        assert self._reader is not None
        line = await self._reader.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else (await self._reader.readexactly(size + 2))[:-2]
        if kind == b"*":
            return [await self._read() for _ in range(max(0, int(rest)))]
        raise RespError(f"unexpected reply {line!r}")


def redis_address(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379


# --- What a generator process is asked to do, and what it reports -------------------------------


@dataclass
class Job:
    kind: str
    host: str
    port: int
    start_at: float  # wall clock; every generator starts and stops together
    duration: float
    connections: int = 1
    tokens: list[str] = field(default_factory=list)
    screening_id: int = 0
    seat_ids: list[int] = field(default_factory=list)
    path: str = ""
    work: list[tuple[int, list[int]]] = field(default_factory=list)  # bookings: (screening, seats)
    redis_url: str = ""
    user_ids: list[int] = field(default_factory=list)
    watchers: int = 0
    control: Any = None  # (ready queue, stop event) proxies for the watcher jobs


@dataclass
class Sample:
    ops: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    finished_at: list[float] = field(default_factory=list)  # wall clock, one per latency
    statuses: dict[int, int] = field(default_factory=dict)
    tickets: list[tuple[int, int, int]] = field(default_factory=list)  # (ticket, screening, seat)
    won: int = 0
    events: dict[str, tuple[float, int]] = field(default_factory=dict)  # key -> (worst ms, count)
    freed_at: dict[int, float] = field(default_factory=dict)  # seat -> last watcher saw it free
    connected: int = 0
    dropped: int = 0  # requests whose connection failed instead of answering
    errors: list[str] = field(default_factory=list)

    def merge(self, other: Sample) -> None:
        self.ops += other.ops
        self.latencies_ms += other.latencies_ms
        self.finished_at += other.finished_at
        for code, n in other.statuses.items():
            self.statuses[code] = self.statuses.get(code, 0) + n
        self.tickets += other.tickets
        self.won += other.won
        for key, (worst, count) in other.events.items():
            mine = self.events.get(key, (float("-inf"), 0))
            self.events[key] = (max(mine[0], worst), mine[1] + count)
        for seat, at in other.freed_at.items():
            self.freed_at[seat] = max(self.freed_at.get(seat, 0.0), at)
        self.connected += other.connected
        self.dropped += other.dropped
        self.errors += other.errors[:5]

    def record(self, status: int, started: float) -> None:
        self.ops += 1
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.finished_at.append(time.time())
        self.statuses[status] = self.statuses.get(status, 0) + 1


def generator_main(job: Job) -> Sample:
    """Entry point of a generator process."""
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(run_job(job))
    return asyncio.run(run_job(job))


async def run_job(job: Job) -> Sample:
    if job.kind in ("watch", "watch-expiry"):
        return await watch(job)
    if job.kind == "engine-hold":
        return await engine_holds(job)
    loop = LOOPS[job.kind]
    sample = Sample()
    clients = [make_client(job) for _ in range(job.connections)]
    await asyncio.gather(*(c.connect() for c in clients if isinstance(c, Resp)))
    await asyncio.sleep(max(0.0, job.start_at - time.time()))
    deadline = time.perf_counter() + job.duration
    try:
        await asyncio.gather(*(loop(job, c, i, deadline, sample) for i, c in enumerate(clients)))
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    return sample


def make_client(job: Job) -> Http | Resp:
    if job.kind == "redis-hold":
        return Resp(*redis_address(job.redis_url))
    return Http(job.host, job.port)


Loop = Callable[[Job, Any, int, float, Sample], Awaitable[None]]


async def timed(
    http: Http, sample: Sample, method: str, path: str, body: Any = None, token: str = ""
) -> tuple[int, bytes]:
    """One request, recorded in ``sample``; a connection that fails instead of answering counts
    as dropped (status 0)."""
    started = time.perf_counter()
    status, raw = await untimed(http, sample, method, path, body, token)
    sample.record(status, started)
    return status, raw


async def untimed(
    http: Http, sample: Sample, method: str, path: str, body: Any = None, token: str = ""
) -> tuple[int, bytes]:
    try:
        return await http.call(method, path, body, token)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        sample.dropped += 1
        if len(sample.errors) < 5:
            sample.errors.append(f"{method} {path}: {exc!r}")
        return 0, b""


async def get_loop(job: Job, http: Http, index: int, deadline: float, sample: Sample) -> None:
    while time.perf_counter() < deadline:
        await timed(http, sample, "GET", job.path)


def pick_seats(seat_ids: list[int]) -> list[int]:
    """1-6 neighbouring seats around the middle of the room: everybody wants the same ones."""
    count = random.randint(1, 6)
    middle = len(seat_ids) // 2 + int(random.gauss(0, len(seat_ids) / 20))
    first = min(max(0, middle), len(seat_ids) - count)
    return seat_ids[first : first + count]


async def hold_loop(job: Job, http: Http, index: int, deadline: float, sample: Sample) -> None:
    token = job.tokens[index % len(job.tokens)]
    while time.perf_counter() < deadline:
        seats = pick_seats(job.seat_ids)
        body = {"screening_id": job.screening_id, "seat_ids": seats}
        status, _ = await timed(
            http, sample, "POST", f"{API}/seat-reservations/reserve", body, token
        )
        if status == 201:
            sample.won += 1
            ids = ",".join(map(str, seats))
            path = f"{API}/seat-reservations/cancel/{job.screening_id}?seat_ids={ids}"
            await untimed(http, sample, "DELETE", path, None, token)


async def book_loop(job: Job, http: Http, index: int, deadline: float, sample: Sample) -> None:
    token = job.tokens[index % len(job.tokens)]
    for n, (screening_id, seats) in enumerate(job.work[index :: job.connections]):
        if time.perf_counter() >= deadline:
            return
        payment = f"bench-{os.getpid()}-{index}-{n}-{random.getrandbits(32)}"
        body = {"screening_id": screening_id, "seat_ids": seats, "payment_id": payment}
        status, raw = await timed(http, sample, "POST", f"{API}/tickets/book", body, token)
        if status == 201:
            tickets = orjson.loads(raw)
            sample.won += len(tickets)
            sample.tickets += [(t["id"], t["screening_id"], t["seat_id"]) for t in tickets]
        elif len(sample.errors) < 5:
            sample.errors.append(f"book {status}: {raw[:200]!r}")


async def redis_hold_loop(
    job: Job, redis: Resp, index: int, deadline: float, sample: Sample
) -> None:
    """The engine's own hold script, called straight on Redis (then released, like over HTTP)."""
    from seatlock import scripts
    from seatlock.engine import _screening_keys  # the exact KEYS the engine sends

    hold, release = scripts.source("hold"), scripts.source("release")
    sha_hold = await redis.call("SCRIPT", "LOAD", hold)
    sha_release = await redis.call("SCRIPT", "LOAD", release)
    user = job.user_ids[index % len(job.user_ids)]
    sid = job.screening_id
    while time.perf_counter() < deadline:
        seats = pick_seats(job.seat_ids)
        keys = _screening_keys(sid, seats)
        now = int(time.time() * 1000)
        args = (sid, now, user, 60_000, 10, *seats)
        started = time.perf_counter()
        reply = await redis.call("EVALSHA", sha_hold, len(keys), *keys, *args)
        sample.record(int(reply[0]), started)
        if reply[0] == 0:
            sample.won += 1
            await redis.call("EVALSHA", sha_release, len(keys), *keys, sid, now, user, *seats)


async def engine_holds(job: Job) -> Sample:
    """``SeatEngine.hold`` in process, ``job.connections`` at a time: the engine without HTTP."""
    from redis.asyncio import Redis

    from seatlock.engine import SeatEngine

    async def no_source(screening_id: int) -> None:
        raise RuntimeError("the bench loads every screening before the engine workload")

    redis = Redis.from_url(job.redis_url, max_connections=job.connections)
    engine = SeatEngine(
        redis, no_source, hold_ms=60_000, max_hold_ms=600_000, max_seats_per_user=10
    )
    sample = Sample()
    await asyncio.sleep(max(0.0, job.start_at - time.time()))
    deadline = time.perf_counter() + job.duration
    try:
        tasks = (engine_hold_loop(job, engine, i, deadline, sample) for i in range(job.connections))
        await asyncio.gather(*tasks)
    finally:
        await redis.aclose()
    return sample


async def engine_hold_loop(
    job: Job, engine: Any, index: int, deadline: float, sample: Sample
) -> None:
    from seatlock.engine import SeatsUnavailable, TooManySeats

    user, sid = job.user_ids[index % len(job.user_ids)], job.screening_id
    while time.perf_counter() < deadline:
        seats = pick_seats(job.seat_ids)
        started = time.perf_counter()
        try:
            await engine.hold(sid, user, seats)
        except (SeatsUnavailable, TooManySeats):
            sample.record(409, started)
            continue
        sample.record(201, started)
        sample.won += 1
        await engine.release(sid, user, seats)


LOOPS: dict[str, Loop] = {
    "get": get_loop,
    "hold": hold_loop,
    "book": book_loop,
    "redis-hold": redis_hold_loop,
}


# --- Watchers ------------------------------------------------------------------------------------


async def watch(job: Job) -> Sample:
    """Connect ``job.watchers`` WebSockets, say so, and record every update until told to stop."""
    from websockets.asyncio.client import connect

    ready, stop = job.control
    sample = Sample()
    url = f"ws://{job.host}:{job.port}/ws/screenings/{job.screening_id}"
    gate = asyncio.Semaphore(100)
    settled = asyncio.Event()
    pending = [job.watchers]

    def settle() -> None:
        pending[0] -= 1
        if pending[0] == 0:
            settled.set()

    async def one() -> None:
        try:
            async with gate:
                ws = await connect(url, open_timeout=120, ping_interval=None, max_size=2**22)
                first = _as_bytes(await ws.recv())
        except BaseException:
            settle()
            raise
        try:
            if b"connection_confirmed" not in first:
                raise RuntimeError(f"expected connection_confirmed, got {first[:100]!r}")
            sample.connected += 1
            settle()
            async for raw in ws:
                note_update(job, sample, _as_bytes(raw), time.time())
        finally:
            await ws.close()

    tasks = [asyncio.create_task(one()) for _ in range(job.watchers)]
    await settled.wait()
    ready.put(sample.connected)
    await asyncio.to_thread(stop.wait)
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    sample.errors += [repr(r) for r in results if isinstance(r, Exception)][:3]
    return sample


def _as_bytes(raw: str | bytes) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw


def note_update(job: Job, sample: Sample, raw: bytes, received: float) -> None:
    message = orjson.loads(raw)
    kind = message.get("type")
    if kind not in ("seat_update", "bulk_seat_update"):
        return
    updates = [message] if kind == "seat_update" else message.get("updates", [])
    if job.kind == "watch-expiry":
        for update in updates:
            if update["status"] == "available":
                sample.freed_at[update["seat_id"]] = received
        return
    stamp = message["timestamp"]
    delay = (received - parse_time(stamp)) * 1000
    key = stamp + "".join(f":{u['seat_id']}{u['status']}" for u in updates)
    worst, count = sample.events.get(key, (float("-inf"), 0))
    sample.events[key] = (max(worst, delay), count + 1)


def parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
