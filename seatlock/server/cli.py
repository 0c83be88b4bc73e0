"""The seatlock command: serve, migrate, create-admin, seed-demo, bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import getpass
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from seatlock.process import FEW_OPEN_FILES, end_cleanly_on_sigterm, raise_open_files_limit
from seatlock.server import logs
from seatlock.server.embedded import EmbeddedError, EmbeddedPostgres, EmbeddedRedis
from seatlock.server.watchdog import OnRestart, Server, Watchdog
from seatlock.settings import PREFIX, Settings

logger = logging.getLogger("seatlock")
LOCK_FILE = "serve.lock"  # in the data directory, while a serve runs its embedded servers


@contextlib.contextmanager
def backing_services(settings: Settings, on_restart: OnRestart | None = None) -> Iterator[Settings]:
    """Start embedded servers for whatever URL is not configured; yield settings with both URLs.

    The URLs also go into the environment, so uvicorn's worker processes find them. While the
    block runs, a watchdog thread restarts an embedded server that dies (``on_restart(name)``
    after each restart); it is stopped before the servers are, so none restarts while stopping.
    """
    with contextlib.ExitStack() as stack:
        try:
            servers = _start_embedded(settings, stack)
        except EmbeddedError as exc:  # a taken port, no binaries, a server that would not start
            raise SystemExit(f"seatlock: {exc}") from None
        watchdog = Watchdog(servers, on_restart)
        watchdog.start()
        stack.callback(watchdog.stop)
        redis_url, database_url = settings.redis_url, settings.database_url
        for server in servers:
            if isinstance(server, EmbeddedRedis):
                redis_url = server.url
            elif isinstance(server, EmbeddedPostgres):
                database_url = server.url
        os.environ[PREFIX + "REDIS_URL"] = redis_url
        os.environ[PREFIX + "DATABASE_URL"] = database_url
        yield settings.replace(redis_url=redis_url, database_url=database_url)


def _start_embedded(settings: Settings, stack: contextlib.ExitStack) -> list[Server]:
    """Start the servers whose URL is empty (stopped by ``stack``); log where they are."""
    servers: list[Server] = []
    if not (settings.redis_url and settings.database_url):
        _lock_data_dir(settings.data_dir, stack)
    if not settings.redis_url:
        redis = EmbeddedRedis(settings.data_dir / "redis", port=settings.embedded_redis_port)
        stack.callback(redis.stop)
        redis.start()
        logger.info("embedded Redis at %s (data in %s)", redis.url, redis.data_dir)
        servers.append(redis)
    if not settings.database_url:
        bindir = Path(settings.embedded_postgres_bin) if settings.embedded_postgres_bin else None
        postgres = EmbeddedPostgres(
            settings.data_dir / "postgres" / "data",
            port=settings.embedded_postgres_port,
            bindir=bindir,
        )
        stack.callback(postgres.stop)
        postgres.start()
        logger.info("embedded PostgreSQL at %s (data in %s)", postgres.url, postgres.data_dir)
        servers.append(postgres)
    return servers


def _lock_data_dir(data_dir: Path, stack: contextlib.ExitStack) -> None:
    """One ``seatlock serve`` per data directory of embedded servers, held until it stops (the
    kernel lets go of a killed one's): a second one started a second Redis on the first one's
    files, which it rewrote, before PostgreSQL's own lock file stopped it with a log dump."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / LOCK_FILE).open("a")
    stack.callback(handle.close)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise EmbeddedError(
            f"another seatlock serve runs the embedded servers of {data_dir}"
        ) from None


async def prepare(settings: Settings, seed: bool) -> None:
    """Migrate, create the configured admin when it does not exist, and seed demo data into an
    empty database.

    The configured admin is only created: an admin who changed the password since (through the
    API, perhaps after it leaked) keeps it across restarts; ``seatlock create-admin`` is the
    command that sets it again."""
    from db.migrate import migrate_database
    from db.users import ensure_configured_admin

    await reach_postgres(settings)
    await migrate_database(settings.database_url)
    if settings.admin_email and settings.admin_password:
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            await ensure_configured_admin(
                pool, settings.admin_email, settings.admin_password, settings.bcrypt_rounds
            )
        finally:
            await pool.close()
    if seed:
        from db.demo import seed_demo

        await seed_demo(settings, only_if_empty=True)


class StartupError(RuntimeError):
    """A Redis, PostgreSQL or data directory that cannot be used: one line, no traceback."""


# What a Redis or PostgreSQL that is down, elsewhere, misnamed or refusing us raises when
# reached; anything else (a bug) keeps its traceback.
POSTGRES_FAILURES = (
    OSError,  # refused, unreachable, an unknown host, no answer in time (TimeoutError)
    ValueError,  # a URL that is no PostgreSQL DSN (asyncpg's ClientConfigurationError)
    asyncpg.PostgresConnectionError,
    asyncpg.InvalidAuthorizationSpecificationError,  # no such role, a wrong password
    asyncpg.InvalidCatalogNameError,  # no such database
    asyncpg.CannotConnectNowError,  # starting up, shutting down
    asyncpg.TooManyConnectionsError,
)
REDIS_FAILURES = (
    OSError,
    ValueError,  # a URL redis-py cannot parse
    RedisConnectionError,  # refused, unreachable, a wrong password (AuthenticationError)
    RedisTimeoutError,
    ResponseError,  # NOAUTH, NOPERM: it answered, but not to us
    InvalidResponse,  # no Redis at all listens there (an HTTP server answered)
    RedisClusterException,  # no seed node of the cluster answered
)


async def reach_postgres(settings: Settings) -> None:
    """Connect to PostgreSQL once, within ``db_timeout_seconds``; StartupError if it fails."""
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=settings.db_timeout_seconds)
    except POSTGRES_FAILURES as exc:
        url = settings.database_url
        raise StartupError(unusable("PostgreSQL", url, exc, settings.db_timeout_seconds)) from None
    await conn.close()


async def reach_redis(settings: Settings) -> None:
    """PING Redis through the app's own client (its timeouts, a cluster's seed nodes);
    StartupError if it does not answer."""
    from seatlock.server.wiring import redis_client

    url, timeout = settings.redis_url, settings.redis_timeout_seconds
    try:
        redis = redis_client(settings)
    except ValueError as exc:
        raise StartupError(unusable("Redis", url, exc, timeout)) from None
    try:
        await redis.ping()
    except REDIS_FAILURES as exc:
        raise StartupError(unusable("Redis", url, exc, timeout)) from None
    finally:
        await redis.aclose()


def unusable(what: str, url: str, exc: BaseException, timeout: float) -> str:
    """``cannot reach PostgreSQL at <url>: connection refused``, the password never in it."""
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        verb, why = "reach", f"no answer in {timeout:g} s"
    elif (reason := _os_reason(exc)) is not None:
        verb, why = "reach", reason
    else:  # a bad URL, a refused login, no such database
        verb, why = "use", str(exc) or type(exc).__name__
    return _without_password(f"cannot {verb} {what} at {redact(url)}: {why}", url)


def _os_reason(exc: BaseException) -> str | None:
    """What the system said of ``exc`` or of the OSError it was raised from (redis-py wraps
    them): ``connection refused``, ``name or service not known``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror) and seen.strerror:
            return seen.strerror.lower()
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno).lower()
        seen = seen.__cause__ or seen.__context__
    return None


def redact(url: str) -> str:
    """``url`` fit for a log line: ``user:password@`` becomes ``user:***@``, and so does the value
    of a ``password=`` option."""
    scheme, sep, rest = url.partition("://")
    if sep:
        head = re.split(r"[?#]", rest, maxsplit=1)[0]
        userinfo, at, hosts = head.rpartition("@")  # the last @: a password may hold one
        if at and ":" in userinfo:
            rest = userinfo.partition(":")[0] + ":***@" + hosts + rest[len(head) :]
    return scheme + sep + re.sub(r"(?i)(password=)[^&#\s]*", r"\1***", rest)


def _without_password(line: str, url: str) -> str:
    """``line`` with the password of ``url`` masked wherever an error message repeated it."""
    userinfo = url.partition("://")[2].rpartition("@")[0]
    password = userinfo.partition(":")[2]
    return line.replace(password, "***") if len(password) > 2 else line


def seeds_demo(settings: Settings) -> bool:
    """Whether ``serve`` seeds demo data (into an empty database): only into the PostgreSQL it
    runs itself, never into one ``SEATLOCK_DATABASE_URL`` names, even when Redis is embedded."""
    return settings.seed_demo and not settings.database_url


def start_up(settings: Settings, seed: bool) -> None:
    """Before any worker starts: Redis must answer, then ``prepare``. One that cannot be reached
    stops the server with one line and status 1, as a taken port does (each worker printed a
    traceback, PostgreSQL's one 55 lines)."""

    async def run() -> None:
        await reach_redis(settings)
        await prepare(settings, seed)

    try:
        asyncio.run(run())
    except StartupError as exc:
        raise SystemExit(f"seatlock: {exc}") from None


def check_data_dir(settings: Settings) -> None:
    """The data directory exists (made if need be) and takes files, or one line says why."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=settings.data_dir):
            pass
    except OSError as exc:
        why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise SystemExit(
            f"seatlock: cannot use the data directory {settings.data_dir} ({PREFIX}DATA_DIR): {why}"
        ) from None


METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir(settings: Settings) -> Path:
    """Point prometheus-client's multi-process mode at an empty ``data_dir/metrics/<pid>``.

    It must run before prometheus-client is first imported in this process (the variable is
    read then), so the supervisor's own metrics (embedded restarts) land there too; workers are
    spawned and inherit it. One directory per supervisor, since servers may share a data_dir;
    those of supervisors no longer running are wiped (their counters would add up).
    """
    if "prometheus_client" in sys.modules:
        logger.warning("prometheus_client imported before the metrics directory was set")
    root = settings.data_dir / "metrics"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if not (old.name.isdigit() and _running(int(old.name))) or old.name == str(os.getpid()):
            shutil.rmtree(old, ignore_errors=True)
    path = root / str(os.getpid())
    path.mkdir()
    os.environ[METRICS_DIR_VARIABLE] = str(path)
    return path


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def count_restart(server: str) -> None:
    """``seatlock_embedded_restarts_total{server}``: imported here, after ``metrics_dir`` set the
    multi-process directory, so the supervisor's count reaches /metrics with the workers'."""
    from seatlock.metrics import EMBEDDED_RESTARTS

    EMBEDDED_RESTARTS.labels(server=server).inc()


def open_files_limit() -> None:
    """Raise the soft limit of open files to the hard one (``raise_open_files_limit``), say so,
    and warn when it stays low: every connection costs a worker one."""
    before, after = raise_open_files_limit()
    if after != before:
        logger.info("open files: soft limit raised from %d to %d", before, after)
    if after < FEW_OPEN_FILES:
        logger.warning(
            "open files are limited to %d per process (ulimit -n): each worker serves fewer"
            " connections and WebSocket watchers than that; raise the hard limit"
            " (LimitNOFILE= under systemd)",
            after,
        )


def _stop_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(settings: Settings) -> None:
    check_data_dir(settings)  # one line, not a traceback from whatever writes there first
    metrics_dir(settings)  # first of the rest: see metrics_dir
    import uvicorn

    from seatlock.accounts.tokens import load_or_create_secret
    from seatlock.server import workers as worker_processes
    from seatlock.server.serving import http_protocol, websocket_options

    open_files_limit()  # before any child starts: the workers inherit it
    load_or_create_secret(settings)  # before the workers start, so they share one secret
    with backing_services(settings, on_restart=count_restart) as live:
        start_up(live, seed=seeds_demo(settings))
        workers = live.workers or os.cpu_count() or 1
        logger.info("seatlock on http://%s:%d with %d worker(s)", live.host, live.port, workers)
        options: dict[str, Any] = {
            "app": "seatlock.server.wiring:create_app",
            "factory": True,
            "host": live.host,
            "port": live.port,
            "loop": "uvloop",
            "http": http_protocol(live.request_read_timeout_seconds),
            **websocket_options(live.ws_per_message_deflate),
            # Forwarding headers are trusted by SEATLOCK_TRUSTED_PROXIES only (api/auth.py).
            "proxy_headers": False,
            # Every worker logs as the supervisor does (seatlock/server/logs.py), its records
            # written by a thread; our access log (api/observe.py) replaces uvicorn's.
            "log_config": logs.log_config(live, background=True),
            "log_level": live.log_level,
            "access_log": False,
            "timeout_graceful_shutdown": 10,
        }
        if workers > 1 and worker_processes.can_share_port():
            status = worker_processes.serve(options, workers)
        else:
            # uvicorn ends a stop by SIGTERM by raising it again once shut down, under the
            # handler it found: this one ends the server as a Ctrl-C does (status 0), through
            # backing_services' stop of the embedded servers and the last log lines, not dead
            # on the spot mid-exit (one worker per container, stopped by docker or systemd).
            signal.signal(signal.SIGTERM, _stop_quietly)
            uvicorn.run(**options, workers=workers)
            status = 0
    if status:
        sys.exit(status)


def migrate_command(settings: Settings) -> None:
    with backing_services(settings) as live:
        asyncio.run(prepare(live, seed=False))
        print("migrations applied")


def create_admin(settings: Settings, email: str, password: str | None) -> None:
    from db.migrate import migrate
    from db.users import ensure_admin

    password = password or os.environ.get(PREFIX + "ADMIN_PASSWORD") or getpass.getpass()

    async def run(live: Settings) -> int:
        await reach_postgres(live)
        pool = await asyncpg.create_pool(live.database_url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            return await ensure_admin(pool, email, password, settings.bcrypt_rounds)
        finally:
            await pool.close()

    with backing_services(settings) as live:
        user_id = asyncio.run(run(live))
    print(f"admin {email} has id {user_id}")


def seed_command(settings: Settings) -> None:
    with backing_services(settings) as live:
        asyncio.run(prepare(live, seed=False))
        from db.demo import seed_demo

        print(asyncio.run(seed_demo(live, only_if_empty=False)))


BENCH_HELP = "run the benchmark and print its table"


def bench_command(argv: list[str]) -> int:
    """``seatlock bench``: the benchmark lives in loadtests/, imported only when it runs, so the
    server's import graph never loads the load tools."""
    from loadtests import bench

    end_cleanly_on_sigterm()  # stopped by timeout or kill: its servers and scratch data go too
    parser = argparse.ArgumentParser(prog="seatlock bench", description=BENCH_HELP)
    bench.add_arguments(parser)
    return bench.run(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="seatlock", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve the API (embedded Redis/PostgreSQL unless URLs are set)")
    sub.add_parser(
        "migrate",
        help="apply database migrations (and create SEATLOCK_ADMIN_EMAIL's admin if missing)",
    )
    admin = sub.add_parser("create-admin", help="create an admin or promote an existing account")
    admin.add_argument("email")
    admin.add_argument("--password", help="default: $SEATLOCK_ADMIN_PASSWORD or a prompt")
    sub.add_parser("seed-demo", help="add the demo cinema, rooms, movies, screenings and accounts")
    sub.add_parser("bench", help=BENCH_HELP, add_help=False)  # its options: bench_command
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a setting that cannot be used: say which, before anything starts
        parser.error(str(exc))
    logs.configure(settings)
    if args.command == "serve":
        serve(settings)
    elif args.command in ("migrate", "create-admin", "seed-demo"):
        try:
            if args.command == "migrate":
                migrate_command(settings)
            elif args.command == "create-admin":
                create_admin(settings, args.email, args.password)
            else:
                seed_command(settings)
        except StartupError as exc:  # a PostgreSQL that cannot be reached: one line, as serve
            raise SystemExit(f"seatlock: {exc}") from None
    elif args.command == "bench":
        sys.exit(bench_command(rest))
    else:  # pragma: no cover - argparse refuses unknown commands
        parser.error(f"unknown command {args.command}")
    sys.exit(0)
