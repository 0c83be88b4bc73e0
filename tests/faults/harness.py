"""The fault suite's machinery: restartable backends, servers on them, a stream of shoppers
whose every request and answer is logged, and the settled state the checker judges."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from db.migrate import migrate_database
from seatlock.server.embedded import EmbeddedError, EmbeddedPostgres, EmbeddedRedis, free_port
from seatlock.settings import Settings
from tests import factories as make
from tests.factories import Show
from tests.faults.checker import ACTIVE, Exchange, Ticket
from tests.support import Account, make_account

SECRET = "fault-secret-" + "x" * 40
RESTART_S = 60.0  # a killed PostgreSQL may take a moment to let go of its shared memory


class RestartablePostgres(EmbeddedPostgres):
    """EmbeddedPostgres that can be started again on its port and data after a kill -9."""

    def _ready(self) -> bool:
        # A killed postmaster leaves its postmaster.pid saying "ready": only ours counts.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        mine = self.proc is not None and lines[:1] == [str(self.proc.pid)]
        return mine and len(lines) >= 8 and lines[7].strip() == "ready"

    def restart(self) -> None:
        # Orphaned backends leave when they notice their postmaster is gone; until then the
        # new postmaster refuses the data directory (its shared memory is still attached).
        deadline = time.monotonic() + RESTART_S
        while True:
            try:
                self.start()
                return
            except EmbeddedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@dataclass
class Backends:
    """A throw-away redis-server (AOF, fsync every second) and PostgreSQL, killable."""

    redis: EmbeddedRedis
    postgres: RestartablePostgres
    # Restarts run on this one long-lived thread: a child's parent-death signal fires when the
    # thread that started it ends, so a restart from a short-lived thread (asyncio.to_thread's,
    # gone with the test's loop) would take the restarted server down with it.
    keeper: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="fault-backends")
    )

    @classmethod
    def start(cls, root: Path) -> Backends:
        backends = cls(EmbeddedRedis(root / "redis"), RestartablePostgres(root / "pg" / "data"))
        backends.redis.start()
        backends.postgres.start()
        asyncio.run(migrate_database(backends.postgres.url))
        return backends

    def stop(self) -> None:
        self.postgres.stop()
        self.redis.stop()
        self.keeper.shutdown()

    async def inject(self, fault: Callable[[], None]) -> None:
        """Run a fault (killing and restarting block) on the keeper thread."""
        await asyncio.get_running_loop().run_in_executor(self.keeper, fault)

    def kill_redis(self) -> None:
        _kill9(self.redis.proc)
        self.redis.start()  # same port, same data directory

    def kill_postgres(self) -> None:
        _kill9(self.postgres.proc)  # the postmaster only, as a crash would
        self.postgres.restart()

    def settings(self, data_dir: Path, **changes: Any) -> Settings:
        defaults: dict[str, Any] = {
            "reconcile_interval_seconds": 0.5,
            "reconcile_settle_seconds": 0,
        }
        return Settings(
            redis_url=self.redis.url,
            database_url=self.postgres.url,
            data_dir=data_dir,
            jwt_secret=SECRET,
            bcrypt_rounds=4,
            seed_demo=False,
            workers=1,
            login_max_failures_per_ip=100_000,
            **{**defaults, **changes},
        )


def _kill9(proc: subprocess.Popen[bytes] | None) -> None:
    assert proc is not None and proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


class WorkerServer:
    """``seatlock serve`` with two worker processes (SO_REUSEPORT), in a session of its own."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.port = free_port()
        env = {**os.environ, **_env(settings), "SEATLOCK_PORT": str(self.port)}
        code = "from seatlock.server.cli import main; main(['serve'])"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code], env=env, stdout=out, stderr=out,
                start_new_session=True,
            )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        """Pids of the live worker processes (multiprocessing's spawned children)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        found = []
        for pid in children.split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                found.append(int(pid))
        return found

    async def until_serving(self, workers: int = 2, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            while True:
                try:
                    ok = (await client.get("/api/v1/movies/")).status_code == 200
                except httpx.TransportError:
                    ok = False
                if ok and len(self.workers()) >= workers:
                    return
                assert self.proc.poll() is None, "seatlock serve exited"
                assert time.monotonic() < deadline, "seatlock serve did not start"
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _env(settings: Settings) -> dict[str, str]:
    return {
        "SEATLOCK_REDIS_URL": settings.redis_url,
        "SEATLOCK_DATABASE_URL": settings.database_url,
        "SEATLOCK_DATA_DIR": str(settings.data_dir),
        "SEATLOCK_JWT_SECRET": settings.jwt_secret,
        "SEATLOCK_BCRYPT_ROUNDS": str(settings.bcrypt_rounds),
        "SEATLOCK_SEED_DEMO": "false",
        "SEATLOCK_WORKERS": "2",
        "SEATLOCK_LOG_LEVEL": "warning",
        "SEATLOCK_LOGIN_MAX_FAILURES_PER_IP": str(settings.login_max_failures_per_ip),
        "SEATLOCK_RECONCILE_INTERVAL_SECONDS": str(settings.reconcile_interval_seconds),
        "SEATLOCK_RECONCILE_SETTLE_SECONDS": str(settings.reconcile_settle_seconds),
    }


# -- the stream ---------------------------------------------------------------------------------


class Log:
    """Every request and its answer, in order; dumped to a file when a check fails."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    async def call(
        self, client: httpx.AsyncClient, user: Account, method: str, path: str, body: Any = None
    ) -> Exchange:
        try:
            r = await client.request(method, path, json=body, headers=user.headers)
        except httpx.TransportError as exc:  # a killed worker, a connection cut
            x = Exchange(user.id, method, path, body, None, error=repr(exc))
        else:
            answer = r.json() if r.content else None
            x = Exchange(
                user.id, method, path, body, r.status_code, answer, r.headers.get("retry-after")
            )
        self.exchanges.append(x)
        return x

    def dump(self, path: Path) -> None:
        with path.open("w") as out:
            for x in self.exchanges:
                out.write(json.dumps(asdict(x), default=str) + "\n")


async def shows(url: str, count: int, seats: int) -> list[Show]:
    conn = await asyncpg.connect(url)
    try:
        return [await make.show(conn, seats) for _ in range(count)]
    finally:
        await conn.close()


async def accounts(client: httpx.AsyncClient, name: str, count: int) -> list[Account]:
    return list(
        await asyncio.gather(
            *(make_account(client, f"{name}{n}@example.com", f"Shopper {n}") for n in range(count))
        )
    )


async def shopper(
    log: Log,
    client: httpx.AsyncClient,
    user: Account,
    shows: list[Show],
    stop: asyncio.Event,
    seed: int,
) -> None:
    """Looks at a seat map, then holds and books, quick-books, drops a hold or a ticket; until
    ``stop`` is set."""
    rng = random.Random(seed)
    payments = 0
    while not stop.is_set():
        show = rng.choice(shows)
        seen = await log.call(client, user, "GET", f"/api/v1/screenings/{show.id}/available-seats")
        free = [s["seat"]["id"] for s in seen.answer] if seen.status == 200 else []
        if not free:
            await asyncio.sleep(0.1)
            continue
        seats = sorted(rng.sample(free, min(len(free), rng.randint(1, 3))))
        payments += 1
        payment = f"pay_{user.id}_{payments}"
        body = {"screening_id": show.id, "seat_ids": seats, "payment_id": payment}
        roll = rng.random()
        if roll < 0.2:
            await _book(log, client, user, "/api/v1/tickets/book", body, rng)
        elif roll < 0.3:
            await _hold_and_drop(log, client, user, show, seats)
        else:
            held = await log.call(client, user, "POST", "/api/v1/seat-reservations/reserve", body)
            if held.status == 201:
                await _book(log, client, user, "/api/v1/tickets/book-from-reservation", body, rng)
        if rng.random() < 0.05:
            await _cancel_a_ticket(log, client, user, rng)
        await asyncio.sleep(rng.uniform(0, 0.05))


async def _book(
    log: Log, client: httpx.AsyncClient, user: Account, path: str, body: Any, rng: random.Random
) -> None:
    """Book; on a 503 try again with the same payment_id, as a client should; sometimes replay
    a success (the same tickets must come back)."""
    for _ in range(3):
        x = await log.call(client, user, "POST", path, body)
        if x.status == 201 and rng.random() < 0.2:
            await log.call(client, user, "POST", path, body)
        if x.status not in (503, None):
            return
        await asyncio.sleep(0.3)


async def _hold_and_drop(
    log: Log, client: httpx.AsyncClient, user: Account, show: Show, seats: list[int]
) -> None:
    body = {"screening_id": show.id, "seat_ids": seats}
    if (
        await log.call(client, user, "POST", "/api/v1/seat-reservations/reserve", body)
    ).status == 201:
        path = f"/api/v1/seat-reservations/cancel/{show.id}"
        await log.call(client, user, "DELETE", path + f"?seat_ids={','.join(map(str, seats))}")


async def _cancel_a_ticket(
    log: Log, client: httpx.AsyncClient, user: Account, rng: random.Random
) -> None:
    mine = await log.call(client, user, "GET", "/api/v1/tickets/my-tickets")
    if mine.status != 200:
        return
    active = [t["id"] for t in mine.answer if t["status"] in ACTIVE]
    if active:
        await log.call(client, user, "DELETE", f"/api/v1/tickets/{rng.choice(active)}")


async def stream(
    log: Log,
    client: httpx.AsyncClient,
    users: list[Account],
    shows: list[Show],
    stop: asyncio.Event,
) -> None:
    """Every user shopping at once until ``stop`` is set."""
    await asyncio.gather(
        *(shopper(log, client, u, shows, stop, seed) for seed, u in enumerate(users))
    )


# -- the settled state --------------------------------------------------------------------------


async def pg_tickets(url: str, shows: list[Show]) -> list[Ticket]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT id, user_id, screening_id, seat_id, status FROM tickets"
            " WHERE screening_id = ANY($1::bigint[])",
            [s.id for s in shows],
        )
    finally:
        await conn.close()
    return [Ticket(**dict(row)) for row in rows]


async def seat_maps(client: httpx.AsyncClient, shows: list[Show]) -> dict[int, set[int]]:
    """The seats each screening's map shows booked, as every client sees it."""
    maps = {}
    for show in shows:
        path = f"/api/v1/seat-reservations/screening/{show.id}/availability"
        r = await client.get(path)
        assert r.status_code == 200, r.text
        maps[show.id] = {s["seat"]["id"] for s in r.json() if s["status"] == "booked"}
    return maps


async def settled(
    client: httpx.AsyncClient, url: str, shows: list[Show], seconds: float
) -> tuple[list[Ticket], dict[int, set[int]]]:
    """PostgreSQL's tickets and the seat maps, once they agree or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        tickets = await pg_tickets(url, shows)
        maps = await _maps_when_up(client, shows, deadline)
        active = {
            s.id: {t.seat_id for t in tickets if t.screening_id == s.id and t.status in ACTIVE}
            for s in shows
        }
        if maps == active or time.monotonic() > deadline:
            return tickets, maps
        await asyncio.sleep(0.25)


async def _maps_when_up(
    client: httpx.AsyncClient, shows: list[Show], deadline: float
) -> dict[int, set[int]]:
    while True:
        try:
            return await seat_maps(client, shows)
        except (AssertionError, httpx.TransportError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)
