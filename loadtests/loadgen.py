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
import functools
import os
import random
import signal
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from loadtests import wsclient
from seatlock.process import settle_garbage_collector
from seatlock.server.embedded import die_with_parent

API = "/api/v1"
BEST_SEATS = 2  # seats per best-available hold (best-hold, engine-best-hold)
RESUME_TIMEOUT_S = 10.0  # a resume not caught up by then counts as dropped

# --- A raw HTTP/1.1 keep-alive client -----------------------------------------------------------


class Http:
    """One keep-alive connection; enough HTTP/1.1 for JSON APIs (Content-Length or chunked).

    A protocol rather than asyncio streams: a response that arrives in one read is parsed and
    handed over in one callback, and a caller can send bytes it encoded once (``send``).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._conn: _Connection | None = None

    async def connect(self) -> None:
        """Open the connection now, so a timed run does not measure TCP set-up."""
        if self._conn is None:
            self._conn = await _Connection.open(self.host, self.port)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def call(
        self, method: str, path: str, body: Any = None, token: str = ""
    ) -> tuple[int, bytes]:
        """Send one request and read its response; reconnects once if the server hung up."""
        return await self.send(self.encode(method, path, body, token))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one encoded request and read its response; reconnects once if the server hung up.

        The retry may repeat a request the server already handled; every bench request is safe
        to repeat (GETs, re-holding one's own seats, cancels, bookings keyed by payment_id).
        """
        for attempt in (1, 2):
            try:
                await self.connect()
                assert self._conn is not None
                return await self._conn.exchange(request)
            except (OSError, asyncio.IncompleteReadError):
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def head(self, method: str, path: str, token: str = "") -> bytes:
        """The request line and headers, without the blank line that ends them."""
        return f"{method} {path} HTTP/1.1\r\n".encode() + self.headers(token)

    def headers(self, token: str = "") -> bytes:
        """The Host and Authorization header lines: a loop encodes them once."""
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        return f"Host: {self.host}:{self.port}\r\n{auth}".encode()

    def encode(self, method: str, path: str, body: Any = None, token: str = "") -> bytes:
        head = self.head(method, path, token)
        if body is None and method not in ("POST", "PUT", "PATCH"):
            return head + b"\r\n"
        return head + json_tail(b"" if body is None else orjson.dumps(body))


def json_tail(payload: bytes) -> bytes:
    """The JSON headers, the blank line and the body: what follows ``Http.head`` of a POST."""
    return b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(payload),
        payload,
    )


class _Connection(asyncio.Protocol):
    """One TCP connection: one request in flight, its response parsed as the bytes arrive."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host, port)
        return conn

    def exchange(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        if self._transport is None or self._closed.done():
            raise ConnectionResetError("the server closed the connection")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return self._waiter

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        await asyncio.shield(self._closed)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            response = parse_response(self._buffer)
        except ValueError as exc:  # not HTTP: nothing after it on this connection can be trusted
            waiter.set_exception(exc)
            if self._transport is not None:
                self._transport.close()
            return
        if response is not None:
            status, body, used = response
            self._buffer = self._buffer[used:]
            waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            error = exc if isinstance(exc, OSError) else None
            waiter.set_exception(error or asyncio.IncompleteReadError(self._buffer, None))
        if not self._closed.done():
            self._closed.set_result(None)


def parse_response(data: bytes) -> tuple[int, bytes, int] | None:
    """(status, body, bytes used) of the response at the start of ``data``; None if incomplete."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    status, length, chunked = parse_head(data[:end])
    if chunked:
        body = dechunk(data, end + 4)
        return None if body is None else (status, *body)
    used = end + 4 + length
    return None if len(data) < used else (status, data[end + 4 : used], used)


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status, Content-Length and whether the body is chunked, from a response head."""
    head = head.lower()
    status = int(head[9:12])
    at = head.find(b"\r\ncontent-length:")
    length = int(head[at + 17 : _line_end(head, at + 17)]) if at >= 0 else 0
    at = head.find(b"\r\ntransfer-encoding:")
    chunked = at >= 0 and b"chunked" in head[at + 20 : _line_end(head, at + 20)]
    return status, length, chunked


def _line_end(head: bytes, start: int) -> int:
    end = head.find(b"\r\n", start)
    return len(head) if end < 0 else end


def dechunk(data: bytes, at: int) -> tuple[bytes, int] | None:
    """(body, end offset) of the chunked body starting at ``at``; None if incomplete."""
    parts: list[bytes] = []
    while True:
        eol = data.find(b"\r\n", at)
        if eol < 0:
            return None
        size = int(data[at:eol].split(b";")[0], 16)
        at = eol + 2 + size + 2
        if len(data) < at:
            return None
        if size == 0:
            return b"".join(parts), at
        parts.append(data[eol + 2 : at - 2])


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
    paths: list[str] = field(default_factory=list)  # browse: requested in turn
    conditional: bool = False  # browse: with the If-None-Match a browser would send
    headers: bytes = b""  # get: header lines added to every request ("Name: value\r\n" each)
    work: list[tuple[int, list[int]]] = field(default_factory=list)  # bookings: (screening, seats)
    redis_url: str = ""
    transport: str = "fast"  # engine-hold: the engine's Redis transport (Settings.redis_transport)
    user_ids: list[int] = field(default_factory=list)
    watchers: int = 0
    control: Any = None  # (ready queue, stop event) proxies for the watcher jobs
    # resume: the version a reconnecting watcher last saw (None: a plain connect), and the
    # version its replay ends at (0: a seat_snapshot is expected instead).
    since: int | None = None
    until: int = 0


GENERATORS = "generators"  # Sample.cpu_s: the load generators' own CPU


@dataclass
class Sample:
    ops: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    finished_at: list[float] = field(default_factory=list)  # wall clock, one per latency
    statuses: dict[int, int] = field(default_factory=dict)
    tickets: list[tuple[int, int, int]] = field(default_factory=list)  # (ticket, screening, seat)
    won: int = 0
    # a change (the bytes of its message) -> (worst ms, count)
    events: dict[bytes, tuple[float, int]] = field(default_factory=dict)
    freed_at: dict[int, float] = field(default_factory=dict)  # seat -> last watcher saw it free
    connected: int = 0
    dropped: int = 0  # requests whose connection failed instead of answering
    errors: list[str] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)  # step name -> latencies (ms)
    answers: list[tuple[float, float, str]] = field(default_factory=list)  # crowd: see crowd.py
    sold: list[tuple[float, int]] = field(default_factory=list)  # (wall clock, tickets booked)
    # CPU seconds used meanwhile, by who: the serving processes ("seatlock", "Redis", ...), read
    # by the bench from /proc around a workload (Bench.measured), and the generators' own
    # (GENERATORS: each process's while its connections made requests, summed by merge)
    cpu_s: dict[str, float] = field(default_factory=dict)

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
        for name, latencies in other.steps.items():
            self.steps.setdefault(name, []).extend(latencies)
        self.answers += other.answers
        self.sold += other.sold
        for who, seconds in other.cpu_s.items():
            self.cpu_s[who] = self.cpu_s.get(who, 0.0) + seconds

    def record(self, status: int, started: float) -> None:
        self.ops += 1
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.finished_at.append(time.time())
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def step(self, name: str, started: float) -> None:
        """The latency of one step of a flow (e.g. a cancel), apart from the timed requests."""
        self.steps.setdefault(name, []).append((time.perf_counter() - started) * 1000)


def generator_main(job: Job) -> Sample:
    """Entry point of a generator process."""
    settle_garbage_collector()  # a collection pause here would show as server latency
    yield_to_the_server()
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(run_job(job))
    return asyncio.run(run_job(job))


def end_with_the_bench() -> None:
    """A generator process's initializer (and the bench's manager's): it gets SIGTERM when the
    bench process ends, however that ends, so no generator outlives a bench that was killed."""
    die_with_parent(signal.SIGTERM)()


def yield_to_the_server() -> None:
    """Run this process as a batch job (Linux SCHED_BATCH): a generator sharing the cores with
    the server then waits for its turn instead of preempting the server at every answer it
    receives. With the default policy each answer woke the generator at once, the server lost the
    core mid-burst, and the two switched back and forth: on a 2-core machine that cost the hold
    workload ~7 us of generator CPU per attempt (22 against 15) and the ceiling ~3 (14 against
    11). Every workload, ceilings included, is measured this way."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


async def run_job(job: Job) -> Sample:
    if job.kind in ("watch", "watch-expiry"):
        return await watch(job)
    if job.kind == "crowd":
        from loadtests.crowd import crowd

        return await crowd(job)
    if job.kind in ENGINE_LOOPS:
        return await engine_holds(job)
    if job.kind == "resume":
        return await resumes(job)
    loop = LOOPS[job.kind]
    sample = Sample()
    clients = [make_client(job) for _ in range(job.connections)]
    # Connected before the clock starts: the run measures requests, not TCP set-up (the first
    # slice of a run otherwise shows every connection's handshake in its p99).
    await asyncio.gather(*(c.connect() for c in clients))
    await asyncio.sleep(max(0.0, job.start_at - time.time()))
    deadline = time.perf_counter() + job.duration
    cpu = time.process_time()
    try:
        await asyncio.gather(*(loop(job, c, i, deadline, sample) for i, c in enumerate(clients)))
    finally:
        sample.cpu_s[GENERATORS] = time.process_time() - cpu
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
    return await timed_send(http, sample, http.encode(method, path, body, token))


async def timed_send(http: Http, sample: Sample, request: bytes) -> tuple[int, bytes]:
    """``timed`` for a request encoded by the caller."""
    started = time.perf_counter()
    status, raw = await untimed_send(http, sample, request)
    sample.record(status, started)
    return status, raw


async def untimed_send(http: Http, sample: Sample, request: bytes) -> tuple[int, bytes]:
    try:
        return await http.send(request)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        sample.dropped += 1
        if len(sample.errors) < 5:
            line = request[: request.find(b"\r\n")].decode(errors="replace")
            sample.errors.append(f"{line}: {exc!r}")
        return 0, b""


async def get_loop(job: Job, http: Http, index: int, deadline: float, sample: Sample) -> None:
    request = http.head("GET", job.path) + job.headers + b"\r\n"
    while time.perf_counter() < deadline:
        await timed_send(http, sample, request)


def pick_seats(seat_ids: list[int]) -> list[int]:
    """1-6 neighbouring seats around the middle of the room: everybody wants the same ones."""
    first, count = pick_range(len(seat_ids))
    return seat_ids[first : first + count]


def pick_range(seats: int) -> tuple[int, int]:
    """(first index, count) of ``pick_seats`` in a room of ``seats`` seats."""
    count = 1 + int(random.random() * 6)  # randint(1, 6), at a fifth of its cost
    middle = seats // 2 + int(random.gauss(0, seats / 20))
    return min(max(0, middle), seats - count), count


@functools.cache
def seat_choices(screening_id: int, seat_ids: tuple[int, ...]) -> SeatChoices:
    """The one ``SeatChoices`` of a screening in this process."""
    return SeatChoices(screening_id, seat_ids)


class SeatChoices:
    """The seat-dependent bytes of a hold and its cancel, encoded once per choice of seats and
    shared by every connection of the process (the hot choices are a few hundred)."""

    def __init__(self, screening_id: int, seat_ids: tuple[int, ...]) -> None:
        self.screening_id, self.seat_ids = screening_id, seat_ids
        self._parts: dict[tuple[int, int], tuple[bytes, bytes]] = {}

    def pick(self) -> tuple[bytes, bytes]:
        """A ``pick_seats`` choice: (JSON tail of its reserve, its cancel's seat_ids query)."""
        choice = pick_range(len(self.seat_ids))
        parts = self._parts.get(choice)
        if parts is None:
            parts = self._parts[choice] = self._encode(*choice)
        return parts

    def _encode(self, first: int, count: int) -> tuple[bytes, bytes]:
        seats = list(self.seat_ids[first : first + count])
        body = orjson.dumps({"screening_id": self.screening_id, "seat_ids": seats})
        return json_tail(body), ",".join(map(str, seats)).encode()


async def hold_loop(job: Job, http: Http, index: int, deadline: float, sample: Sample) -> None:
    """Hold 1-6 seats around the middle; cancel each hold won."""
    token = job.tokens[index % len(job.tokens)]
    choices = seat_choices(job.screening_id, tuple(job.seat_ids))
    headers = http.headers(token)
    reserve = f"POST {API}/seat-reservations/reserve HTTP/1.1\r\n".encode() + headers
    cancel = f"DELETE {API}/seat-reservations/cancel/{job.screening_id}?seat_ids=".encode()
    cancel_end = b" HTTP/1.1\r\n" + headers + b"\r\n"
    while time.perf_counter() < deadline:
        body, seats = choices.pick()
        status, _ = await timed_send(http, sample, reserve + body)
        if status == 201:
            sample.won += 1
            await untimed_send(http, sample, cancel + seats + cancel_end)


async def won_hold_loop(job: Job, http: Http, index: int, deadline: float, sample: Sample) -> None:
    """Hold the two seats of this connection's own (``job.work[index]``), then cancel them with
    the guide's DELETE form: nobody else asks for those seats, so every attempt should win.
    The holds are timed; the cancels are the step "cancel"."""
    token = job.tokens[index % len(job.tokens)]
    screening_id, seats = job.work[index % len(job.work)]
    body = {"screening_id": screening_id, "seat_ids": seats}
    reserve = http.encode("POST", f"{API}/seat-reservations/reserve", body, token)
    query = ",".join(map(str, seats))
    path = f"{API}/seat-reservations/cancel/{screening_id}?seat_ids={query}"
    cancel = http.encode("DELETE", path, None, token)
    while time.perf_counter() < deadline:
        status, raw = await timed_send(http, sample, reserve)
        if status == 201:
            sample.won += 1
        elif len(sample.errors) < 5:
            sample.errors.append(f"won hold {status}: {raw[:200]!r}")
        started = time.perf_counter()
        await untimed_send(http, sample, cancel)
        sample.step("cancel", started)


async def best_hold_loop(job: Job, http: Http, index: int, deadline: float, sample: Sample) -> None:
    """``reserve-best`` of BEST_SEATS on this connection's screening (``job.work[index]``, the
    won holds' screenings, its seats unused), then the guide's DELETE cancel of the seats it was
    given. Screenings hold far more free blocks than their connections take at once, so every
    attempt should win. The holds are timed; the cancels are the step "cancel"."""
    token = job.tokens[index % len(job.tokens)]
    screening_id, _ = job.work[index % len(job.work)]
    body = {"screening_id": screening_id, "count": BEST_SEATS}
    reserve = http.encode("POST", f"{API}/seat-reservations/reserve-best", body, token)
    cancel = f"DELETE {API}/seat-reservations/cancel/{screening_id}?seat_ids=".encode()
    cancel_end = b" HTTP/1.1\r\n" + http.headers(token) + b"\r\n"
    while time.perf_counter() < deadline:
        status, raw = await timed_send(http, sample, reserve)
        if status != 201:
            if len(sample.errors) < 5:
                sample.errors.append(f"best hold {status}: {raw[:200]!r}")
            continue
        sample.won += 1
        started = time.perf_counter()
        await untimed_send(http, sample, cancel + held_seats(raw) + cancel_end)
        sample.step("cancel", started)


def held_seats(raw: bytes) -> bytes:
    """The seat ids of a 201 hold answer, as the cancel's ``seat_ids`` query wants them."""
    return ",".join(str(r["seat_id"]) for r in orjson.loads(raw)["reservations"]).encode()


async def browse_loop(job: Job, http: Http, index: int, deadline: float, sample: Sample) -> None:
    """GETs of ``job.paths`` in turn; with ``job.conditional`` each carries the ETag its path
    answered with (If-None-Match), as a browser revalidating a page it holds does."""
    requests = [await browse_request(http, path, job.conditional) for path in job.paths]
    n = index
    while time.perf_counter() < deadline:
        await timed_send(http, sample, requests[n % len(requests)])
        n += 1


async def browse_request(http: Http, path: str, conditional: bool) -> bytes:
    """The encoded GET of ``path``; conditional: with the ETag it answers with now."""
    plain = http.encode("GET", path)
    if not conditional:
        return plain
    etag = await response_etag(http.host, http.port, plain)
    return plain[:-2] + b"If-None-Match: " + etag + b"\r\n\r\n"


async def response_etag(host: str, port: int, request: bytes) -> bytes:
    """The ETag header of the answer to ``request`` (one connection of its own, not timed)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"etag":
            return value.strip()
    raise RuntimeError(f"no ETag in the answer to {request[:80]!r}")


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
    """The engine's own hold script, called straight on Redis (then released, like over HTTP).
    Each hold has a grant of its own, 16 hex digits like the engine's (``new_grant``), counted
    up from a random start rather than drawn each time: the loop measures Redis, not urandom."""
    from seatlock import keys
    from seatlock.engine import scripts

    hold, release = scripts.source("hold"), scripts.source("release")
    sha_hold = await redis.call("SCRIPT", "LOAD", hold)
    sha_release = await redis.call("SCRIPT", "LOAD", release)
    user = job.user_ids[index % len(job.user_ids)]
    sid = job.screening_id
    grant = random.getrandbits(63)
    while time.perf_counter() < deadline:
        grant += 1
        seats = pick_seats(job.seat_ids)
        names = keys.script_keys(sid, seats)
        now = int(time.time() * 1000)
        args: tuple[int | str, ...] = (sid, now, user, 60_000, 10, f"{grant:016x}", *seats)
        started = time.perf_counter()
        reply = await redis.call("EVALSHA", sha_hold, len(names), *names, *args)
        sample.record(int(reply[0]), started)
        if reply[0] == 0:
            sample.won += 1
            await redis.call("EVALSHA", sha_release, len(names), *names, sid, now, user, *seats)


async def engine_holds(job: Job) -> Sample:
    """``SeatEngine.hold`` in process, ``job.connections`` at a time: the engine without HTTP,
    on the transport ``job.transport``."""
    from redis.asyncio import Redis

    from seatlock.engine.seats import SeatEngine
    from seatlock.engine.transport import open_transport

    async def no_source(screening_id: int) -> None:
        raise RuntimeError("the bench loads every screening before the engine workload")

    redis = Redis.from_url(job.redis_url, max_connections=job.connections)
    transport = open_transport(job.transport, redis)
    engine = SeatEngine(
        transport, no_source, hold_ms=60_000, max_hold_ms=600_000, max_seats_per_user=10
    )
    sample = Sample()
    await asyncio.sleep(max(0.0, job.start_at - time.time()))
    deadline = time.perf_counter() + job.duration
    try:
        loop = ENGINE_LOOPS[job.kind]
        tasks = (loop(job, engine, i, deadline, sample) for i in range(job.connections))
        await asyncio.gather(*tasks)
    finally:
        await transport.aclose()
        await redis.aclose()
    return sample


async def engine_hold_loop(
    job: Job, engine: Any, index: int, deadline: float, sample: Sample
) -> None:
    from seatlock.engine.errors import SeatsUnavailable, TooManySeats

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


async def engine_won_hold_loop(
    job: Job, engine: Any, index: int, deadline: float, sample: Sample
) -> None:
    """``SeatEngine.hold`` of this connection's own two seats (``job.work[index]``, as the won
    holds over HTTP), then ``release``: the engine's side of the best-available ratio."""
    from seatlock.errors import Conflict

    user = job.user_ids[index % len(job.user_ids)]
    screening_id, seats = job.work[index % len(job.work)]
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            await engine.hold(screening_id, user, seats)
        except Conflict as exc:
            engine_refused(sample, started, exc)
            continue
        sample.record(201, started)
        sample.won += 1
        await engine.release(screening_id, user, seats)


async def engine_best_hold_loop(
    job: Job, engine: Any, index: int, deadline: float, sample: Sample
) -> None:
    """``SeatEngine.hold_best`` of BEST_SEATS on this connection's screening, then ``release``
    of the seats it chose."""
    from seatlock.errors import Conflict

    user = job.user_ids[index % len(job.user_ids)]
    screening_id, _ = job.work[index % len(job.work)]
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            holds = await engine.hold_best(screening_id, user, BEST_SEATS)
        except Conflict as exc:
            engine_refused(sample, started, exc)
            continue
        sample.record(201, started)
        sample.won += 1
        await engine.release(screening_id, user, [hold.seat_id for hold in holds])


def engine_refused(sample: Sample, started: float, exc: Exception) -> None:
    """A hold that should have won did not: counted as a 409, and said in the errors."""
    sample.record(409, started)
    if len(sample.errors) < 5:
        sample.errors.append(f"engine hold refused: {exc!r}")


LOOPS: dict[str, Loop] = {
    "get": get_loop,
    "hold": hold_loop,
    "book": book_loop,
    "won-hold": won_hold_loop,
    "best-hold": best_hold_loop,
    "browse": browse_loop,
    "redis-hold": redis_hold_loop,
}
# The engine's workloads (``engine_holds``): SeatEngine in the generator process, no HTTP.
ENGINE_LOOPS: dict[str, Loop] = {
    "engine-hold": engine_hold_loop,
    "engine-won-hold": engine_won_hold_loop,
    "engine-best-hold": engine_best_hold_loop,
}


# --- Watchers ------------------------------------------------------------------------------------


async def watch(job: Job) -> Sample:
    """Connect ``job.watchers`` WebSockets, say so, and record every update until told to stop."""
    ready, stop = job.control
    sample = Sample()
    path = f"/ws/screenings/{job.screening_id}"
    gate = asyncio.Semaphore(100)
    settled = asyncio.Event()
    pending = [job.watchers]
    stamps: dict[bytes, float] = {}  # what note_updates learnt of each distinct message
    reads = wsclient.Reads()  # reads cut once for every watcher that gets them alike
    shared: dict[int, SharedRead] = {}  # note_updates' tally of each Known read (by its id)

    def settle() -> None:
        pending[0] -= 1
        if pending[0] == 0:
            settled.set()

    def on_messages(raws: list[bytes], received: float) -> None:
        note_updates(job, sample, raws, received, stamps, shared)

    async def one() -> None:
        try:
            async with gate, asyncio.timeout(120):
                ws = await wsclient.connect(job.host, job.port, path, on_messages, reads=reads)
                first = await ws.first
        except BaseException:
            settle()
            raise
        try:
            if b"connection_confirmed" not in first:
                raise RuntimeError(f"expected connection_confirmed, got {first[:100]!r}")
            sample.connected += 1
            settle()
            await ws.closed
        finally:
            ws.close()

    tasks = [asyncio.create_task(one()) for _ in range(job.watchers)]
    if not tasks:  # e.g. --crowd-watchers 0: nobody to wait for
        settled.set()
    await settled.wait()
    ready.put(sample.connected)
    await asyncio.to_thread(stop.wait)
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    sample.errors += [repr(r) for r in results if isinstance(r, Exception)][:3]
    note_shared(sample, shared, stamps)
    return sample


def _as_bytes(raw: str | bytes) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw


class SharedRead:
    """A ``wsclient.Known`` read as watchers got it: how many, and the last of them when."""

    __slots__ = ("count", "latest", "messages")

    def __init__(self, messages: list[bytes], received: float) -> None:
        self.messages, self.latest, self.count = messages, received, 1


def note_updates(
    job: Job,
    sample: Sample,
    raws: list[bytes],
    received: float,
    stamps: dict[bytes, float],
    shared: dict[int, SharedRead] | None = None,
) -> None:
    """Record how late one watcher got the messages of one read.

    Every watcher gets the very same bytes for a change, so a change is keyed by them and its
    JSON parsed once per process (``stamps``: the message's timestamp, -1 when it is no seat
    update), not once per watcher: at 5,000 watchers that parsing was most of the client's CPU.
    A read other watchers got alike (a ``wsclient.Known`` list, the same object for all) is
    only counted in ``shared``, in O(1): ``note_shared`` adds its messages up at the end, each
    as late as the last of those watchers got it.
    """
    if job.kind == "watch-expiry":
        for raw in raws:
            for update in seat_updates(orjson.loads(raw)):
                if update["status"] == "available":
                    sample.freed_at[update["seat_id"]] = received
        return
    if shared is not None and type(raws) is wsclient.Known:
        seen = shared.get(id(raws))  # the entry holds the list: its id is not reused meanwhile
        if seen is None:
            shared[id(raws)] = SharedRead(raws, received)
        else:
            seen.count += 1
            seen.latest = max(seen.latest, received)
        return
    for raw in raws:
        note_message(sample, raw, received, 1, stamps)


def note_shared(sample: Sample, shared: dict[int, SharedRead], stamps: dict[bytes, float]) -> None:
    """Add the reads ``note_updates`` only counted to ``sample.events``."""
    for seen in shared.values():
        for raw in seen.messages:
            note_message(sample, raw, seen.latest, seen.count, stamps)
    shared.clear()


def note_message(
    sample: Sample, raw: bytes, received: float, count: int, stamps: dict[bytes, float]
) -> None:
    """``count`` watchers got message ``raw``, the last of them at ``received``."""
    stamp = stamps.get(raw)
    if stamp is None:
        stamp = stamps[raw] = update_time(raw)
    if stamp < 0:
        return
    delay = (received - stamp) * 1000
    worst, seen = sample.events.get(raw, NOT_SEEN)
    sample.events[raw] = (delay if delay > worst else worst, seen + count)


NOT_SEEN = (float("-inf"), 0)


def update_time(raw: bytes) -> float:
    """When the server stamped a seat update (seconds); -1 for any other message."""
    message = orjson.loads(raw)
    return parse_time(message["timestamp"]) if seat_updates(message) else -1.0


def seat_updates(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The seat changes a message announces (none: it is no seat update)."""
    kind = message.get("type")
    if kind == "seat_update":
        return [message]
    return list(message.get("updates", [])) if kind == "bulk_seat_update" else []


def parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- Resumes -------------------------------------------------------------------------------------


async def resumes(job: Job) -> Sample:
    """``job.connections`` watchers at a time reconnect to ``job.screening_id`` (with
    ``?since=job.since``), each timed from the start of its connect to being caught up, and
    leave; again and again until the duration is over."""
    # Imported before the clock starts: the first import in a generator process can take
    # longer than a quick run's whole batch (an eighth of a second), which then measured none.
    from websockets.asyncio.client import connect

    sample = Sample()
    await asyncio.sleep(max(0.0, job.start_at - time.time()))
    deadline = time.perf_counter() + job.duration
    await asyncio.gather(
        *(resume_loop(job, deadline, sample, connect) for _ in range(job.connections))
    )
    return sample


async def resume_loop(job: Job, deadline: float, sample: Sample, connect: Any) -> None:
    query = "" if job.since is None else f"?since={job.since}"
    url = f"ws://{job.host}:{job.port}/ws/screenings/{job.screening_id}{query}"
    while time.perf_counter() < deadline:
        started, stage, problem = time.perf_counter(), "connecting", ""
        try:
            async with asyncio.timeout(RESUME_TIMEOUT_S):
                async with connect(url, ping_interval=None, max_size=2**22) as ws:
                    stage = "catching up"
                    problem = await caught_up(job, ws)
                    sample.record(101, started)  # the close is not part of the resume
                    stage = "closing"
                    if problem:  # more may be on its way: no closing handshake behind it
                        ws.transport.abort()
        except Exception as exc:  # the connection failed, or never caught up
            if not problem:
                sample.dropped += 1
                problem = f"resume failed while {stage}: {exc!r}"
        if problem and len(sample.errors) < 5:
            sample.errors.append(f"since={job.since}, until={job.until}: {problem}")


async def caught_up(job: Job, ws: Any) -> str:
    """Read until the watcher is current: connection_confirmed (a plain connect), the event of
    version ``job.until`` (a replay) or the seat_snapshot. Returns what was not as expected."""
    first = _as_bytes(await ws.recv())
    if b"connection_confirmed" not in first:
        return f"expected connection_confirmed, got {first[:100]!r}"
    if job.since is None:
        return ""
    replayed = 0
    while True:
        message = orjson.loads(await ws.recv())
        if message.get("type") == "seat_snapshot":
            return "" if not job.until else f"a snapshot after {replayed} replayed events"
        replayed += 1
        if not job.until:
            return f"an event instead of a snapshot: {message.get('type')}"
        if int(message.get("version") or 0) >= job.until:
            expected = job.until - job.since
            return "" if replayed == expected else f"{replayed} events replayed, not {expected}"
