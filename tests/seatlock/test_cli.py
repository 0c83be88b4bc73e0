"""``seatlock serve`` end to end: embedded Redis and PostgreSQL, demo data, clean shutdown."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from db.demo import DEMO_EMAIL, DEMO_PASSWORD
from seatlock.server.embedded import free_port
from tests.support import processes_mentioning, wait_until_gone

REPO = Path(__file__).resolve().parents[2]
SERVE = [sys.executable, "-c", "from seatlock.server.cli import main; main()", "serve"]


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    url: str
    log: Path

    def children(self) -> list[int]:
        """Pids whose parent is the server: its redis-server and postmaster."""
        pids = []
        for entry in Path("/proc").glob("[0-9]*/status"):
            try:
                status = entry.read_text()
            except OSError:
                continue
            if f"\nPPid:\t{self.proc.pid}\n" in status:
                pids.append(int(entry.parent.name))
        return pids


@pytest.fixture
def served() -> Iterator[Served]:
    data_dir = Path(tempfile.mkdtemp(prefix="seatlock-cli-"))  # outside pytest's 0700 tmp root
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEATLOCK_")}
    env |= {
        "SEATLOCK_DATA_DIR": str(data_dir),
        "SEATLOCK_PORT": str(port),
        "SEATLOCK_WORKERS": "1",
        "SEATLOCK_BCRYPT_ROUNDS": "4",
        "SEATLOCK_LOG_LEVEL": "warning",
    }
    log = data_dir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(SERVE, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    served = Served(proc, data_dir, f"http://127.0.0.1:{port}", log)
    try:
        wait_for_welcome(served)
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        wait_until_gone(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def wait_for_welcome(served: Served, seconds: float = 25) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if served.proc.poll() is not None:
            pytest.fail(f"serve exited with {served.proc.returncode}:\n{served.log.read_text()}")
        try:
            if httpx.get(served.url + "/", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"serve did not answer in {seconds} s:\n{served.log.read_text()}")


def check_demo_data(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        movies = client.get("/api/v1/movies/")
        assert movies.status_code == 200
        assert len(movies.json()) >= 8
        assert client.get("/api/v1/screenings/").json() != []
        r = client.post("/api/v1/auth/login", json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD})
        assert r.status_code == 200, r.text
        me = client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}
        )
        assert me.json()["email"] == DEMO_EMAIL


def gone(pids: list[int], seconds: float = 10) -> bool:
    """True once none of ``pids`` is alive (a zombie waiting for its reaper counts as dead)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_serve_seeds_demo_data_and_stops_cleanly_on_sigint(served: Served) -> None:
    check_demo_data(served.url)
    children = served.children()
    assert len(children) == 2, children
    served.proc.send_signal(signal.SIGINT)
    assert served.proc.wait(timeout=20) == 0, served.log.read_text()
    assert gone(children, seconds=1)
    assert processes_mentioning(served.data_dir) == []


def test_children_die_with_a_killed_server(served: Served) -> None:
    children = served.children()
    assert len(children) == 2, children
    served.proc.kill()
    served.proc.wait(timeout=5)
    assert gone(children), children
    assert wait_until_gone(served.data_dir) == []
