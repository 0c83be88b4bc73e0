"""``seatlock serve``'s worker processes: each on a socket of its own, new connections spread
over all of them, a dead worker replaced, every worker gone when the server stops."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from seatlock.server.embedded import free_port
from seatlock.server.workers import can_share_port, listener

pytestmark = pytest.mark.skipif(not can_share_port(), reason="needs SO_REUSEPORT")

OPTIONS = (
    "{'app': 'tests.api.pid_app:app', 'host': '127.0.0.1', 'port': %d, 'lifespan': 'off',"
    " 'log_level': 'warning', 'timeout_graceful_shutdown': 2}"
)
FAILING_START = OPTIONS.replace("pid_app:app", "pid_app:failing_start").replace("'off'", "'on'")


def supervisor(
    port: int, log: Path | None = None, options: str = OPTIONS, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The supervisor and its workers in a process group of their own, as under a terminal."""
    code = (
        "import sys; from seatlock.server.workers import serve;"
        f" sys.exit(serve({options % port}, 2))"
    )
    out = log.open("wb") if log is not None else None
    try:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            stderr=out,
            stdout=out,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    finally:
        if out is not None:
            out.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port, log = free_port(), tmp_path / "serve.log"
    proc = supervisor(port, log)
    try:
        yield proc, port, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def pids_of_connections(port: int, count: int) -> Counter[int]:
    """The worker that answered each of ``count`` new connections, made at the same moment."""

    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        writer.close()
        await writer.wait_closed()
        return int(body)

    return Counter(await asyncio.gather(*(one() for _ in range(count))))


async def until_serving(port: int, workers: int = 2, seconds: float = 30) -> Counter[int]:
    deadline = time.monotonic() + seconds
    while True:
        try:
            pids = await pids_of_connections(port, 32)
            if len(pids) >= workers and all(_alive(pid) for pid in pids):
                return pids
        except OSError:
            pass
        assert time.monotonic() < deadline, "the workers did not start"
        await asyncio.sleep(0.2)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whoever adopted it, maybe late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_new_connections_are_spread_over_the_workers(
    served: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    _, port, _ = served
    await until_serving(port)
    pids = await pids_of_connections(port, 64)
    assert len(pids) == 2
    # Spread by the kernel's hash of each connection: 64 land evenly give or take a few (a
    # split below 12 has odds under one in a million); one shared socket gave 128 of 128.
    assert min(pids.values()) >= 12, pids


async def test_a_dead_worker_is_replaced_and_ctrl_c_stops_them_all_quietly(
    served: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    proc, port, log = served
    first = set(await until_serving(port))
    victim = first.pop()
    os.kill(victim, signal.SIGKILL)  # what was waiting in its socket's queue is reset
    workers = set(await until_serving(port))
    assert victim not in workers and len(workers - first) == 1
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the supervisor and every worker get it
    assert await asyncio.to_thread(proc.wait, 20) == 0
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "Traceback" not in log.read_text(), log.read_text()


async def test_the_workers_do_not_outlive_a_killed_supervisor(
    served: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    """kill -9 of the supervisor alone (the OOM killer; a manager that kills the main pid):
    orphaned workers would keep the port and answer without their supervisor."""
    proc, port, _ = served
    workers = set(await until_serving(port))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while any(_running(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers still running: {workers}"
        await asyncio.sleep(0.1)
    with pytest.raises(OSError):  # nobody listens there any more
        await pids_of_connections(port, 1)


def test_a_port_taken_stops_the_server_instead_of_restarting_workers() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        proc = supervisor(taken.getsockname()[1])
        assert proc.wait(timeout=30) == 3  # uvicorn's STARTUP_FAILURE
    finally:
        taken.close()


def test_a_port_another_server_shares_stops_the_server_before_it_starts_workers(
    tmp_path: Path,
) -> None:
    """Another server listening with SO_REUSEPORT (a second seatlock serve, an older one left
    running) would take part of the connections: the supervisor refuses to start next to it."""
    other = listener("127.0.0.1", free_port())
    other.listen()
    log = tmp_path / "serve.log"
    try:
        proc = supervisor(other.getsockname()[1], log)
        try:
            assert proc.wait(timeout=20) == 3  # uvicorn's STARTUP_FAILURE, no worker started
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        other.close()
    assert "is another server running?" in log.read_text()


async def test_a_replacement_that_cannot_start_is_tried_again_while_the_other_serves(
    tmp_path: Path,
) -> None:
    port, log, marker = free_port(), tmp_path / "serve.log", tmp_path / "backend-down"
    proc = supervisor(port, log, FAILING_START, {"PID_APP_FAIL_WHILE": str(marker)})
    try:
        first = set(await until_serving(port))
        marker.touch()  # from now on a new worker's start-up fails, as with PostgreSQL down
        victim = first.pop()
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while "could not start; trying again in 2 s" not in log.read_text():  # failed twice
            assert proc.poll() is None, log.read_text()  # the server goes on
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
        assert set(await pids_of_connections(port, 16)) == first  # the other worker serves
        marker.unlink()  # the backend is back: the next try starts
        workers = set(await until_serving(port))
        assert victim not in workers and first < workers
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
