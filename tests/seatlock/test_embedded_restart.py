"""Embedded servers on fixed ports, and restarted by the supervisor when they die (kill -9)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from db.demo import DEMO_EMAIL, DEMO_PASSWORD
from seatlock.server.embedded import EmbeddedError, EmbeddedPostgres, EmbeddedRedis, free_port
from seatlock.server.watchdog import FIRST_DELAY, MAX_DELAY, STABLE_SECONDS, Backoff, Watchdog
from tests.support import (
    REPO,
    SERVE,
    Served,
    processes_mentioning,
    scratch_dir,
    serve_env,
    serving,
    wait_until_gone,
)

RECOVERY_S = 20.0


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with scratch_dir("seatlock-restart-") as path:
        yield path


def pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def eventually(check: Callable[[], bool], seconds: float = RECOVERY_S) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_a_fixed_port_is_used_and_a_taken_one_is_refused(data_dir: Path) -> None:
    port = free_port()
    first = EmbeddedRedis(data_dir / "one", persistent=False, port=port)
    try:
        assert first.start() == f"redis://127.0.0.1:{port}/0"
        with pytest.raises(EmbeddedError, match=f"port 127.0.0.1:{port} is taken"):
            EmbeddedRedis(data_dir / "two", persistent=False, port=port).start()
        postgres = EmbeddedPostgres(data_dir / "pg" / "data", persistent=False, port=port)
        with pytest.raises(EmbeddedError, match=f"embedded PostgreSQL: port 127.0.0.1:{port}"):
            postgres.start()  # refused before initdb runs
        assert not (data_dir / "pg" / "data" / "PG_VERSION").exists()
        nowhere = EmbeddedPostgres(data_dir / "pg" / "data", bindir=data_dir / "nowhere")
        with pytest.raises(EmbeddedError, match="no postgres and initdb in"):
            nowhere.start()
    finally:
        first.stop()


def test_backoff_grows_while_a_server_keeps_dying() -> None:
    backoff = Backoff()
    assert backoff.next_delay() == 0  # the first death: at once
    backoff.started_at = time.monotonic()
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays[:3] == [FIRST_DELAY, FIRST_DELAY * 2, FIRST_DELAY * 4]
    assert delays[-1] == MAX_DELAY
    backoff.started_at = time.monotonic() - STABLE_SECONDS  # it stayed up a while
    assert backoff.next_delay() == 0


def test_the_watchdog_restarts_a_killed_redis_until_stopped(data_dir: Path) -> None:
    redis = EmbeddedRedis(data_dir / "redis", persistent=True)
    restarts: list[str] = []
    redis.start()
    watchdog = Watchdog([redis], restarts.append, poll_seconds=0.05)
    watchdog.start()
    try:
        port, first = redis.port, redis.proc
        assert first is not None
        first.kill()
        assert eventually(lambda: restarts == ["redis"] and pings(port)), restarts
        assert redis.port == port and redis.proc is not first
        watchdog.stop()
        assert redis.proc is not None
        redis.proc.kill()
        redis.proc.wait()
        time.sleep(0.3)
        assert restarts == ["redis"]  # stopped: no restart
    finally:
        watchdog.stop()
        redis.stop()
    assert processes_mentioning(data_dir) == []


class SlowToStart:
    """A server whose start takes ``seconds`` (PostgreSQL replaying its WAL after a crash)."""

    name: ClassVar[str] = "slow"
    port = 0

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> str:
        self.starts += 1
        if self.proc is not None:  # a restart
            time.sleep(self.seconds)
        self.proc = subprocess.Popen(["sleep", "600"])
        return "slow://"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def test_a_slow_restart_does_not_hold_up_another_servers(data_dir: Path) -> None:
    slow = SlowToStart(seconds=5.0)
    redis = EmbeddedRedis(data_dir / "redis", persistent=False)
    slow.start()
    redis.start()
    restarts: list[str] = []
    watchdog = Watchdog([slow, redis], restarts.append, poll_seconds=0.05)  # slow first
    watchdog.start()
    try:
        assert slow.proc is not None and redis.proc is not None
        slow.proc.kill()
        time.sleep(0.2)  # its restart under way
        redis.proc.kill()
        assert eventually(lambda: restarts == ["redis"] and pings(redis.port), 3.0), restarts
        assert eventually(lambda: restarts == ["redis", "slow"], 10.0), restarts
    finally:
        watchdog.stop()
        redis.stop()
        slow.stop()
    assert processes_mentioning(data_dir) == []


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def served(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Served]:
    ports = {"embedded_redis_port": free_port(), "embedded_postgres_port": free_port()}
    settings = {"workers": request.param, "bcrypt_rounds": 4, "log_level": "info", **ports}
    # Every worker up before the test kills Redis: a worker still starting then fails its
    # startup, and a worker that cannot start stops the server (seatlock/server/workers.py).
    with serving(data_dir, path="/", seconds=40, started=request.param, **settings) as served:
        yield served


def port_of(served: Served, name: str) -> int:
    """The fixed port the server was given for its embedded ``name`` (redis, postgres)."""
    return int(served.env[f"SEATLOCK_EMBEDDED_{name.upper()}_PORT"])


def child(served: Served, marker: str) -> int:
    for pid in served.children():
        if marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
            return pid
    raise AssertionError(f"no child {marker!r} of the server")


ANSWERS: list[str] = []  # the last /health/ready answer, for a failure's message


def ready(url: str) -> bool:
    try:
        answer = httpx.get(url + "/health/ready", timeout=2)
    except httpx.TransportError as exc:
        ANSWERS[:] = [repr(exc)]
        return False
    ANSWERS[:] = [f"{answer.status_code} {answer.text}"]
    return answer.status_code == 200


def story(served: Served) -> str:
    """The last readiness answer, and the server's log without its access lines (a readiness
    poll writes one every 0.1 s)."""
    lines = served.log.read_text().splitlines()
    told = "\n".join(line for line in lines if " seatlock.access: " not in line)[-6000:]
    return f"last /health/ready: {ANSWERS[-1] if ANSWERS else None}\n{told}"


def hold_and_book(url: str, screening: int) -> bool:
    """Hold two free seats and book them; False on any refusal (the caller retries)."""
    with httpx.Client(base_url=url, timeout=5) as client:
        r = client.post("/api/v1/auth/login", json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD})
        if r.status_code != 200:
            return False
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        seats = client.get(f"/api/v1/seat-reservations/screening/{screening}/availability")
        if seats.status_code != 200:
            return False
        free = [s["seat"]["id"] for s in seats.json() if s["status"] == "available"][:2]
        body = {"screening_id": screening, "seat_ids": free}
        if client.post("/api/v1/seat-reservations/reserve", json=body, headers=auth).is_error:
            return False
        body["payment_id"] = f"pay-{time.monotonic_ns()}"
        r = client.post("/api/v1/tickets/book-from-reservation", json=body, headers=auth)
        return r.status_code == 201


def test_killed_servers_come_back_and_bookings_recover(served: Served) -> None:
    log = served.log.read_text()
    redis_at = f"embedded Redis at redis://127.0.0.1:{port_of(served, 'redis')}/0"
    assert f"{redis_at} (data in {served.data_dir / 'redis'})" in log
    postgres_port = port_of(served, "postgres")
    postgres_at = f"embedded PostgreSQL at postgresql://postgres@127.0.0.1:{postgres_port}"
    assert f"{postgres_at}/seatlock (data in {served.data_dir / 'postgres' / 'data'})" in log
    screenings = httpx.get(served.url + "/api/v1/screenings/").json()
    assert hold_and_book(served.url, screenings[0]["id"])
    redis_pid, postmaster = child(served, "redis-server"), child(served, "postgres -D")

    os.kill(postmaster, signal.SIGKILL)
    os.kill(redis_pid, signal.SIGKILL)
    started = time.monotonic()
    assert eventually(lambda: ready(served.url)), story(served)
    assert eventually(lambda: hold_and_book(served.url, screenings[1]["id"]))
    recovered = time.monotonic() - started
    assert recovered < RECOVERY_S

    # The watchdog says "restarted" once a server's start returned, which can be after the app
    # already reconnected to it (and booked): both lines, and their counts, come in time.
    lines = [  # text format: time LEVEL [pid] logger: message
        rf"WARNING \[\d+\] seatlock.server.watchdog: embedded {name} restarted"
        for name in ("postgres", "redis")
    ]
    assert eventually(lambda: all(re.search(line, served.log.read_text()) for line in lines))
    log = served.log.read_text()
    assert f"embedded postgres (pid {postmaster}) exited with -9" in log
    assert f"embedded redis (pid {redis_pid}) exited with -9" in log
    assert child(served, "redis-server") != redis_pid
    assert child(served, "postgres -D") != postmaster
    # The supervisor's count reaches /metrics, summed with the workers' files.
    counts = [
        f'seatlock_embedded_restarts_total{{server="{name}"}} 1.0' for name in ("postgres", "redis")
    ]
    assert eventually(lambda: all(c in httpx.get(served.url + "/metrics").text for c in counts))

    served.proc.send_signal(signal.SIGINT)  # a clean stop: nothing restarted while stopping
    assert served.proc.wait(timeout=30) == 0, served.log.read_text()[-3000:]
    assert wait_until_gone(served.data_dir) == []
    assert served.log.read_text().count("restarted (pid") == 2


def test_serve_refuses_a_taken_port_in_one_line(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = serve_env(data_dir=data_dir, embedded_postgres_port=port)
        result = subprocess.run(
            SERVE, cwd=REPO, env=env, capture_output=True, timeout=60, check=False
        )
    assert result.returncode == 1
    last = result.stderr.decode().strip().splitlines()[-1]
    assert last.startswith(f"seatlock: embedded PostgreSQL: port 127.0.0.1:{port} is taken"), last
    assert "Traceback" not in result.stderr.decode()
    assert processes_mentioning(data_dir) == []  # the Redis it had started was stopped
