"""My reservations judge a hold live by Redis's clock, the one its expires_at was written by, not
PostgreSQL's now(): on a host whose reading of Redis's clock differs from PostgreSQL's clock (here
5 s either way, SEATLOCK_CLOCK_OFFSET_MS on a clock not yet synced) the list agrees with Redis."""

from __future__ import annotations

import asyncpg
from redis.asyncio import Redis

from db.layouts import Layouts
from db.reservations import HistoryWriter, ReservationIds
from seatlock.engine.clock import RedisClock
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from seatlock.services.holds import HoldService
from tests import factories as make
from tests.services.conftest import hold_service

SKEW_MS = 5_000
SHORT_MS = 3_000  # a hold shorter than the skew: the two clocks disagree on whether it is live


def service_on(
    skew_ms: int,
    transport: Transport,
    pool: asyncpg.Pool,
    writer: HistoryWriter,
    redis: Redis,
) -> HoldService:
    """A hold service whose Redis clock reads ``skew_ms`` off the machine's (PostgreSQL's)."""
    clock = RedisClock(transport.command, skew_ms=skew_ms)  # never synced: the skew stays
    engine = SeatEngine(
        transport,
        Layouts(pool),
        hold_ms=SHORT_MS,
        max_hold_ms=1_800_000,
        max_seats_per_user=10,
        clock=clock,
    )
    return hold_service(engine, writer, ReservationIds(pool), pool, redis)


async def test_a_hold_past_on_postgresqls_clock_but_live_on_redis_is_listed(
    transport: Transport,
    pool: asyncpg.Pool,
    history_writer: HistoryWriter,
    redis: Redis,
    db: asyncpg.Connection,
    user: int,
) -> None:
    behind = service_on(-SKEW_MS, transport, pool, history_writer, redis)
    show = await make.show(db, 1)
    held = await behind.hold(show.id, user, show.seat_ids)
    assert await db.fetchval("SELECT $1::timestamptz < now()", held.reservations[0].expires_at)
    mine = await behind.mine(user, include_expired=False)
    assert [(r.seat_id, r.status) for r in mine] == [(show.seat_ids[0], "active")]


async def test_a_hold_live_on_postgresqls_clock_but_past_on_redis_is_not(
    transport: Transport,
    pool: asyncpg.Pool,
    history_writer: HistoryWriter,
    redis: Redis,
    db: asyncpg.Connection,
    user: int,
) -> None:
    on_time = service_on(0, transport, pool, history_writer, redis)
    ahead = service_on(SKEW_MS, transport, pool, history_writer, redis)
    show = await make.show(db, 1)
    held = await on_time.hold(show.id, user, show.seat_ids)
    assert await db.fetchval("SELECT $1::timestamptz > now()", held.reservations[0].expires_at)
    assert await ahead.mine(user, include_expired=False) == []
    listed = await ahead.mine(user, include_expired=True)
    assert [(r.seat_id, r.status) for r in listed] == [(show.seat_ids[0], "expired")]
    assert [r.status for r in await on_time.mine(user, include_expired=False)] == ["active"]
