"""``seatlock serve``'s worker processes, each listening on a socket of its own (SO_REUSEPORT).

uvicorn's own supervisor binds one socket and every worker accepts from it: whichever worker wakes
first takes a whole burst of new connections, so the keep-alive connections of a proxy or a load
generator can all end up on one worker while the other cores idle (seen here: 128 of 128, and
the run's throughput a fifth lower). With SO_REUSEPORT each worker binds the port itself and the
kernel spreads new connections across the workers' sockets by their addresses.

The supervisor starts the workers, starts a new one when one dies, and on SIGINT or SIGTERM tells
them all to stop and waits for them (uvicorn's graceful shutdown). A first worker that cannot start
(the port taken, the app broken) stops the whole server instead of being started again forever. A
replacement that cannot start (PostgreSQL or Redis down while it starts: the app's start-up
connects and migrates) is started again after a pause that doubles up to RETRY_MAX_S, while the
other workers go on serving: one worker dying during an outage must not stop the server.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn
from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE

from seatlock.server.embedded import die_with_parent

logger = logging.getLogger(__name__)

POLL_S = 0.5  # how often the supervisor looks at its workers when nothing happens
RETRY_MIN_S = 1.0  # pause before starting again a replacement that could not start
RETRY_MAX_S = 30.0
STOP_MARGIN_S = 5.0  # on top of uvicorn's graceful shutdown, before a worker is killed


def can_share_port() -> bool:
    """Whether this platform lets several sockets listen on one port (Linux, BSDs)."""
    return hasattr(socket, "SO_REUSEPORT")


def listener(host: str, port: int, *, shared: bool = True) -> socket.socket:
    """A socket bound to ``host:port`` next to the other workers' (SO_REUSEPORT); ``shared``
    False: bound alone, which fails while anything listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR: the connections of a server that stopped a moment ago do not conflict.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def taken(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be ours alone, or None. Another server listening there with
    SO_REUSEPORT (a second ``seatlock serve``, an older version left running) would let the
    workers bind next to it, and the kernel would spread the connections over both."""
    try:
        listener(host, port, shared=False).close()
    except OSError as exc:
        return exc
    return None


def run_worker(options: dict[str, Any]) -> None:
    """One worker process: uvicorn with ``options`` (uvicorn.Config's) on a socket of its own."""
    config = uvicorn.Config(**options)
    # uvicorn ends a worker stopped by SIGTERM by raising SIGTERM again once it has shut down,
    # under the handler it found at start: this one writes the queued log lines first.
    signal.signal(signal.SIGTERM, _write_logs_then_die)
    # A worker never outlives its supervisor, killed by SIGKILL (the OOM killer, a manager that
    # kills only the main pid) included: it would keep the port, answer /health/live without
    # Redis or PostgreSQL, and stop the next server from starting. SIGTERM: a graceful stop.
    die_with_parent(signal.SIGTERM)()
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # gone before the line above
        raise SystemExit(0)
    try:
        try:
            sock = listener(config.host, config.port)
        except OSError as exc:
            logger.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
            raise SystemExit(STARTUP_FAILURE) from None
        # uvicorn raises the Ctrl-C it caught again once it has shut down gracefully; as in
        # uvicorn.run, that is the end of the worker, not an error to print.
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        write_logs()


def write_logs() -> None:
    """The lines still queued for the background writer (the whole shutdown's), written before
    the worker ends: a multiprocessing child ends with os._exit, without atexit's
    logging.shutdown. A SIGTERM from here on is ignored: the supervisor sends one after a Ctrl-C
    reached the workers too, and its handler, run in the middle of this very flush, found the
    writer already stopping and ended the worker before the lines were out."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.shutdown()


def _write_logs_then_die(signum: int, frame: FrameType | None) -> None:
    """The lines still queued for the background writer, then the signal's default end."""
    logging.shutdown()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def serve(options: dict[str, Any], workers: int) -> int:
    """Run ``workers`` worker processes until SIGINT or SIGTERM; returns the exit status."""
    host, port = str(options.get("host", "127.0.0.1")), int(options.get("port", 8000))
    if port and (why := taken(host, port)) is not None:
        logger.error("cannot listen on %s:%d: %s (is another server running?)", host, port, why)
        return STARTUP_FAILURE
    context = multiprocessing.get_context("spawn")
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start() -> BaseProcess:
        process = context.Process(target=run_worker, args=(options,), name="seatlock-worker")
        process.start()
        return process

    processes = [start() for _ in range(workers)]
    replaced: set[int] = set()  # slots whose worker is a replacement (one died before it)
    pauses: dict[int, float] = {}  # slot -> the pause after its replacement's next failure
    retry_at: dict[int, float] = {}  # slot -> when to start again a replacement that failed
    status = 0
    try:
        while not stopping:
            wait([p.sentinel for i, p in enumerate(processes) if i not in retry_at], POLL_S)
            for index, process in enumerate(processes):
                if process.is_alive() or stopping:
                    continue
                if index in retry_at:
                    if time.monotonic() >= retry_at[index]:
                        del retry_at[index]
                        processes[index] = start()
                    continue
                forget_metrics(process)
                if process.exitcode == STARTUP_FAILURE:
                    if index not in replaced:  # a first worker: the port taken, the app broken
                        logger.error("a worker could not start; stopping")
                        status = STARTUP_FAILURE
                        stopping.append(signal.SIGTERM)
                        break
                    pause = pauses.get(index, RETRY_MIN_S)
                    logger.warning("a new worker could not start; trying again in %.0f s", pause)
                    pauses[index] = min(pause * 2, RETRY_MAX_S)
                    retry_at[index] = time.monotonic() + pause
                    continue
                logger.warning("worker %s exited (%s); starting one", process.pid, process.exitcode)
                pauses.pop(index, None)  # it had started: a new failure starts the pauses anew
                replaced.add(index)
                processes[index] = start()
    finally:
        _stop_all(processes, (options.get("timeout_graceful_shutdown") or 10) + STOP_MARGIN_S)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def forget_metrics(process: BaseProcess) -> None:
    """Drop a dead worker's live gauges (livesum, livemin) from /metrics; its counters stay."""
    if process.pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]


def _stop_all(processes: list[BaseProcess], seconds: float) -> None:
    # A Ctrl-C in a terminal reached the workers too; SIGTERM once more does no harm (uvicorn
    # shuts down gracefully on either) and reaches them when only the supervisor was told.
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            logger.warning("worker %s did not stop in time; killing it", process.pid)
            process.kill()
            process.join()
