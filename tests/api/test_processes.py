"""Two real ``seatlock serve`` processes on one Redis and one PostgreSQL: nothing that matters
lives in one process's memory (DESIGN.md, scale-out)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from seatlock.server.embedded import free_port
from seatlock.settings import Settings
from tests import factories as make
from tests.conftest import TEST_SECRET
from tests.support import PASSWORD, RESERVE, wait_for_status, watch

REPO = Path(__file__).resolve().parents[2]
SERVE = [sys.executable, "-c", "from seatlock.server.cli import main; main()", "serve"]


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def start(settings: Settings, data_dir: Path, workers: int = 1) -> Process:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEATLOCK_")}
    env |= {
        "SEATLOCK_REDIS_URL": settings.redis_url,
        "SEATLOCK_DATABASE_URL": settings.database_url,
        "SEATLOCK_JWT_SECRET": TEST_SECRET,
        "SEATLOCK_DATA_DIR": str(data_dir),
        "SEATLOCK_PORT": str(port),
        "SEATLOCK_WORKERS": str(workers),
        "SEATLOCK_BCRYPT_ROUNDS": "4",
        "SEATLOCK_LOG_LEVEL": "warning",
    }
    log = data_dir / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(SERVE, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Process(proc, port, log)


def wait_ready(process: Process, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            pytest.fail(f"serve exited:\n{process.log.read_text()}")
        try:
            if httpx.get(process.url + "/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"serve did not become ready:\n{process.log.read_text()}")


@pytest.fixture
def two_processes(base_settings: Settings) -> Iterator[tuple[Process, Process]]:
    data_dir = Path(tempfile.mkdtemp(prefix="seatlock-procs-"))
    processes = [start(base_settings, data_dir), start(base_settings, data_dir)]
    try:
        for p in processes:
            wait_ready(p)
        yield processes[0], processes[1]
    finally:
        for p in processes:
            p.proc.terminate()
        for p in processes:
            try:
                p.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.proc.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_a_change_made_through_one_process_reaches_watchers_of_the_other(
    two_processes: tuple[Process, Process], db: asyncpg.Connection
) -> None:
    first, second = two_processes
    show = await make.show(db, 4)
    async with (
        httpx.AsyncClient(base_url=first.url) as a,
        httpx.AsyncClient(base_url=second.url) as b,
    ):
        body = {"email": "racer@example.com", "password": PASSWORD, "full_name": "Racer"}
        assert (await a.post("/api/v1/auth/register", json=body)).status_code == 201
        login = await b.post("/api/v1/auth/login", json=body)  # a token from the other process
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        ws = await watch(first, show.id)  # type: ignore[arg-type]
        try:
            hold = {"screening_id": show.id, "seat_ids": show.seat_ids[:2]}
            assert (await b.post(RESERVE, json=hold, headers=headers)).status_code == 201
            await wait_for_status(ws, show.seat_ids[:2], "reserved")
            # The other process refuses the same seats: the hold lives in Redis, not in a process.
            again = await a.post(RESERVE, json=hold, headers=headers)
            assert again.status_code == 201  # re-holding one's own seats is not an error
            # Either process answers /ws/stats for both (the other's figures within a second).
            assert (await a.get("/ws/stats")).json()["total_connections"] == 1
            await _eventually_counted(b, 1)
            # A logout through one process stops the token in the other.
            assert (await a.post("/api/v1/auth/logout", headers=headers)).status_code in (200, 204)
            await _eventually_refused(b, headers)
        finally:
            await ws.close()


async def _eventually_counted(client: httpx.AsyncClient, watchers: int) -> None:
    """Another process's WebSockets reach /ws/stats with its next refresh (every second)."""
    for _ in range(100):
        if (await client.get("/ws/stats")).json()["total_connections"] == watchers:
            return
        await asyncio.sleep(0.03)
    pytest.fail("the other process's watchers are not in /ws/stats after 3 s")


async def _eventually_refused(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """Revocations reach other processes by pub/sub: allow its latency, nothing more."""
    for _ in range(100):
        if (await client.get("/api/v1/auth/me", headers=headers)).status_code == 401:
            return
        await asyncio.sleep(0.02)
    pytest.fail("the other process still accepts a logged-out token after 2 s")
