"""Helpers shared by the tests: a live server in a thread, the real CLI in a subprocess, accounts,
and catalog builders."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import uvicorn
import websockets
from redis.asyncio import Redis
from websockets.exceptions import ConnectionClosed

from seatlock import keys
from seatlock.server.embedded import free_port
from seatlock.server.serving import http_protocol, websocket_options
from seatlock.server.wiring import create_app
from seatlock.settings import Settings
from tests.factories import Show

PASSWORD = "Sup3r-secret!"
RESERVE = "/api/v1/seat-reservations/reserve"
FROM_HOLD = "/api/v1/tickets/book-from-reservation"
PUBLIC = "public, max-age=30"  # Cache-Control of the public catalog lists
STOP_S = 15.0  # a test server's wait for its requests and its lifespan's end, per stop signal


class LiveServer:
    """The real app on a free loopback port, served by uvicorn in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.app = create_app(settings)  # its services: app.state.services once started
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            ws_ping_interval=None,
            http=http_protocol(settings.request_read_timeout_seconds),  # as seatlock serve runs it
            **websocket_options(settings.ws_per_message_deflate),  # as seatlock serve does
            proxy_headers=False,  # as seatlock serve runs it: SEATLOCK_TRUSTED_PROXIES decides
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop as ``seatlock serve`` does on SIGTERM; a second time as on a second one (without
        waiting for requests in flight). A server still running after that fails the test that
        started it: left running, its loops (the reconciler's, the sweep's) would act on the
        backends under later tests."""
        self._server.should_exit = True
        self._thread.join(timeout=STOP_S)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=STOP_S)
        if self._thread.is_alive():
            raise RuntimeError(
                f"the test server did not stop in {2 * STOP_S:.0f} s: {self._busy()}"
            )

    def _busy(self) -> str:
        """What the server's loop is still doing (read from another thread: a diagnosis only)."""
        try:
            loop = self._server.servers[0].get_loop()
            tasks = asyncio.all_tasks(loop)
        except (AttributeError, IndexError, RuntimeError) as exc:
            return f"its tasks could not be read ({exc!r})"
        return "; ".join(f"{task.get_coro()!r} at {task.get_stack(limit=1)}" for task in tasks)


@dataclass
class Account:
    id: int
    email: str
    password: str
    token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    r = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def make_account(
    client: httpx.AsyncClient, email: str, full_name: str, *, admin_db: str | None = None
) -> Account:
    r = await client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "full_name": full_name},
    )
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    if admin_db:
        conn = await asyncpg.connect(admin_db)
        try:
            await conn.execute("UPDATE users SET role = 'admin' WHERE id = $1", user_id)
        finally:
            await conn.close()
    tokens = await login(client, email)
    return Account(user_id, email, PASSWORD, tokens["access_token"], tokens["refresh_token"])


def ids(r: httpx.Response) -> list[int]:
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()]


# -- emptying the database between tests -----------------------------------------------------------


async def empty_tables(conn: asyncpg.Connection) -> None:
    """Delete every row of every table but schema_migrations; identities are not restarted, so
    ids never repeat across tests (no stale caches).

    TRUNCATE makes new files for every table and index (about 0.1 s here, paid by every test);
    a DELETE of the few rows a test leaves costs milliseconds. The tables are locked first as
    TRUNCATE locks them, so a writer's open transaction is waited for and none commits rows into
    the next test. As a superuser (the suite's own PostgreSQL) the DELETEs run with triggers and
    foreign-key checks off (session_replication_role = replica): every table is emptied anyway,
    in any order; another role keeps TRUNCATE ... CASCADE.
    """
    tables = ", ".join(
        r["t"]
        for r in await conn.fetch(
            "SELECT quote_ident(tablename) AS t FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
        )
    )
    if not tables:
        return
    # A server's history writer may hold a lock this needs while it waits for one this took:
    # waiting longer than the writer makes the writer the deadlock victim (it retries; the
    # writer sets no lock timeout in production).
    await conn.execute("SET deadlock_timeout = '30s'")
    if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        await conn.execute(f"TRUNCATE {tables} CASCADE")
        return
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
        await conn.execute("; ".join(f"DELETE FROM {t}" for t in tables.split(", ")))


# -- seat holds, tickets and the seat-map WebSocket -----------------------------------------------


async def reserve(
    client: httpx.AsyncClient, account: Account, show: Show, seats: list[int]
) -> httpx.Response:
    return await client.post(
        RESERVE, json={"screening_id": show.id, "seat_ids": seats}, headers=account.headers
    )


async def availability(
    client: httpx.AsyncClient, show: Show, account: Account | None = None
) -> dict[int, dict[str, Any]]:
    r = await client.get(
        f"/api/v1/seat-reservations/screening/{show.id}/availability",
        headers=account.headers if account else None,
    )
    assert r.status_code == 200, r.text
    return {s["seat"]["id"]: s for s in r.json()}


async def watch(server: LiveServer, screening_id: int, token: str | None = None) -> Any:
    """A WebSocket watching a screening, past its connection_confirmed message."""
    url = f"{server.ws_url}/ws/screenings/{screening_id}" + (f"?token={token}" if token else "")
    ws = await websockets.connect(url)
    hello = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert hello == {
        "type": "connection_confirmed",
        "screening_id": screening_id,
        "message": "Connected to real-time seat updates",
    }
    return ws


async def ws_closed(ws: Any, within: float) -> tuple[int | None, str | None]:
    """The close code and reason of ``ws``, reading (and skipping) messages until it closes."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


def seat_statuses(message: dict[str, Any]) -> dict[int, dict[str, Any]]:
    if message["type"] == "seat_update":
        return {message["seat_id"]: message}
    if message["type"] == "bulk_seat_update":
        return {u["seat_id"]: u for u in message["updates"]}
    return {}


async def wait_for_status(
    ws: Any, seat_ids: list[int], status: str, within: float = 3.0
) -> dict[int, dict[str, Any]]:
    """Read messages until every seat was reported in ``status``; returns the last updates."""
    return await wait_for_statuses(ws, dict.fromkeys(seat_ids, status), within)


async def wait_for_statuses(
    ws: Any, wanted: dict[int, str], within: float = 3.0
) -> dict[int, dict[str, Any]]:
    """Read messages until each seat of ``wanted`` was last reported in its status, in whatever
    order the changes came; returns the last updates."""
    seen: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(within):
        while not all(seen.get(s, {}).get("status") == st for s, st in wanted.items()):
            seen.update(seat_statuses(orjson.loads(await ws.recv())))
    return seen


async def held_in_redis(redis: Redis, show: Show) -> dict[int, int]:
    """seat id -> user id of every live lease of the screening."""
    held = {}
    for seat_id in show.seat_ids:
        value = await redis.get(keys.seat_hold(show.id, seat_id))
        if value is not None:
            text = value.decode() if isinstance(value, bytes) else str(value)
            held[seat_id] = int(text.split(":")[0])
    return held


async def book_held(
    client: httpx.AsyncClient, account: Account, show: Show, seats: list[int], payment: str
) -> httpx.Response:
    body = {"screening_id": show.id, "seat_ids": seats, "payment_id": payment}
    return await client.post(FROM_HOLD, json=body, headers=account.headers)


async def active_tickets(db: asyncpg.Connection, show: Show) -> list[Any]:
    return list(
        await db.fetch(
            "SELECT id, seat_id, user_id, status, price FROM tickets WHERE screening_id = $1"
            " AND status IN ('pending', 'confirmed') ORDER BY seat_id",
            show.id,
        )
    )


# -- processes left behind by embedded servers ----------------------------------------------------


def processes_mentioning(needle: Path) -> list[tuple[int, str]]:
    """Live processes whose command line or working directory mentions ``needle``.

    redis-server rewrites its title (no --dir in it) but works in its data directory.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(needle) in cmdline or cwd.startswith(str(needle)):
            found.append((int(entry.name), cmdline))
    return found


def wait_until_gone(needle: Path, seconds: float = 10) -> list[tuple[int, str]]:
    deadline = time.monotonic() + seconds
    while (left := processes_mentioning(needle)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# -- the real CLI: ``seatlock serve`` in a subprocess ---------------------------------------------

REPO = Path(__file__).resolve().parents[1]
SERVE = [sys.executable, "-c", "from seatlock.server.cli import main; main()", "serve"]


def serve_env(**settings: object) -> dict[str, str]:
    """This process's environment without its SEATLOCK_ variables, plus ``settings`` by their
    field names (``workers=2`` is SEATLOCK_WORKERS=2): nothing leaks in from the shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEATLOCK_")}
    return env | {f"SEATLOCK_{name.upper()}": str(value) for name, value in settings.items()}


def backends_of(settings: Settings) -> dict[str, str]:
    """The settings that make a served process share the suite's Redis, PostgreSQL and tokens."""
    return {
        "redis_url": settings.redis_url,
        "database_url": settings.database_url,
        "jwt_secret": settings.jwt_secret,
    }


@dataclass
class Served:
    """One ``seatlock serve`` process (a supervisor and its workers), its output in ``log``."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path
    env: dict[str, str]
    group: bool  # in a process group of its own, as under a terminal: Ctrl-C reaches every worker

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def wait_for(self, path: str = "/health/ready", seconds: float = 30, started: int = 0) -> None:
        """Until GET ``path`` answers 200 and ``started`` workers logged their startup (a log level
        of info or lower) and listen; fails the test with the log if serve exits first or takes
        longer than ``seconds``. One worker may answer while another is still starting."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if self._started(started) and self._answers(path):
                return
            time.sleep(0.1)
        pytest.fail(f"serve did not answer {path} in {seconds} s:\n{self.log.read_text()}")

    def _started(self, workers: int) -> bool:
        if workers == 0:
            return True
        logged = self.log.read_text().count("Application startup complete.")
        return logged >= workers and len(self.listening()) >= workers

    def _answers(self, path: str) -> bool:
        try:
            return httpx.get(self.url + path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the server (and, in a group of its own, to every worker)."""
        if self.group:
            os.killpg(self.proc.pid, signal.SIGINT)
        else:
            self.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        """kill -9 the server (and, in a group of its own, every worker) and reap it."""
        if self.group:
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.kill()
        self.proc.wait()

    def listening(self) -> set[int]:
        """Its processes with a socket listening on its port: the workers that accept. A worker
        reports itself (its lifespan) before uvicorn opens its socket, and SO_REUSEPORT hands
        every new connection to the sockets already listening."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    fields = line.split()
                    if fields[1].endswith(f":{self.port:04X}") and fields[3] == "0A":
                        inodes.add(f"socket:[{fields[9]}]")
        found = set()
        for pid in [self.proc.pid, *self.children()]:  # one worker: serve itself listens
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir()):
                    found.add(pid)
        return found

    def children(self) -> list[int]:
        """Pids whose parent is the server: its workers, redis-server and postmaster."""
        pids = []
        for entry in Path("/proc").glob("[0-9]*/status"):
            try:
                status = entry.read_text()
            except OSError:
                continue
            if f"\nPPid:\t{self.proc.pid}\n" in status:
                pids.append(int(entry.parent.name))
        return pids


def start_serve(
    data_dir: Path, *, group: bool = False, open_files: int = 0, **settings: object
) -> Served:
    """``seatlock serve`` on a free port with its data in ``data_dir`` (which several servers may
    share: each logs to a file named by its port); not waited for (``Served.wait_for``).
    ``open_files``: the soft limit of open files it starts with, as a shell's ``ulimit -Sn``
    sets it (0: this process's)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = serve_env(data_dir=data_dir, port=port, **settings)
    log = data_dir / f"serve-{port}.log"
    command = SERVE
    if open_files:  # a shell that execs serve: no preexec_fn in a process with threads
        command = ["sh", "-c", f'ulimit -Sn {open_files} && exec "$0" "$@"', *SERVE]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=group,
        )
    return Served(proc, port, data_dir, log, env, group)


def stop_all(served: list[Served], seconds: float = 30) -> None:
    """Ctrl-C every server still running, all at once; kill -9 those not gone in ``seconds``."""
    running = [s for s in served if s.proc.poll() is None]
    for s in running:
        s.interrupt()
    for s in running:
        try:
            s.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            s.kill()


@contextmanager
def serving(
    data_dir: Path,
    *,
    path: str = "/health/ready",
    seconds: float = 30,
    group: bool = False,
    started: int = 0,
    open_files: int = 0,
    **settings: object,
) -> Iterator[Served]:
    """``start_serve``, waited for until ``path`` answers (and ``started`` workers are up:
    ``Served.wait_for``); stopped on the way out if still running."""
    served = start_serve(data_dir, group=group, open_files=open_files, **settings)
    try:
        served.wait_for(path, seconds, started)
        yield served
    finally:
        stop_all([served])


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A data directory outside pytest's 0700 tmp root, removed once no process left behind
    works in it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        wait_until_gone(path)
        shutil.rmtree(path, ignore_errors=True)
