"""A crowd signing in at once while seat maps are read: what the password hashing lane keeps.

    .venv/bin/python -m loadtests.loginstorm [--users 200] [--readers 16] [--cost 12]
        [--seconds 60] [--threads 1] [--wait 5]

Starts throw-away embedded Redis and PostgreSQL and ``seatlock serve`` (two workers, bcrypt at
``--cost``, ``--threads`` hashing threads per worker and ``--wait`` as
SEATLOCK_PASSWORD_WAIT_SECONDS), seeds the bench's catalog and ``--users`` accounts, and has
``--readers`` connections read the 500-seat map in a closed loop. After 3 s every user signs in
at once on a connection of its own, retrying each 503 after its Retry-After, for at most
``--seconds``. Prints the reads per second and their p99 before and during the storm, how soon
the users got in (and sign-ins per second), the answers by status, and how long ``/metrics``
took, scraped every 0.5 s during the storm. The generator is one process on the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import bcrypt
import orjson

from db.migrate import migrate_database
from loadtests.bench import serving, wait_ready
from loadtests.benchreport import pct
from loadtests.benchseed import seed_catalog
from loadtests.loadgen import API, Http
from seatlock.process import end_cleanly_on_sigterm
from seatlock.server.embedded import embedded_services

HOST = "127.0.0.1"
PASSWORD = "storm-pass-123"
STORM_AT_S = 3.0


@dataclass
class Storm:
    reads: list[tuple[float, float]] = field(default_factory=list)  # (started, ms)
    scrapes: list[tuple[float, float]] = field(default_factory=list)
    users: list[tuple[int | str, float]] = field(default_factory=list)  # (last status, s)
    answers: Counter[int | str] = field(default_factory=Counter)
    answer_s: list[float] = field(default_factory=list)  # how long each sign-in request took


async def sign_in(port: int, email: str) -> tuple[int, int]:
    """One login on a connection of its own: the status and the Retry-After (1 when none)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        body = orjson.dumps({"email": email, "password": PASSWORD})
        writer.write(
            b"POST %s/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (API.encode(), len(body), body)
        )
        lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in lines[1:] if ":" in line)
        )
        await reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split()[1]), int(headers.get("retry-after", "1"))
    finally:
        writer.close()


async def storm(port: int, screening_id: int, users: int, readers: int, seconds: float) -> Storm:
    out = Storm()
    t0 = time.perf_counter()
    done = asyncio.Event()

    async def read() -> None:
        http = Http(HOST, port)
        request = http.encode(
            "GET", f"{API}/seat-reservations/screening/{screening_id}/availability"
        )
        while not done.is_set():
            started = time.perf_counter()
            await http.send(request)
            out.reads.append((started - t0, (time.perf_counter() - started) * 1000))
        await http.close()

    async def scrape() -> None:
        http = Http(HOST, port)
        while not done.is_set():
            started = time.perf_counter()
            await http.call("GET", "/metrics")
            out.scrapes.append((started - t0, (time.perf_counter() - started) * 1000))
            await asyncio.sleep(0.5)
        await http.close()

    async def user(n: int) -> None:
        await asyncio.sleep(STORM_AT_S)
        started = time.perf_counter()
        status: int | str = "gave up"
        while (left := started + seconds - time.perf_counter()) > 0:
            asked = time.perf_counter()
            try:
                status, retry_after = await asyncio.wait_for(
                    sign_in(port, f"storm{n}@example.com"), left
                )
            except TimeoutError:
                status = "gave up"
                break
            out.answers[status] += 1
            out.answer_s.append(time.perf_counter() - asked)
            if status != 503:
                break
            await asyncio.sleep(retry_after)
        out.users.append((status, time.perf_counter() - started))
        if len(out.users) == users:
            done.set()

    await asyncio.gather(
        *(read() for _ in range(readers)), scrape(), *(user(n) for n in range(users))
    )
    return out


def report(out: Storm) -> None:
    end = STORM_AT_S + max(took for _, took in out.users)

    def reads(start: float, stop: float) -> str:
        ms = [ms for at, ms in out.reads if start <= at < stop]
        return f"{len(ms) / (stop - start):,.0f}/s, p99 {pct(ms, 0.99):.1f} ms"

    print(f"seat-map reads before the storm: {reads(0.5, STORM_AT_S)}")
    print(f"seat-map reads during the storm ({end - STORM_AT_S:.1f} s): {reads(STORM_AT_S, end)}")
    signed = sorted(took for status, took in out.users if status == 200)
    outcome = dict(Counter(status for status, _ in out.users))
    print(f"users: {outcome}; answers: {dict(out.answers)}")
    took = out.answer_s
    print(f"each answer took p50 {pct(took, 0.5):.2f} s, max {max(took):.2f} s")
    if signed:
        print(
            f"signed in after p50 {pct(signed, 0.5):.1f} s, p90"
            f" {pct(signed, 0.9):.1f} s, the last {signed[-1]:.1f} s:"
            f" {len(signed) / signed[-1]:.1f} sign-ins/s"
        )
    scrapes = [ms for at, ms in out.scrapes if STORM_AT_S <= at < end]
    if scrapes:
        p50, longest = pct(scrapes, 0.5), max(scrapes)
        print(f"/metrics during the storm: p50 {p50:.0f} ms, max {longest:.0f} ms")


async def seed_users(database_url: str, users: int, cost: int) -> None:
    hashed = (
        await asyncio.to_thread(bcrypt.hashpw, PASSWORD.encode(), bcrypt.gensalt(cost))
    ).decode()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO users (email, password_hash, full_name)"
            " SELECT 'storm' || g || '@example.com', $1, 'Storm ' || g"
            " FROM generate_series(0, $2 - 1) g",
            hashed,
            users,
        )
    finally:
        await conn.close()


def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="seatlock-loginstorm-"))
    try:
        with embedded_services(root, persistent=False) as (redis_url, database_url):
            asyncio.run(migrate_database(database_url))
            seeded = asyncio.run(seed_catalog(database_url, 1.0, 1))
            asyncio.run(seed_users(database_url, args.users, args.cost))
            extra = {
                "SEATLOCK_BCRYPT_ROUNDS": str(args.cost),
                "SEATLOCK_PASSWORD_HASH_THREADS": str(args.threads),
                "SEATLOCK_PASSWORD_WAIT_SECONDS": str(args.wait),
            }
            with serving(redis_url, database_url, root / "server", extra) as (port, proc):

                async def go() -> Storm:
                    await wait_ready(HOST, port, proc)
                    return await storm(
                        port, seeded.hold_screening, args.users, args.readers, args.seconds
                    )

                out = asyncio.run(go())
            print(
                f"# login storm: {args.users} users, {args.readers} seat-map readers, bcrypt cost"
                f" {args.cost}, {args.threads} hashing thread(s) per worker, wait {args.wait} s"
            )
            report(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    end_cleanly_on_sigterm()  # stopped by timeout or kill: its servers and scratch data go too
    parser = argparse.ArgumentParser(prog="python -m loadtests.loginstorm", description=__doc__)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--cost", type=int, default=12, help="bcrypt cost of their passwords")
    parser.add_argument("--seconds", type=float, default=60, help="each user tries this long")
    parser.add_argument("--threads", type=int, default=1, help="SEATLOCK_PASSWORD_HASH_THREADS")
    parser.add_argument("--wait", type=float, default=5, help="SEATLOCK_PASSWORD_WAIT_SECONDS")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
