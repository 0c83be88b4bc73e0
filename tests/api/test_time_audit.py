"""Time: which clock decides, and what the answers say of it.

A seat hold's times are on Redis's clock (seatlock/engine/clock.py), as is the refusal of holds for
a screening that has started. The catalog's "upcoming" lists and the cleanup's ``timestamp`` must go
by that clock too, not by this host's: here Redis's clock reads minutes away from the host's (a
never-synced ``RedisClock`` with a skew, or a live server's clock shifted). And a hold the user
kept is told from a fresh one by its grant, never by a deadline that two holds can share.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from db.layouts import Layouts
from db.reservations import HistoryWriter, ReservationIds
from seatlock.engine.clock import RedisClock
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from seatlock.services.container import Services
from seatlock.services.holds import HoldService
from tests import factories as make
from tests.lua.support import (  # noqa: F401  (registers the fixtures)
    engine_db_redis,
    now_ms,
    transport,
    transport_kind,
    transports,
)
from tests.services.conftest import (  # noqa: F401  (registers the fixtures)
    HOLD_MS,
    engine,
    history_writer,
    hold_service,
    holds,
    pool,
    user,
)
from tests.support import LiveServer

SKEW_MS = 600_000  # Redis's clock ten minutes ahead of the host's


def skewed_holds(
    transport: Transport,  # noqa: F811
    pool: asyncpg.Pool,  # noqa: F811
    writer: HistoryWriter,
    redis: Redis,
) -> HoldService:
    """A hold service whose Redis clock reads SKEW_MS ahead of this machine's."""
    clock = RedisClock(transport.command, skew_ms=SKEW_MS)  # never synced: the skew stays
    seats = SeatEngine(
        transport,
        Layouts(pool),
        hold_ms=HOLD_MS,
        max_hold_ms=1_800_000,
        max_seats_per_user=10,
        clock=clock,
    )
    return hold_service(seats, writer, ReservationIds(pool), pool, redis)


def shift_clock(server: LiveServer, ms: int) -> None:
    """Make the live server read Redis's clock ``ms`` away from its host's (until its next sync:
    the servers here sync once an hour)."""
    services: Services = server.app.state.services
    services.engine.clock._shift += ms


# -- a hold kept is told from a fresh one by its grant, not by its deadline ----------------------


async def test_a_hold_kept_with_the_deadline_a_fresh_one_would_have_keeps_its_row(
    holds: HoldService,  # noqa: F811
    db: asyncpg.Connection,
    user: int,  # noqa: F811
) -> None:
    """The same user's second hold of a seat in the same millisecond (two tabs; or a hold
    extended by E and held again E later): the seat is kept, with a deadline equal to what a
    fresh hold would get. It is still the first hold, with the first hold's row."""
    show = await make.show(db, 1)
    now = now_ms()
    first = await holds.hold(show.id, user, show.seat_ids, now)
    again = await holds.hold(show.id, user, show.seat_ids, now)
    assert again.reservations == first.reservations
    await holds.writer.flush()
    rows = await db.fetchval(
        "SELECT count(*) FROM reservations WHERE screening_id = $1 AND status = 'active'", show.id
    )
    assert rows == 1


async def test_a_seat_held_again_as_its_extension_ends_keeps_its_row(
    holds: HoldService,  # noqa: F811
    db: asyncpg.Connection,
    user: int,  # noqa: F811
) -> None:
    show = await make.show(db, 1)
    now = now_ms()
    first = await holds.hold(show.id, user, show.seat_ids, now)
    await holds.engine.extend(show.id, user, show.seat_ids, 60_000, now)
    again = await holds.hold(show.id, user, show.seat_ids, now + 60_000)
    assert [r.id for r in again.reservations] == [r.id for r in first.reservations]
    assert again.reservations[0].expires_at == first.reservations[0].expires_at + timedelta(
        minutes=1
    )
    mine = await holds.mine(user, include_expired=True)
    assert [r.id for r in mine] == [first.reservations[0].id]


# -- the cleanup's timestamp is on Redis's clock -------------------------------------------------


async def test_the_cleanup_timestamp_is_on_redis_clock(
    transport: Transport,  # noqa: F811
    pool: asyncpg.Pool,  # noqa: F811
    history_writer: HistoryWriter,  # noqa: F811
    redis: Redis,
) -> None:
    skewed = skewed_holds(transport, pool, history_writer, redis)
    before = skewed.engine.now_ms()
    done = await skewed.cleanup()
    after = skewed.engine.now_ms()
    assert before <= done.finished_at.timestamp() * 1000 <= after + 1
    assert done.finished_at.tzinfo is not None


# -- "upcoming" is what can still be held ---------------------------------------------------------


async def test_upcoming_lists_agree_with_the_holds_on_a_screening_started_by_redis_clock(
    make_server: Any, db: asyncpg.Connection
) -> None:
    """A screening that starts in five minutes by this host's clock but started five minutes ago
    by Redis's: holds are refused (400), so no list offers it as upcoming."""
    server = make_server(clock_sync_seconds=3600)
    shift_clock(server, SKEW_MS)
    show = await make.show(db, 1, starts_in=timedelta(minutes=5))
    cinema_id = await db.fetchval(
        "SELECT r.cinema_id FROM rooms r JOIN screenings s ON s.room_id = r.id WHERE s.id = $1",
        show.id,
    )
    movie_id = await db.fetchval("SELECT movie_id FROM screenings WHERE id = $1", show.id)
    [headers] = await make.sessions(db, server.settings.jwt_secret, 1)
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post(
            "/api/v1/seat-reservations/reserve",
            json={"screening_id": show.id, "seat_ids": show.seat_ids},
            headers=headers,
        )
        assert r.status_code == 400, r.text
        for path in (
            "/api/v1/showtimes/",
            f"/api/v1/movies/{movie_id}/showtimes",
            f"/api/v1/cinemas/{cinema_id}/showtimes",
            "/api/v1/screenings/",
        ):
            r = await client.get(path)
            assert r.status_code == 200, (path, r.text)
            assert [s["id"] for s in r.json()] == [], path
