"""What Starlette's middleware stack costs a request: CPU per request, in process, no sockets.

    .venv/bin/python -m loadtests.stackcost [--requests 20000] [--rounds 5] [--access-log]
        [--only NAME] [--concurrency 1]

Starts throw-away embedded Redis and PostgreSQL, builds the app (``create_app``) and drives its
ASGI callable directly with N requests of each workload, in three ways that share one set of
services: ``bare`` calls the app's router (what a request cost when known routes skipped the
stack), ``stack`` calls the app (ServerErrorMiddleware and ExceptionMiddleware around the router,
as every request is served now), ``stack+1`` is the app with one more pure-ASGI middleware that
only passes the call on (what each added middleware costs at least), ``plain`` is a plain
Starlette app with the same routes (Starlette's router scan instead of ``FastRouter``'s lookup:
what the fast lookup still earns). Workloads: the empty health route, a hold attempt refused with
a 409 (the seat is held by another user: the common answer on release day), and the availability
read of the 500-seat screening (a fifth of the requests), and the won-hold cycle of a ticket
buyer: a hold of 2 seats that every attempt wins (201), then their cancel in the guide's DELETE
form (204), spread over CYCLE_USERS users and the spread screenings, reported as one row per hold
and one per cancel (the history rows the holds write in the background, their events and the
hub's reading of them are this process's CPU too, shared between the two rows as they fall). The
ways take turns over ``--rounds`` rounds; the median of the rounds is printed (with the range), in
microseconds of this process's CPU per request (Redis and PostgreSQL excluded), and each way's
difference to ``bare``; ``redis`` is the embedded Redis's CPU per request over all the ways (every
request served counts, warm-ups and the cycle's whole passes too).
``--concurrency N`` keeps N requests in flight (N copies of a request, or N of a cycle's pass at
a time), as a loaded server has them: Redis calls, history batches and event reads are then
shared between requests, as they are under real load, where one at a time pays each alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis
from starlette.applications import Starlette

from db.migrate import migrate_database
from loadtests.benchseed import PASSWORD, bench_email, seed_catalog
from seatlock.process import end_cleanly_on_sigterm, settle_garbage_collector
from seatlock.server import logs
from seatlock.server.embedded import embedded_services
from seatlock.server.wiring import create_app
from seatlock.settings import Settings

ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
RESERVE = "/api/v1/seat-reservations/reserve"
CANCEL = "/api/v1/seat-reservations/cancel/{}"
# The won-hold cycle: each of CYCLE_USERS users holds one pair of seats in each spread screening
# (under the per-user cap), so one pass holds CYCLE_USERS * screenings pairs, every one a win.
CYCLE_USERS = 50
CONCURRENCY = 1  # requests in flight at once (--concurrency)


class PassOn:
    """A pure-ASGI middleware that does nothing but pass the call on."""

    def __init__(self, app: ASGI) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class Request:
    """One request, encoded once; ``__call__`` serves it and returns the status."""

    served = 0  # requests served so far, by every Request: Redis's CPU is divided by it

    def __init__(
        self, method: str, path: str, body: Any = None, token: str = "", query: str = ""
    ) -> None:
        headers = [(b"host", b"bench"), (b"content-type", b"application/json")]
        if token:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        self.message = {"type": "http.request", "body": orjson.dumps(body), "more_body": False}
        self.status = 0
        self.body = b""

    async def receive(self) -> dict[str, Any]:
        return self.message

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.body += message.get("body", b"")

    async def __call__(self, app: ASGI) -> int:
        Request.served += 1
        self.body = b""
        await app(dict(self.scope), self.receive, self.send)
        return self.status

    def copy(self) -> Request:
        """The same request, with a reply of its own (to serve it while this one is in flight)."""
        twin = Request.__new__(Request)
        twin.scope, twin.message, twin.status, twin.body = self.scope, self.message, 0, b""
        return twin


async def cpu_per_request(app: ASGI, request: Request, count: int, expect: int) -> float:
    """Microseconds of this process's CPU per request, over ``count`` requests, CONCURRENCY of
    them in flight (copies of ``request``)."""
    if CONCURRENCY > 1:
        return await _concurrent_cpu(app, request, count, expect)
    started = time.process_time()
    for _ in range(count):
        status = await request(app)
    spent = time.process_time() - started
    if status != expect:
        raise RuntimeError(f"{request.scope['path']}: {status} {request.body[:200]!r}")
    return spent / count * 1e6


async def _concurrent_cpu(app: ASGI, request: Request, count: int, expect: int) -> float:
    copies = [request.copy() for _ in range(CONCURRENCY)]
    per_copy = max(1, count // CONCURRENCY)

    async def serve(copy: Request) -> int:
        status = 0
        for _ in range(per_copy):
            status = await copy(app)
        return status

    started = time.process_time()
    statuses = await asyncio.gather(*map(serve, copies))
    spent = time.process_time() - started
    if any(status != expect for status in statuses):
        raise RuntimeError(f"{request.scope['path']}: {statuses} {copies[0].body[:200]!r}")
    return spent / (per_copy * CONCURRENCY) * 1e6


@contextlib.asynccontextmanager
async def ways(settings: Settings) -> AsyncIterator[dict[str, ASGI]]:
    """The router alone, the app, the app with one more middleware, and a plain Starlette app
    with the same routes; services shared."""
    app = create_app(settings)
    more = create_app(settings)
    more.add_middleware(PassOn)
    plain = Starlette(routes=app.routes, exception_handlers=app.exception_handlers)
    async with app.router.lifespan_context(app):
        for each in (app, more, plain):  # built now, as on a server's first request
            each.state.services = app.state.services
            each.middleware_stack = each.build_middleware_stack()

        async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
            scope["app"] = app  # what Starlette.__call__ sets before its stack
            await app.router(scope, receive, send)

        yield {"bare": bare, "stack": app, "stack+1": more, "plain": plain}


class Cycle:
    """The won-hold cycle: every pair held (201), then every pair cancelled (204)."""

    def __init__(self, holds: list[Request], cancels: list[Request]) -> None:
        self.holds = holds
        self.cancels = cancels

    async def cpu_per_request(self, app: ASGI, count: int) -> tuple[float, float]:
        """Microseconds of this process's CPU per hold and per cancel, over about ``count``
        of each (whole passes)."""
        held = cancelled = 0.0
        passes = max(1, count // len(self.holds))
        for _ in range(passes):
            held += await self._pass(app, self.holds, 201)
            cancelled += await self._pass(app, self.cancels, 204)
        n = passes * len(self.holds)
        return held / n * 1e6, cancelled / n * 1e6

    async def _pass(self, app: ASGI, requests: list[Request], expect: int) -> float:
        """CPU of one pass, CONCURRENCY requests in flight: a request that ends starts the next
        (each request is another user's or screening's, so any order is a valid pass)."""
        todo = iter(requests)

        async def serve() -> None:
            for request in todo:
                await request(app)

        started = time.process_time()
        await asyncio.gather(*(serve() for _ in range(CONCURRENCY)))
        spent = time.process_time() - started
        for request in requests:
            if request.status != expect:
                raise RuntimeError(f"{request.scope['path']}: {request.status} {request.body!r}")
        return spent


Workload = tuple[Request | Cycle, int, int]


async def workloads(settings: Settings) -> dict[str, Workload]:
    """Each workload's request (or cycle), expected status and divisor of the request count."""
    seeded = await seed_catalog(settings.database_url, 1.0, 2 + CYCLE_USERS)
    seat = seeded.hot_seats[len(seeded.hot_seats) // 2]
    hold = {"screening_id": seeded.hold_screening, "seat_ids": [seat]}
    async with ways(settings) as served:
        tokens = [await login(served["stack"], user) for user in seeded.user_ids]
        assert await Request("POST", RESERVE, hold, tokens[0])(served["stack"]) == 201
    availability = f"/api/v1/seat-reservations/screening/{seeded.hold_screening}/availability"
    return {
        "GET /health/live": (Request("GET", "/health/live"), 200, 1),
        "hold attempt (409)": (Request("POST", RESERVE, hold, tokens[1]), 409, 1),
        "availability (500)": (Request("GET", availability), 200, 5),
        "won hold (201)": (cycle(seeded.spread_screenings, seeded.spread_seats, tokens[2:]), 0, 2),
    }


def cycle(screenings: list[int], seats: list[int], tokens: list[str]) -> Cycle:
    """User k holds seats 2k and 2k+1 of every screening, and cancels them by their ids."""
    holds: list[Request] = []
    cancels: list[Request] = []
    for k, token in enumerate(tokens):
        pair = seats[2 * k : 2 * k + 2]
        for screening in screenings:
            body = {"screening_id": screening, "seat_ids": pair}
            holds.append(Request("POST", RESERVE, body, token))
            query = "seat_ids=" + ",".join(map(str, pair))
            cancels.append(Request("DELETE", CANCEL.format(screening), None, token, query))
    return Cycle(holds, cancels)


async def login(app: ASGI, user_id: int) -> str:
    body = {"email": bench_email(user_id), "password": PASSWORD}
    request = Request("POST", "/api/v1/auth/login", body)
    if await request(app) != 200:
        raise RuntimeError(f"login failed: {request.body[:200]!r}")
    return str(orjson.loads(request.body)["access_token"])


async def measure(settings: Settings, count: int, rounds: int, only: str) -> None:
    work = await workloads(settings)
    redis = Redis.from_url(settings.redis_url)
    async with ways(settings) as served:
        settle_garbage_collector()
        for name, (request, expect, divisor) in work.items():
            if only not in name:
                continue
            n = count // divisor
            redis_started, served_before = await redis_cpu(redis), Request.served
            if isinstance(request, Cycle):
                spent = await measure_cycle(served, request, n, rounds)
            else:
                spent = {"": await measure_one(served, request, n, rounds, expect)}
            # Every request served counts, warm-ups and whole passes included: Redis's CPU
            # cannot be told apart between them.
            requests = max(1, Request.served - served_before)
            redis_us = (await redis_cpu(redis) - redis_started) / requests * 1e6
            for part, values in spent.items():
                report(f"{name}{part}", values, redis_us)
    await redis.aclose()


async def measure_one(
    served: dict[str, ASGI], request: Request, n: int, rounds: int, expect: int
) -> dict[str, list[float]]:
    spent: dict[str, list[float]] = {way: [] for way in served}
    for _ in range(rounds):
        for way, app in served.items():
            await cpu_per_request(app, request, n // 10, expect)  # warm-up
            spent[way].append(await cpu_per_request(app, request, n, expect))
    return spent


async def measure_cycle(
    served: dict[str, ASGI], cycle: Cycle, n: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    held: dict[str, list[float]] = {way: [] for way in served}
    cancelled: dict[str, list[float]] = {way: [] for way in served}
    for _ in range(rounds):
        for way, app in served.items():
            await cycle.cpu_per_request(app, n // 10)  # warm-up
            hold_us, cancel_us = await cycle.cpu_per_request(app, n)
            held[way].append(hold_us)
            cancelled[way].append(cancel_us)
    return {"": held, " cancel (204)": cancelled}


async def redis_cpu(redis: Redis) -> float:
    """Seconds of CPU the Redis server has used (its main thread and the others)."""
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def report(name: str, spent: dict[str, list[float]], redis_us: float) -> None:
    bare = statistics.median(spent["bare"])
    cells = []
    for way, values in spent.items():
        median = statistics.median(values)
        extra = f" ({(median - bare) / bare:+.1%})" if way != "bare" else ""
        cells.append(f"{way} {median:.1f} [{min(values):.1f}-{max(values):.1f}]{extra}")
    cells.append(f"redis {redis_us:.1f}")
    print(f"{name:<26} us CPU/request: " + " | ".join(cells), flush=True)


def main() -> None:
    end_cleanly_on_sigterm()  # stopped by timeout or kill: its servers and scratch data go too
    parser = argparse.ArgumentParser(prog="python -m loadtests.stackcost", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="per workload, way and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="", help="only the workloads whose name contains this")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="requests in flight at once, as under load (Redis calls, history batches and event"
        " reads then serve several requests each)",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log as a worker of seatlock serve does, access log on (lines to /dev/null): what"
        " a request's access line costs, its writer thread's CPU included",
    )
    args = parser.parse_args()
    global CONCURRENCY
    CONCURRENCY = max(1, args.concurrency)
    with scratch_backends(
        "stackcost", log_level="info" if args.access_log else "warning"
    ) as settings:
        if args.access_log:
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the lines' sink until exit
            logs.configure(settings, background=True)
        run(settings, args.requests, args.rounds, args.only)


@contextlib.contextmanager
def scratch_backends(tool: str, **overrides: Any) -> Iterator[Settings]:
    """Throw-away embedded Redis and PostgreSQL (not migrated yet) in a temporary directory, and
    the settings of a server on them, for a measuring tool named ``tool``."""
    root = Path(tempfile.mkdtemp(prefix=f"seatlock-{tool}-"))
    try:
        with embedded_services(root, persistent=False) as (redis_url, database_url):
            defaults: dict[str, Any] = {
                "data_dir": root / "data",
                "jwt_secret": f"{tool}-" + "s" * 40,
                "bcrypt_rounds": 4,
                "seed_demo": False,
                "log_level": "warning",
            }
            yield Settings(redis_url=redis_url, database_url=database_url, **defaults | overrides)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(settings: Settings, count: int, rounds: int, only: str) -> None:
    async def go() -> None:
        await migrate_database(settings.database_url)
        await measure(settings, count, rounds, only)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(go())
    else:
        uvloop.run(go())


if __name__ == "__main__":
    main()
