"""The asyncpg pools: bounded, with JSON codecs, created once per process; and where the reads
that tolerate lag go (a streaming replica while it keeps up, else the primary)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeAlias, TypeVar

import asyncpg
import orjson

from seatlock.failfast import FailFast
from seatlock.heartbeats import Beat, pause
from seatlock.metrics import DB_NOT_ANSWERING, DB_REPLICA_LAG, DB_REPLICA_READS

if TYPE_CHECKING:
    from asyncpg.connection import LoggedQuery
    from asyncpg.pool import PoolConnectionProxy

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 10.0  # how long stopping waits for connections in use to come back
DB_TIMEOUT_S = 10.0  # the longest wait for a connection or a statement: SEATLOCK_DB_TIMEOUT_SECONDS
CANCEL_GRACE_S = 1.0  # at most (else a quarter of the timeout): the wait for a cancel, _GivenUp

# PostgreSQL cannot answer now: down, restarting, in recovery, out of connections or resources,
# or the connection broke (also while a pool releases it, after the work was done). The api
# answers these with 503 and Retry-After (api/errors.py); anything else from asyncpg is a bug or
# a refusal the caller names (UniqueViolationError ...). TimeoutError (command_timeout) and
# ConnectionRefusedError are OSErrors.
DATABASE_DOWN: tuple[type[Exception], ...] = (
    asyncpg.exceptions.PostgresConnectionError,  # 08*: lost, refused, failed, does not exist
    # 57*: admin or crash shutdown, "the database system is starting up / in recovery"
    # (CannotConnectNowError), a cancelled query
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,  # 53*: too many connections, disk, memory
    asyncpg.exceptions.PostgresSystemError,  # 58*: I/O error on the server
    # 25006: a standby refusing a write: the primary the URL names was demoted by a failover
    # (or is being restarted as a standby) and the URL does not lead to the new one yet.
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.InterfaceError,  # "connection is closed", pool closing
    # A protocol error on a connection whose backend ended (a FATAL while idle, the close not
    # yet seen): its next statement, or its release to the pool.
    asyncpg.exceptions.InternalClientError,
    OSError,
)
# PostgreSQL is down, or refused the statement (anything asyncpg raises for it).
DATABASE_FAILED: tuple[type[Exception], ...] = (*DATABASE_DOWN, asyncpg.PostgresError)

# Anything queries can run on: a connection, or a connection borrowed from a pool; or a pool.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
Executor: TypeAlias = "asyncpg.Pool[Any] | Conn"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, schema="pg_catalog", encoder=_dumps, decoder=orjson.loads, format="text"
        )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class KeptConnection:
    """A pool connection a writer keeps from one batch to the next while work keeps coming:
    returning it costs a round trip (the pool's reset) before the next batch. ``let_go`` when
    idle or when it failed (the pool replaces one that broke); errors of ``quiet`` kinds while
    returning it are ignored."""

    def __init__(self, pool: asyncpg.Pool, quiet: tuple[type[BaseException], ...]) -> None:
        self._pool = pool
        self._quiet = quiet
        self._conn: PoolConnectionProxy[Any] | None = None

    async def get(self) -> PoolConnectionProxy[Any]:
        if self._conn is not None and _lost(self._conn):
            await self.let_go()  # ended while kept (PostgreSQL restarted, the backend was ended)
        if self._conn is None:
            self._conn = await self._pool.acquire()
        return self._conn

    async def let_go(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*self._quiet):
                await self._pool.release(conn)


def _lost(conn: PoolConnectionProxy[Any]) -> bool:
    """The connection is closed; asyncpg takes a pool connection that broke back into its pool
    at once, after which its proxy answers every call with an InterfaceError."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


class NotAnswering(ConnectionError):
    """PostgreSQL stopped answering: a wait for a connection, a new connection or a statement
    timed out, and no probe has had an answer since. A 503 with Retry-After (api/errors.py)."""


class BoundedPool(asyncpg.Pool):
    """An asyncpg pool whose ``acquire`` waits at most ``acquire_timeout`` unless told otherwise,
    and answers at once while PostgreSQL is known not to answer.

    asyncpg's own ``acquire`` waits without end by default, and ``fetch``, ``execute`` and the
    rest acquire with that default: with PostgreSQL answering nothing, the requests beyond the
    pool's size queued there and got their 503 in waves, one timeout per pool's worth (80 at
    once at a 1 s timeout: the last after 9 s). Bounded, a request waits one timeout for a
    connection at most, and one more for a statement on a connection it got just in time.

    Fail fast (seatlock/failfast.py): once a wait on PostgreSQL times out (for a connection of
    the pool, a new one, or a statement run on a connection from ``acquire``), ``acquire``
    raises NotAnswering at once until a probe (``SELECT 1`` on a connection of the pool, as any
    request would) has an answer.

    A statement that timed out (or was cancelled) costs its caller no more than that: its
    connection is dropped when PostgreSQL has not acknowledged the cancel soon after (_GivenUp),
    instead of the ROLLBACK of its transaction and its return to the pool each waiting another
    timeout for that acknowledgement.

    ``Pool``'s methods acquire through ``self.acquire()``; tests/db/test_pool.py fails loudly
    when they stop doing so."""

    __slots__ = ("_fail_fast", "_given_init", "acquire_timeout", "cancel_grace")

    def __init__(
        self,
        *args: Any,
        acquire_timeout: float,
        what: str = "PostgreSQL",
        init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, init=self._connected, **kwargs)
        self.acquire_timeout = acquire_timeout
        self.cancel_grace = min(CANCEL_GRACE_S, acquire_timeout / 4)
        self._given_init = init  # Pool's own _init is ours, which calls it
        self._fail_fast = FailFast(what, self._select_one, logger)

    async def _connected(self, conn: asyncpg.Connection) -> None:
        """A new connection: the given ``init``, then its watch for statements given up on."""
        if self._given_init is not None:
            await self._given_init(conn)
        conn.add_query_logger(_GivenUp(conn, self))

    @property
    def answering(self) -> bool:
        """False from a timeout until a probe has had an answer."""
        return self._fail_fast.answering

    def acquire(self, *, timeout: float | None = None) -> Any:
        if not self._fail_fast.answering:
            DB_NOT_ANSWERING.inc()
            raise NotAnswering(f"{self._fail_fast.what} is not answering")
        wait = self.acquire_timeout if timeout is None else timeout
        return _Acquire(super().acquire(timeout=wait), self)

    def timed_out(self) -> None:
        """A wait on PostgreSQL timed out: refuse at once until a probe has an answer."""
        if not self.is_closing():
            self._fail_fast.timed_out()

    async def _select_one(self) -> None:
        """The probe: a connection of the pool (past the refusal) and a statement, in time."""
        async with super().acquire(timeout=self.acquire_timeout) as conn:
            await conn.fetchval("SELECT 1", timeout=self.acquire_timeout)

    async def close(self) -> None:
        self._fail_fast.stop()
        await super().close()

    def terminate(self) -> None:
        self._fail_fast.stop()
        super().terminate()


class _GivenUp:
    """The query logger of a BoundedPool's connection: drops the connection when a statement on
    it timed out or was cancelled and nothing has run on it ``pool.cancel_grace`` later.

    A statement given up on leaves its connection busy until PostgreSQL acknowledges the cancel
    that asyncpg sends on a connection of its own; the ROLLBACK of its transaction and its
    return to the pool wait for that, each up to a whole timeout. A hung PostgreSQL never
    acknowledges: requests got their 503 after two timeouts. One that answers does so in a
    round trip, and keeps the connection (its statement is cancelled on the server, not left
    running); one that does not, in the grace, loses it, and those waits end at once.

    asyncpg calls it on the loop's next turn after each statement, when whatever follows waits
    on the cancel if one is pending: a later statement (the ROLLBACK, the pool's reset) means
    the cancel is done. A timeout also tells the pool here (fail fast): in a transaction, the
    caller sees the error of the ROLLBACK, not the TimeoutError."""

    __slots__ = ("_conn", "_ended", "_pool")

    def __init__(self, conn: asyncpg.Connection, pool: BoundedPool) -> None:
        self._conn = conn
        self._pool = pool
        self._ended = 0  # statements ended on the connection

    def __call__(self, record: LoggedQuery) -> None:
        self._ended += 1
        if isinstance(record.exception, TimeoutError):
            self._pool.timed_out()
        elif not isinstance(record.exception, asyncio.CancelledError):
            return
        loop = asyncio.get_running_loop()
        loop.call_later(self._pool.cancel_grace, self._drop_if_stuck, self._ended)

    def _drop_if_stuck(self, ended: int) -> None:
        if self._ended == ended and not self._conn.is_closed():
            logger.info("PostgreSQL did not acknowledge a cancel: its connection is dropped")
            self._conn.terminate()


class _Acquire:
    """asyncpg's acquire context (``async with`` or ``await``), telling its pool of a timeout
    while it waits for the connection or while the connection is used in ``async with``."""

    __slots__ = ("_context", "_pool")

    def __init__(self, context: Any, pool: BoundedPool) -> None:
        self._context = context
        self._pool = pool

    async def __aenter__(self) -> PoolConnectionProxy[Any]:
        try:
            conn: PoolConnectionProxy[Any] = await self._context.__aenter__()
        except TimeoutError:
            self._pool.timed_out()
            raise
        return conn

    async def __aexit__(self, kind: type[BaseException] | None, *rest: Any) -> None:
        if kind is not None and issubclass(kind, TimeoutError):
            self._pool.timed_out()
        await self._context.__aexit__(kind, *rest)

    def __await__(self) -> Generator[Any, None, PoolConnectionProxy[Any]]:
        return self._acquired().__await__()

    async def _acquired(self) -> PoolConnectionProxy[Any]:
        try:
            conn: PoolConnectionProxy[Any] = await self._context
        except TimeoutError:
            self._pool.timed_out()
            raise
        return conn


async def _bounded_pool(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    timeout_s: float,
    connect_timeout_s: float,
    what: str = "PostgreSQL",
) -> asyncpg.Pool:
    """What ``asyncpg.create_pool`` builds (its own defaults but for ours), as a BoundedPool:
    connections made within ``connect_timeout_s``, a connection from the pool and a statement
    each within ``timeout_s``."""
    settings: dict[str, Any] = {
        "min_size": min_size,
        "max_size": max_size,
        "max_inactive_connection_lifetime": 300,
        "init": _init_connection,
        "command_timeout": timeout_s,
        "timeout": connect_timeout_s,
    }
    try:
        pool: asyncpg.Pool = BoundedPool(
            dsn,
            acquire_timeout=timeout_s,
            what=what,
            max_queries=50_000,
            setup=None,
            loop=None,
            connection_class=asyncpg.Connection,
            record_class=asyncpg.Record,
            **settings,
        )
    except TypeError as exc:  # Pool's constructor changed: the public way, acquire unbounded
        logger.warning("asyncpg's Pool takes other arguments (%s): acquire waits unbounded", exc)
        pool = asyncpg.create_pool(dsn, **settings)
    await pool
    return pool


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, timeout_s: float = DB_TIMEOUT_S
) -> asyncpg.Pool:
    """The process's pool. ``timeout_s`` bounds a new connection (asyncpg's own default is 60 s),
    the wait for a connection of the pool and each statement: a PostgreSQL that answers nothing
    (stopped, cut off) costs a request about that long before its 503, not a minute."""
    return await _bounded_pool(
        dsn, min_size=min_size, max_size=max_size, timeout_s=timeout_s, connect_timeout_s=timeout_s
    )


async def close_pool(pool: asyncpg.Pool, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close the pool once its connections in use are back, waiting ``timeout_s`` at most: a
    connection still out then (a request that did not end) is ended, so that stopping never hangs
    (asyncpg terminates a pool whose ``close`` is cancelled)."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except TimeoutError:
        logger.warning("PostgreSQL connections still in use after %.0f s: ended", timeout_s)


async def create_replica_pool(
    dsn: str, *, max_size: int = 10, timeout_s: float = DB_TIMEOUT_S
) -> asyncpg.Pool:
    """A pool of a streaming replica. It opens no connection until a read wants one, so a replica
    that is down at start-up delays nothing (reads go to the primary until it answers), and a
    connection attempt gives up after CONNECT_TIMEOUT_S instead of asyncpg's 60 s."""
    return await _bounded_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        timeout_s=timeout_s,
        connect_timeout_s=min(CONNECT_TIMEOUT_S, timeout_s),
        what="the PostgreSQL replica",
    )


# --- Lag-tolerant reads on a streaming replica ----------------------------------------------------

P = ParamSpec("P")
T = TypeVar("T")

CONNECT_TIMEOUT_S = 2.0  # a replica that does not accept a connection this fast counts as down
SAMPLE_S = 2.0  # how often the replica's lag is measured
SAMPLE_TIMEOUT_S = 2.0  # a measurement that takes longer counts as "replica down"
WARN_EVERY_S = 60.0  # while reads stay on the primary, its WARNING line repeats at most this often
# The measurement failed: down, or any refusal (a read URL that is no PostgreSQL we can ask).
UNMEASURED = DATABASE_FAILED

# How far the replica is behind, in seconds (NULL: it cannot tell). Caught up (0) when it has
# replayed all the primary had written just before ($1, NULL when the primary did not answer: then
# all the replica received); otherwise the age of the last transaction it replayed. That age
# overstates the lag of a replica whose primary was idle until just before the sample, which only
# sends reads to the primary for one sample. A server out of recovery (the read URL names a
# primary) is never behind.
LAG_SQL = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN pg_last_wal_replay_lsn() >= coalesce($1::text::pg_lsn, pg_last_wal_receive_lsn()) THEN 0
    ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
END
"""


class ReplicaReads:
    """Where lag-tolerant reads go: the replica while it answers and keeps within ``max_lag_s``
    of the primary, the primary otherwise (or when there is no replica). A background loop
    (``run``) measures the lag every SAMPLE_S; a read the replica fails is answered by the
    primary at once, so a replica going down never costs a 503 while the primary answers."""

    def __init__(
        self, primary: asyncpg.Pool, replica: asyncpg.Pool | None, max_lag_s: float = 10.0
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.max_lag_s = max_lag_s
        # Off until the first measurement says the replica keeps up: a replica that is far
        # behind after a restart must not answer the first requests.
        self.on_replica = False
        self.lag_s: float | None = None  # the last measurement; None: the replica did not answer
        self._warned_at = -WARN_EVERY_S
        self._warned = False  # a WARNING went out since reads last moved to the replica

    async def read(
        self,
        query: Callable[Concatenate[asyncpg.Pool, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``query(pool, *args, **kwargs)`` on the replica, or on the primary when the replica is
        off or fails it. Only for reads: a query the replica failed runs again on the primary."""
        replica = self.replica
        if replica is None or not self.on_replica:
            return await query(self.primary, *args, **kwargs)
        try:
            return await query(replica, *args, **kwargs)
        except DATABASE_DOWN as exc:
            self._fall_back(f"the replica failed a read ({type(exc).__name__})")
        except asyncpg.exceptions.SerializationError:
            # "canceling statement due to conflict with recovery": replay needed what the read
            # held. The replica is fine; only this read moves to the primary.
            pass
        return await query(self.primary, *args, **kwargs)

    async def sample(self) -> None:
        """Measure the replica's lag once and decide where reads go until the next sample."""
        if self.replica is None:
            return
        position = await self._primary_position()
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT_S):
                lag: float | None = await self.replica.fetchval(LAG_SQL, position)
        except UNMEASURED as exc:
            self._measured(None)
            self._fall_back(f"the replica does not answer ({type(exc).__name__})")
            return
        self._measured(lag)
        if lag is None or lag > self.max_lag_s:
            shown = "unknown" if lag is None else f"{lag:.1f} s"
            self._fall_back(
                f"the replica is behind the primary by {shown} (max {self.max_lag_s} s)"
            )
        elif not self.on_replica:
            self.on_replica = True
            DB_REPLICA_READS.set(1)
            if self._warned:  # one line back for each warning: a flapping replica stays quiet
                self._warned = False
                logger.info("lag-tolerant reads on the replica again (%.1f s behind)", lag)

    def _measured(self, lag: float | None) -> None:
        """Keep a measurement and publish it (seatlock_db_replica_lag_seconds; +Inf when the
        replica did not answer or cannot tell: an alert on the lag then fires too)."""
        self.lag_s = lag
        DB_REPLICA_LAG.set(math.inf if lag is None else lag)

    async def _primary_position(self) -> str | None:
        """The primary's WAL position now; None when it does not answer (the replica then
        measures against what it received: catalog reads outlive a primary outage)."""
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT_S):
                position: str = await self.primary.fetchval("SELECT pg_current_wal_lsn()::text")
        except DATABASE_DOWN:
            return None
        return position

    def _fall_back(self, reason: str) -> None:
        """Send reads to the primary, with a WARNING line at most every WARN_EVERY_S (a replica
        that flaps, or a burst of reads failing at once, does not flood the log)."""
        self.on_replica = False
        DB_REPLICA_READS.set(0)
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at, self._warned = now, True
            logger.warning("lag-tolerant reads on the primary: %s", reason)

    async def run(self, stop: asyncio.Event, beat: Beat) -> None:
        """Measure the lag every SAMPLE_S until ``stop``."""
        while not stop.is_set():
            await self.sample()
            beat()
            await pause(stop, SAMPLE_S, beat)
