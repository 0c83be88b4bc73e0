"""The composition root: settings -> Redis and PostgreSQL clients -> services -> the app.

This is the one module that knows how the parts fit together. It builds every long-lived object
of a process once, in the app's lifespan, runs the background loops (seat events, expiry, the
sweep, the history and booking writers, the reconciler, the session revocation feed) while the
app serves, and closes everything in reverse order on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import asyncpg
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from starlette.applications import Starlette

from api import websockets
from api.answercache import AnswerCache
from api.app import build_app
from api.routing import App
from db import users
from db.discovery import SalesTally
from db.layouts import Layouts
from db.migrate import migrate_database
from db.pool import ReplicaReads, close_pool, create_pool, create_replica_pool
from db.reservations import HistoryWriter, ReservationIds
from db.tickets import BookingWriter
from seatlock.accounts.mail import Mailer
from seatlock.accounts.media import LocalStorage
from seatlock.accounts.passwords import Hasher
from seatlock.accounts.sessions import SessionTrust, listening
from seatlock.accounts.tokens import TokenCodec, load_or_create_secret
from seatlock.engine.clock import RedisClock
from seatlock.engine.deadlines import Deadlines
from seatlock.engine.events import Hub
from seatlock.engine.expiry import (
    enable_keyspace_events,
    free_at_deadlines,
    listen_for_expiries,
    sweep_forever,
)
from seatlock.engine.mirrors import SeatMirrors
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Replicas, open_transport
from seatlock.errors import SeatLockError
from seatlock.heartbeats import Heartbeats, measure_loop_lag, no_beat, pause, supervised
from seatlock.metrics import (
    BOOKING_BACKLOG,
    DB_POOL_IN_USE,
    DB_POOL_SIZE,
    HISTORY_BACKLOG,
    SEATS_UNMARKED,
    flush_tallies,
)
from seatlock.process import settle_garbage_collector
from seatlock.services.bookings import BookingService
from seatlock.services.container import Services
from seatlock.services.holds import HoldService
from seatlock.services.payments import UnpaidExpiry
from seatlock.services.payments import verifier as payment_verifier
from seatlock.services.reconciler import Reconciler
from seatlock.services.retention import prune_forever
from seatlock.services.seatmaps import SeatMapCache
from seatlock.settings import Settings, redis_cluster_nodes

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> App:
    """The ASGI app of one process (uvicorn's factory): routes now, services in the lifespan."""
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            open_clients(settings) as (redis, db, replica),
            running(build(settings, redis, db, replica)) as s,
        ):
            app.state.services = s
            app.state.answers = AnswerCache(settings.catalog_cache_seconds)
            websockets.install(s)
            settle_garbage_collector()
            yield

    return build_app(lifespan, settings.cors_origin_list)


@contextlib.asynccontextmanager
async def open_clients(
    settings: Settings,
) -> AsyncIterator[tuple[Redis | RedisCluster, asyncpg.Pool, asyncpg.Pool | None]]:
    """Connect to Redis (one node, or a cluster by ``redis+cluster://``) and PostgreSQL and
    migrate; the pool of the read replica when one is set (it connects on first use, so a
    replica that is down does not stop the start); close them all on the way out."""
    # Migrations first, on a connection of their own: a statement of theirs (an index built on a
    # large table) may take longer than the pool lets a request's statement take.
    await migrate_database(settings.database_url)
    redis = redis_client(settings)
    db = await create_pool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout_s=settings.db_timeout_seconds,
    )
    replica = None
    try:
        if settings.database_read_url:
            replica = await create_replica_pool(
                settings.database_read_url,
                max_size=settings.db_pool_max,
                timeout_s=settings.db_timeout_seconds,
            )
        if settings.admin_email and settings.admin_password:
            await users.ensure_configured_admin(
                db, settings.admin_email, settings.admin_password, settings.bcrypt_rounds
            )
        yield redis, db, replica
    finally:
        if replica is not None:
            await close_pool(replica)
        await close_pool(db)
        await redis.aclose()


def redis_client(settings: Settings) -> Redis | RedisCluster:
    """The app's Redis client: a ``RedisCluster`` for a cluster URL (redis-py follows the slot
    map), otherwise one node through a bounded pool that makes a burst wait for a free
    connection instead of failing it."""
    cluster = redis_cluster_nodes(settings.redis_url)
    # Without a socket timeout a Redis that answers nothing (stopped, cut off) holds every call
    # without end; the engine's transports and subscriptions take theirs from this client.
    timeout = settings.redis_timeout_seconds
    if cluster is None:
        return Redis.from_pool(
            BlockingConnectionPool.from_url(  # the URL's own query options win
                settings.redis_url,
                max_connections=settings.redis_pool_max,
                timeout=10,
                health_check_interval=30,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        )
    # No retries of a command that failed on its node (redis-py's default is 3, each after a
    # slot map refresh): with a primary that stops answering, a login whose throttle keys live
    # there waited ~15 timeouts for its 503. MOVED and ASK are followed all the same; a call
    # made while a primary fails over is a 503 with Retry-After, as the seat calls are. The
    # engine's cluster transport makes a client of its own (seatlock/engine/cluster.py).
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes],
        username=cluster.username,
        password=cluster.password,
        ssl=cluster.tls,
        max_connections=settings.redis_pool_max,
        health_check_interval=30,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def build(
    settings: Settings,
    redis: Redis | RedisCluster,
    db: asyncpg.Pool,
    replica: asyncpg.Pool | None = None,
) -> Services:
    """Every service of a process, wired; nothing runs until ``running``."""
    tokens = TokenCodec(load_or_create_secret(settings), settings.access_token_minutes)
    layouts = Layouts(db)
    transport = open_transport(settings.redis_transport, redis)
    engine = SeatEngine(
        transport,
        layouts,
        hold_ms=settings.hold_seconds * 1000,
        max_hold_ms=settings.max_hold_seconds * 1000,
        max_seats_per_user=settings.max_seats_per_user,
        replicas=hold_replicas(settings),
        clock=RedisClock(transport.command, skew_ms=settings.clock_offset_ms),
        event_log_length=settings.event_log_length,
        no_single_gaps=settings.no_single_gaps,
    )
    hub = Hub(transport, engine.seat_map, now_ms=engine.now_ms, watch=engine.watch)
    if settings.seat_mirrors:
        engine.mirrors = SeatMirrors(engine.snapshot, hub)
        hub.screening_listeners.append((engine.mirrors.wants, engine.mirrors.on_event))
    seatmaps: SeatMapCache[Any] = SeatMapCache()
    engine.change_listeners.append(seatmaps.invalidate)
    hub.change_listeners.append(seatmaps.invalidate)
    history_writer = HistoryWriter(db)
    booking_writer = BookingWriter(db)
    holds = HoldService(
        engine,
        history_writer,
        ReservationIds(db),
        db,
        redis,
        max_extend_minutes=settings.max_extend_minutes,
        cleanup_interval_s=settings.cleanup_min_interval_seconds,
    )
    read_db = ReplicaReads(db, replica, settings.database_read_max_lag_seconds)
    return Services(
        settings=settings,
        redis=redis,
        db=db,
        read_db=read_db,
        tokens=tokens,
        passwords=Hasher(
            settings.bcrypt_rounds,
            threads=settings.password_hash_threads,
            max_wait_s=settings.password_wait_seconds,
        ),
        mailer=Mailer(settings),
        media=LocalStorage(settings.media_dir / "profile-pictures"),
        sessions=SessionTrust(keep_revoked_seconds=tokens.access_seconds + 60),
        engine=engine,
        hub=hub,
        layouts=layouts,
        sales=SalesTally(read_db, settings.sales_cache_seconds),
        history_writer=history_writer,
        booking_writer=booking_writer,
        holds=holds,
        bookings=BookingService(
            engine,
            booking_writer,
            history_writer,
            db,
            payments=payment_verifier(settings.payment_verifier, settings.payment_secret),
            payment_seconds=settings.payment_deadline_seconds,
        ),
        reconciler=Reconciler(
            engine,
            db,
            interval_s=settings.reconcile_interval_seconds,
            settle_s=settings.reconcile_settle_seconds,
        ),
        seatmaps=seatmaps,
        heartbeats=Heartbeats(settings.loop_silence_seconds),
    )


def hold_replicas(settings: Settings) -> Replicas | None:
    """What holds, extensions and sales wait for (``SEATLOCK_HOLD_REPLICAS``); None: nothing."""
    if settings.hold_replicas == 0:
        return None
    return Replicas(settings.hold_replicas, settings.hold_replicas_timeout_ms)


@contextlib.asynccontextmanager
async def running(services: Services) -> AsyncIterator[Services]:
    """The background loops of a process, for as long as the block runs."""
    s = services
    transport = s.engine.transport
    if not await enable_keyspace_events(transport):
        logger.warning("keyspace events refused by Redis; expiries rely on the sweep")
    await _sync_clock(s.engine.clock)
    await s.passwords.start()
    stop = asyncio.Event()
    beat = s.heartbeats.beater
    # Each entry starts a new run of its loop: one that raises is started again (``supervised``).
    loops: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        # Redis's clock, which decides every hold time (seatlock/engine/clock.py).
        "redis_clock": lambda: s.engine.clock.run(
            s.settings.clock_sync_seconds, stop, beat("redis_clock")
        ),
        "seat_events": lambda: s.hub.run(stop, beat("seat_events")),
        # This process's share of /ws/stats, kept in Redis.
        "ws_stats": lambda: s.hub.publish_stats(stop, beat("ws_stats")),
        # The holds made here, freed at their deadlines (Redis notices a lapsed lease late).
        "expiry_timers": lambda: free_at_deadlines(
            s.engine, Deadlines(), stop, beat("expiry_timers")
        ),
        "expiry_listener": lambda: listen_for_expiries(
            s.engine, transport, stop, beat("expiry_listener")
        ),
        "expiry_sweep": lambda: sweep_forever(
            s.engine, s.settings.sweep_interval_seconds, stop, beat("expiry_sweep")
        ),
        # How late the event loop runs what is due (seatlock_event_loop_lag_seconds).
        "loop_lag": lambda: measure_loop_lag(stop, beat("loop_lag")),
        "history_writer": lambda: s.history_writer.run(stop, beat("history_writer")),
        "booking_writer": lambda: s.booking_writer.run(stop, beat("booking_writer")),
        # Every process runs it; each unpaid ticket is expired by exactly one (db/tickets.py).
        "unpaid_expiry": lambda: UnpaidExpiry(
            s.engine, s.db, s.settings.payment_deadline_seconds
        ).run(s.settings.sweep_interval_seconds, stop, beat("unpaid_expiry")),
        # Sessions and reset tokens dead for a day, deleted (seatlock/services/retention.py).
        "credential_pruning": lambda: prune_forever(s.db, stop, beat("credential_pruning")),
    }
    if s.reconciler.interval_s > 0:  # off: its run() returns at once, and must not look stalled
        loops["reconciler"] = lambda: s.reconciler.run(stop, beat("reconciler"))
    if s.read_db.replica is not None:  # where lag-tolerant reads go, by the replica's lag
        loops["replica_lag"] = lambda: s.read_db.run(stop, beat("replica_lag"))
    for name in loops:
        beat(name)  # each counts as beating from now, before its first run starts
    tasks = [_watched(s.heartbeats, name, start, stop) for name, start in loops.items()]
    tasks.append(asyncio.create_task(sample_gauges(s, stop)))
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(s.hub.ready.wait(), 5)
        # The revocations within the window the trust keeps them for (SessionTrust.revoked).
        recent = functools.partial(users.recently_revoked, s.db, s.sessions.keep_revoked_seconds)
        async with listening(s.redis, s.sessions, beat("session_feed"), recent) as feed:
            s.heartbeats.watch("session_feed", feed)
            yield s
    finally:
        stop.set()
        _, late = await asyncio.wait(tasks, timeout=5)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        s.holds.flush_counts()  # the counts of the last second: a counter outlives its worker
        flush_tallies()
        await s.bookings.aclose()
        if s.engine.mirrors is not None:
            await s.engine.mirrors.aclose()
        await transport.aclose()
        s.passwords.close()
        s.mailer.close()


async def _sync_clock(clock: RedisClock) -> None:
    """Read Redis's clock before serving, so the first holds are on it; when Redis does not answer
    yet, the local clock stands in until the clock loop gets through."""
    try:
        await asyncio.wait_for(clock.sync(), 5)
    except (TimeoutError, RedisError, OSError, SeatLockError) as exc:
        logger.warning("Redis's clock not read at start (%r); using this host's for now", exc)


def _watched(
    heartbeats: Heartbeats,
    name: str,
    start: Callable[[], Coroutine[Any, Any, None]],
    stop: asyncio.Event,
) -> asyncio.Task[None]:
    task = asyncio.create_task(supervised(name, start, stop), name=name)
    heartbeats.watch(name, task)
    return task


SAMPLE_S = 1.0  # how often a process writes its gauges of queues and pools


async def sample_gauges(s: Services, stop: asyncio.Event) -> None:
    """Write this process's gauges of state that changes too often to record at each change
    (queues, the pool) and add the hold tallies to their counter, every SAMPLE_S; in
    multi-process mode every worker writes its own (livesum)."""
    while not stop.is_set():
        size = s.db.get_size()
        DB_POOL_SIZE.set(size)
        DB_POOL_IN_USE.set(size - s.db.get_idle_size())
        HISTORY_BACKLOG.set(s.history_writer.backlog)
        BOOKING_BACKLOG.set(s.booking_writer.backlog)
        SEATS_UNMARKED.set(s.bookings.unmarked)
        s.holds.flush_counts()
        flush_tallies()  # the request metrics (api/observe.py)
        await pause(stop, SAMPLE_S, no_beat)
