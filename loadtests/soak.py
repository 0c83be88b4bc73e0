"""A long, steady day of mixed traffic: does anything the server keeps grow without end?

    .venv/bin/python -m loadtests.soak [--minutes 10] [--clients 16] [--watchers 100]
        [--users 2000] [--every 30] [--cluster]

The bench measures minutes of one workload at a time; a release day is hours of all of them.
This starts throw-away embedded Redis (or, with ``--cluster``, a 3-primary Redis Cluster) and
PostgreSQL and ``seatlock serve`` (two workers, holds of ``--hold-seconds`` so that some lapse),
seeds the bench's catalog and ``--users`` accounts, and for ``--minutes`` runs ``--clients``
closed-loop connections. Each client acts for users of its own (``--users`` shared out), so no
two requests of one user ever race each other. Each turn, a client takes one of its users at
random and does one of:

- hold two seats of a screening (one of many, or the hot one everybody races for), then
  cancel the hold, book it with a payment id and cancel the tickets, or let it lapse;
- read a seat map, list the user's holds or tickets, read the catalog;
- sign in again, fail to sign in (a wrong password), register a new user and take it on, or
  read the user's account.

Meanwhile ``--watchers`` WebSocket watchers each follow a screening for a few seconds, leave
and come back on another. Every ``--every`` seconds the tool samples each worker's RSS and open
files, Redis's memory and keys, and the database's size, and prints a line. At the end it prints
how much each grew after the warm-up (the first fifth of the run), in all and per 100,000
requests: memory a worker keeps for what it has seen (users, tokens, addresses, screenings) shows
up as growth that does not level off. Each user comes from an address of its own (the server
trusts the tool as a proxy), as sign-in throttles would see them. The reconcilers pass every few
seconds; with every seat changed only through the API, any seat one of them repairs was made
wrong by the server. Any refusal but those the workload makes on purpose (a seat someone else
holds, a wrong password, a booking answered after its hold's own expires_at) is printed with its
first bodies. Exits 1 on any 5xx answer, such refusal, dropped connection or repair.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import orjson

from db.migrate import migrate_database
from loadtests import wsclient
from loadtests.bench import serving, sign_in_all, wait_ready
from loadtests.benchseed import PASSWORD, Seeded, bench_email, seed_catalog
from loadtests.loadgen import API, Http, Resp, json_tail, parse_time
from loadtests.procmem import PROC, children_of, rss_kb
from seatlock.process import end_cleanly_on_sigterm
from seatlock.server.embedded import embedded_services
from seatlock.server.localcluster import LocalCluster

HOST = "127.0.0.1"
WARM_UP = 0.2  # the share of the run before the baseline sample
RECONCILE_S = 5  # the reconcilers' period: a pass racing the traffic every few seconds
REPAIRS = "seatlock_reconcile_repaired_screenings_total"
# The refusals the workload makes on purpose (a seat someone else holds, a wrong password): any
# other answer of 400 and over has its first bodies kept and printed, to say what it was.
EXPECTED = frozenset({"hold 409", "wrong password 401"})
KEPT_BODIES = 5  # per step and status
ALLOCATED = b"total.allocated"  # of MEMORY STATS: what Redis has allocated


@dataclass
class Sample:
    at: float  # seconds into the run
    requests: int
    rss_kb: dict[int, int]  # worker pid -> VmRSS
    fds: dict[int, int]  # worker pid -> open files
    redis_bytes: int
    redis_keys: int
    database_bytes: int


@dataclass
class Soak:
    statuses: Counter[str] = field(default_factory=Counter)  # "<step> <status>"
    dropped: int = 0
    requests: int = 0
    watches: int = 0
    samples: list[Sample] = field(default_factory=list)
    repairs: float = 0.0  # screenings the reconcilers found Redis wrong about
    # "<step> <status>" -> the first KEPT_BODIES bodies of an unexpected refusal or error
    bodies: dict[str, list[bytes]] = field(default_factory=dict)
    unexpected: int = 0  # refusals the workload did not make on purpose
    failed: int = 0  # 5xx answers


class Day:
    """The clients, the watchers and the sampler of one run."""

    def __init__(
        self, args: argparse.Namespace, port: int, seeded: Seeded, tokens: dict[int, str]
    ) -> None:
        self.args, self.port, self.seeded, self.tokens = args, port, seeded, tokens
        self.emails: dict[int, str] = {}  # newcomers' (the seeded users' are bench_email's)
        self.out = Soak()
        self.done = asyncio.Event()
        self.screenings = seeded.spread_screenings
        self.seats: dict[int, list[int]] = {}  # screening -> its seat ids

    # --- one client -------------------------------------------------------------------------

    async def call(
        self,
        http: Http,
        step: str,
        method: str,
        path: str,
        body: object = None,
        token: str = "",
        user: int = 0,
        explain: Callable[[int], str | None] | None = None,
    ) -> tuple[int, bytes]:
        """One request, from the user's own address (the server trusts this client as a proxy):
        sign-in throttles count per address, as they would for users at home. ``explain`` may
        name why a status is an answer the server owed (counted as "<step> <status> (<why>)")."""
        head = http.head(method, path, token) + b"X-Forwarded-For: %s\r\n" % address(user)
        tail = b"\r\n" if body is None else json_tail(orjson.dumps(body))
        try:
            status, raw = await http.send(head + tail)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.out.dropped += 1
            return 0, b""
        self.out.requests += 1
        answer = f"{step} {status}"
        if status >= 500:
            self.out.failed += 1
        why = None if explain is None else explain(status)
        self.out.statuses[answer if why is None else f"{answer} ({why})"] += 1
        if status >= 400 and answer not in EXPECTED and why is None:
            if status < 500:  # a 5xx is counted as such
                self.out.unexpected += 1
            kept = self.out.bodies.setdefault(answer, [])
            if len(kept) < KEPT_BODIES:
                kept.append(raw[:300])
        return status, raw

    async def client(self, rng: random.Random, users: list[int]) -> None:
        """A closed loop over ``users``: no other client acts for them."""
        http = Http(HOST, self.port)
        try:
            while not self.done.is_set():
                await self.turn(http, rng, users)
        finally:
            await http.close()

    async def turn(self, http: Http, rng: random.Random, users: list[int]) -> None:
        index = rng.randrange(len(users))
        user = users[index]
        token = self.tokens[user]
        r = rng.random()
        if r < 0.40:
            await self.hold(http, rng, user)
        elif r < 0.65:
            sid = rng.choice(self.screenings)
            await self.call(http, "seat map", "GET", availability(sid), token=token, user=user)
        elif r < 0.75:
            path = rng.choice(("/seat-reservations/my-reservations", "/tickets/my-tickets"))
            await self.call(http, "mine", "GET", API + path, token=token, user=user)
        elif r < 0.90:
            path = rng.choice(("/movies/", f"/screenings/{rng.choice(self.screenings)}"))
            await self.call(http, "catalog", "GET", API + path, user=user)
        elif r < 0.945:
            body = {"email": self.email(user), "password": PASSWORD}
            path = f"{API}/auth/login"
            status, raw = await self.call(http, "sign in", "POST", path, body, user=user)
            if status == 200:
                self.tokens[user] = str(orjson.loads(raw)["access_token"])
        elif r < 0.95:
            body = {"email": self.email(user), "password": "not-the-password"}
            await self.call(http, "wrong password", "POST", f"{API}/auth/login", body, user=user)
        elif r < 0.96:
            newcomer = await self.newcomer(http, user)
            if newcomer is not None:
                users[index] = newcomer
        else:
            await self.call(http, "me", "GET", f"{API}/auth/me", token=token, user=user)

    def email(self, user: int) -> str:
        return self.emails.get(user) or bench_email(user)

    async def hold(self, http: Http, rng: random.Random, user: int) -> None:
        token = self.tokens[user]
        hot = rng.random() < 0.2
        sid = self.seeded.hot_screenings[0] if hot else rng.choice(self.screenings)
        seats = self.seeded.hot_seats if hot else self.seats[sid]
        start = rng.randrange(len(seats) - 1)
        seat_ids = seats[start : start + 2]
        body = {"screening_id": sid, "seat_ids": seat_ids}
        path = f"{API}/seat-reservations/reserve"
        status, raw = await self.call(http, "hold", "POST", path, body, token, user)
        if status != 201:
            return
        lapses_at = earliest_expiry(raw)
        r = rng.random()
        if r < 0.45:
            ids = ",".join(map(str, seat_ids))
            path = f"{API}/seat-reservations/cancel/{sid}?seat_ids={ids}"
            await self.call(http, "cancel", "DELETE", path, token=token, user=user)
        elif r < 0.9:
            body = {"screening_id": sid, "seat_ids": seat_ids, "payment_id": uuid.uuid4().hex}
            path = f"{API}/tickets/book-from-reservation"
            status, raw = await self.call(
                http, "book", "POST", path, body, token, user, explain=lapsed(lapses_at)
            )
            if status == 201:
                for ticket in orjson.loads(raw):
                    path = f"{API}/tickets/{ticket['id']}"
                    await self.call(http, "cancel ticket", "DELETE", path, token=token, user=user)
        # else: the hold lapses (--hold-seconds)

    async def newcomer(self, http: Http, old: int) -> int | None:
        """Register a new user from an old one's address and sign in; the new user's id, to take
        them on in the old one's place, or None when either step was refused."""
        email = f"soak-{uuid.uuid4().hex[:16]}@example.com"
        body = {"email": email, "password": PASSWORD, "full_name": "Soak Newcomer"}
        path = f"{API}/auth/register"
        status, raw = await self.call(http, "register", "POST", path, body, user=old)
        if status != 201:
            return None
        user = int(orjson.loads(raw)["id"])
        body = {"email": email, "password": PASSWORD}
        status, raw = await self.call(http, "sign in", "POST", f"{API}/auth/login", body, user=user)
        if status != 200:
            return None
        self.tokens[user], self.emails[user] = str(orjson.loads(raw)["access_token"]), email
        return user

    # --- the watchers -------------------------------------------------------------------------

    async def watcher(self, rng: random.Random) -> None:
        def on_messages(raws: list[bytes], received: float) -> None:
            pass

        while not self.done.is_set():
            path = f"/ws/screenings/{rng.choice(self.screenings)}"
            try:
                watch = await wsclient.connect(HOST, self.port, path, on_messages)
            except (OSError, wsclient.HandshakeFailed):
                self.out.dropped += 1
                await asyncio.sleep(1)
                continue
            self.out.watches += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), rng.uniform(2, 10))
            watch.close()

    # --- the sampler --------------------------------------------------------------------------

    async def sampler(self, server_pid: int, redis_ports: list[int], database_url: str) -> None:
        """A sample every --every seconds; Redis's figures summed over its primaries."""
        started = time.monotonic()
        nodes = [Resp(HOST, port) for port in redis_ports]
        for node in nodes:
            await node.connect()
        db = await asyncpg.connect(database_url)
        try:
            while True:
                workers = serving_children(server_pid)
                memory = keys = 0
                for node in nodes:
                    stats = await node.call("MEMORY", "STATS")  # name, value, name, value, ...
                    memory += int(dict(zip(stats[::2], stats[1::2], strict=True))[ALLOCATED])
                    keys += int(await node.call("DBSIZE"))
                sample = Sample(
                    time.monotonic() - started,
                    self.out.requests,
                    {pid: rss_kb(pid) for pid in workers},
                    {pid: open_files(pid) for pid in workers},
                    memory,
                    keys,
                    int(await db.fetchval("SELECT pg_database_size(current_database())")),
                )
                self.out.samples.append(sample)
                print(line(sample), flush=True)
                if self.done.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.done.wait(), self.args.every)
        finally:
            for node in nodes:
                await node.close()
            await db.close()

    async def run(self, server_pid: int, redis_ports: list[int], database_url: str) -> Soak:
        for sid in self.screenings:
            self.seats[sid] = await seat_ids(self.port, sid)
        print(HEADER, flush=True)
        sampler = asyncio.create_task(self.sampler(server_pid, redis_ports, database_url))
        rngs = [random.Random(n) for n in range(self.args.clients + self.args.watchers)]
        own = shares(list(self.tokens), self.args.clients)
        clients = [
            self.client(rng, users)
            for rng, users in zip(rngs[: self.args.clients], own, strict=True)
        ]
        watchers = [self.watcher(rng) for rng in rngs[self.args.clients :]]
        work = asyncio.gather(*clients, *watchers)
        try:
            await asyncio.sleep(self.args.minutes * 60)
        finally:  # also when stopped early (SIGTERM, Ctrl-C): their end is awaited, not dropped
            self.done.set()
            await work
        await sampler
        self.out.repairs = await metric(self.port, REPAIRS)
        return self.out


def shares(users: list[int], clients: int) -> list[list[int]]:
    """``users`` dealt out to ``clients`` clients: no user in two shares (each share has one at
    least when there are as many users as clients, which ``main`` checks)."""
    return [users[n::clients] for n in range(clients)]


def earliest_expiry(raw: bytes) -> float:
    """When the first of a hold answer's reservations expires, in seconds since the epoch."""
    rows = orjson.loads(raw)["reservations"]
    return min(parse_time(row["expires_at"]) for row in rows)


def lapsed(lapses_at: float) -> Callable[[int], str | None]:
    """Explains a booking's 409 answered once its hold's own expires_at had passed: the hold may
    have lapsed before the booking reached it (a seat the user held already keeps the expiry it
    had, so a hold answered 201 can be a second from lapsing). Before that time a 409 is owed no
    explanation: the server refused a hold it had just granted."""

    def explain(status: int) -> str | None:
        return "hold lapsed" if status == 409 and time.time() >= lapses_at else None

    return explain


async def metric(port: int, name: str) -> float:
    """The value of an unlabelled counter on the server's /metrics."""
    http = Http(HOST, port)
    try:
        status, raw = await http.call("GET", "/metrics")
    finally:
        await http.close()
    if status != 200:
        raise RuntimeError(f"/metrics: {status}")
    for line in raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"/metrics has no {name}")


def address(user: int) -> bytes:
    """A user's own IPv4 address, in 10.0.0.0/8."""
    return b"10.%d.%d.%d" % (user >> 16 & 255, user >> 8 & 255, user & 255)


def availability(screening_id: int) -> str:
    return f"{API}/seat-reservations/screening/{screening_id}/availability"


async def seat_ids(port: int, screening_id: int) -> list[int]:
    """The screening's seats in map order (neighbours next to each other)."""
    http = Http(HOST, port)
    try:
        status, raw = await http.call("GET", availability(screening_id))
    finally:
        await http.close()
    if status != 200:
        raise RuntimeError(f"seat map of screening {screening_id}: {status}")
    return [int(s["seat"]["id"]) for s in orjson.loads(raw)]


def serving_children(server_pid: int) -> list[int]:
    """The server's worker processes: its children but multiprocessing's resource tracker."""
    workers = []
    for pid in children_of().get(server_pid, []):
        with contextlib.suppress(OSError):
            if b"resource_tracker" not in (PROC / str(pid) / "cmdline").read_bytes():
                workers.append(pid)
    return workers


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(PROC / str(pid) / "fd"))
    except OSError:
        return 0


HEADER = (
    "   t (s)   requests  workers' RSS (MB)  workers' open files  Redis (MB)  keys  PostgreSQL (MB)"
)


def line(s: Sample) -> str:
    rss = " / ".join(f"{kb / 1024:.1f}" for kb in s.rss_kb.values())
    fds = " / ".join(str(n) for n in s.fds.values())
    return (
        f"{s.at:8.0f} {s.requests:10,}  {rss:>17}  {fds:>19}  {s.redis_bytes / 2**20:10.1f}"
        f"  {s.redis_keys:,}  {s.database_bytes / 2**20:.1f}"
    )


def report(out: Soak, args: argparse.Namespace) -> int:
    print()
    by_status = ", ".join(f"{k}: {v:,}" for k, v in sorted(out.statuses.items()))
    print(f"answers: {by_status}")
    print(f"watchers connected: {out.watches:,}; dropped connections: {out.dropped}")
    samples = out.samples
    base = next((s for s in samples if s.at >= WARM_UP * args.minutes * 60), samples[-1])
    end = samples[-1]
    served = end.requests - base.requests
    if served > 0 and end is not base:
        per = 100_000 / served
        print(
            f"after the warm-up ({base.at:.0f} s to {end.at:.0f} s, {served:,} requests),"
            " growth in all and per 100,000 requests:"
        )
        for pid, kb in end.rss_kb.items():
            grew = kb - base.rss_kb.get(pid, kb)
            fds = end.fds[pid] - base.fds.get(pid, end.fds[pid])
            print(
                f"  worker {pid}: RSS {grew / 1024:+.1f} MB ({grew * per:+,.0f} KB);"
                f" open files {fds:+d}"
            )
        for name, before, after in (
            ("Redis memory", base.redis_bytes, end.redis_bytes),
            ("PostgreSQL database", base.database_bytes, end.database_bytes),
        ):
            grew = after - before
            print(f"  {name}: {grew / 2**20:+.1f} MB ({grew / 1024 * per:+,.0f} KB)")
        print(f"  Redis keys: {end.redis_keys - base.redis_keys:+,}")
    for answer, bodies in sorted(out.bodies.items()):
        for body in bodies:
            print(f"unexpected {answer}: {body.decode(errors='replace')}")
    print(f"screenings the reconcilers repaired (Redis disagreed with PostgreSQL): {out.repairs:g}")
    if out.failed or out.unexpected or out.dropped or out.repairs:
        print(
            f"FAILED: {out.failed} 5xx answers, {out.unexpected} unexpected refusals,"
            f" {out.dropped} dropped connections, {out.repairs:g} repairs"
        )
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="seatlock-soak-"))
    try:
        with contextlib.ExitStack() as stack:
            redis_url, database_url = stack.enter_context(embedded_services(root, persistent=False))
            redis_ports = [int(redis_url.rsplit(":", 1)[1].split("/")[0])]
            if args.cluster:
                cluster = stack.enter_context(LocalCluster(root / "cluster", replicas_each=0))
                redis_url, redis_ports = cluster.url, cluster.primary_ports
            asyncio.run(migrate_database(database_url))
            seeded = asyncio.run(seed_catalog(database_url, args.screenings / 34, args.users))
            extra = {
                "SEATLOCK_HOLD_SECONDS": str(args.hold_seconds),
                "SEATLOCK_TRUSTED_PROXIES": HOST,
                "SEATLOCK_RECONCILE_INTERVAL_SECONDS": str(RECONCILE_S),
            }
            with serving(redis_url, database_url, root / "server", extra) as (port, proc):

                async def go() -> Soak:
                    await wait_ready(HOST, port, proc)
                    tokens = await sign_in_all(HOST, port, seeded.user_ids)
                    return await Day(args, port, seeded, tokens).run(
                        proc.pid, redis_ports, database_url
                    )

                on = f"a {len(redis_ports)}-primary Redis Cluster" if args.cluster else "one Redis"
                print(
                    f"# soak: {args.minutes:g} min, {args.clients} clients, {args.watchers}"
                    f" watchers, {args.users:,} users, {len(seeded.spread_screenings)} screenings"
                    f" and a hot one, holds of {args.hold_seconds} s, on {on}"
                )
                out = asyncio.run(go())
            return report(out, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    end_cleanly_on_sigterm()  # stopped by timeout or kill: its servers and scratch data go too
    parser = argparse.ArgumentParser(prog="python -m loadtests.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--users", type=int, default=2000, help="shared out between the clients")
    parser.add_argument("--screenings", type=int, default=34, help="about this many to hold in")
    parser.add_argument("--hold-seconds", type=int, default=10, help="SEATLOCK_HOLD_SECONDS")
    parser.add_argument("--every", type=float, default=30, help="seconds between samples")
    parser.add_argument(
        "--cluster", action="store_true", help="on a 3-primary Redis Cluster of its own"
    )
    args = parser.parse_args()
    if args.users < args.clients:
        parser.error("--users must be at least --clients: each client acts for users of its own")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
