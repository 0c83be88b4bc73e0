"""``seatlock serve`` end to end: embedded Redis and PostgreSQL, demo data, clean shutdown."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from db.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.support import Served, processes_mentioning, scratch_dir, serving, wait_until_gone


@pytest.fixture
def served() -> Iterator[Served]:
    """``seatlock serve`` with its embedded Redis and PostgreSQL, once it welcomes visitors."""
    with (
        scratch_dir("seatlock-cli-") as data_dir,
        serving(
            data_dir, path="/", seconds=25, workers=1, bcrypt_rounds=4, log_level="warning"
        ) as served,
    ):
        yield served


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
