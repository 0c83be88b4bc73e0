"""Services built directly, without HTTP, on the suite's real Redis and PostgreSQL.

``redis`` is a client of the engine tests' own database and the engine runs on every transport
(tests/lua/support.py): a live test
server of the session runs its expiry listener and sweep on the default one. The writers run as
tasks, as the composition root runs them (seatlock/server/wiring.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from db.layouts import Layouts
from db.reservations import HistoryWriter, ReservationIds
from db.tickets import BookingWriter
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from seatlock.services.bookings import BookingService
from seatlock.services.holds import HoldService
from tests import factories as make
from tests.lua.support import (  # noqa: F401  (registers the fixtures)
    engine_db_redis,
    transport,
    transport_kind,
    transports,
)

HOLD_MS = 300_000


@contextlib.asynccontextmanager
async def running(loop: Coroutine[Any, Any, None], stop: asyncio.Event) -> AsyncIterator[None]:
    task = asyncio.create_task(loop)
    try:
        yield
    finally:
        stop.set()
        await task


@pytest.fixture
async def pool(backend_urls: tuple[str, str]) -> AsyncIterator[asyncpg.Pool]:
    db = await asyncpg.create_pool(backend_urls[1], min_size=1, max_size=4)
    yield db
    await db.close()


@pytest.fixture
async def dead_pool(backend_urls: tuple[str, str]) -> asyncpg.Pool:
    """A closed pool: PostgreSQL unreachable for whoever uses it."""
    db = await asyncpg.create_pool(backend_urls[1], min_size=0, max_size=1)
    await db.close()
    return db


@pytest.fixture
def engine(transport: Transport, pool: asyncpg.Pool) -> SeatEngine:  # noqa: F811
    return SeatEngine(
        transport, Layouts(pool), hold_ms=HOLD_MS, max_hold_ms=1_800_000, max_seats_per_user=10
    )


@pytest.fixture
async def history_writer(pool: asyncpg.Pool) -> AsyncIterator[HistoryWriter]:
    writer = HistoryWriter(pool)
    async with running(writer.run(stop := asyncio.Event()), stop):
        yield writer


@pytest.fixture
async def booking_writer(pool: asyncpg.Pool) -> AsyncIterator[BookingWriter]:
    writer = BookingWriter(pool)
    async with running(writer.run(stop := asyncio.Event()), stop):
        await asyncio.sleep(0)  # the writer takes bookings once it runs
        yield writer


def hold_service(
    engine: SeatEngine, writer: HistoryWriter, ids: ReservationIds, pool: asyncpg.Pool, redis: Redis
) -> HoldService:
    """A HoldService over these parts, with the default settings' limits."""
    return HoldService(
        engine, writer, ids, pool, redis, max_extend_minutes=15, cleanup_interval_s=1.0
    )


@pytest.fixture
async def holds(
    engine: SeatEngine, history_writer: HistoryWriter, pool: asyncpg.Pool, redis: Redis
) -> AsyncIterator[HoldService]:
    ids = ReservationIds(pool)
    yield hold_service(engine, history_writer, ids, pool, redis)
    if ids._spare is not None:  # a block fetched ahead: done before the pool closes
        await asyncio.gather(ids._spare, return_exceptions=True)


@pytest.fixture
def bookings(
    engine: SeatEngine,
    booking_writer: BookingWriter,
    history_writer: HistoryWriter,
    pool: asyncpg.Pool,
) -> BookingService:
    return BookingService(engine, booking_writer, history_writer, pool)


@pytest.fixture
async def user(db: asyncpg.Connection) -> int:
    """A user id (the history writer writes the rows of existing users only)."""
    return await new_user(db)


@pytest.fixture
async def other(db: asyncpg.Connection) -> int:
    return await new_user(db)


new_user = make.buyer  # the name the service tests import
