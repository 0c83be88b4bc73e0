"""HoldService without HTTP: rows with ids, re-holds keep their rows, the compensation when no id
can be had, extend, cancel, my reservations and cleanup."""

from __future__ import annotations

import logging

import asyncpg
import pytest
from redis.asyncio import Redis

from db.reservations import HistoryWriter, ReservationIds
from seatlock.engine.seats import GRANT, SeatEngine
from seatlock.errors import Conflict, TooManyRequests, Unavailable, ValidationFailed
from seatlock.services import holds
from seatlock.services import holds as holds_module
from seatlock.services.holds import HoldService, next_grant, utc
from tests import factories as make
from tests.lua.support import now_ms
from tests.services.conftest import HOLD_MS, hold_service


async def holders(engine: SeatEngine, screening_id: int) -> dict[int, int]:
    """seat id -> user id of every held seat, as Redis has it."""
    seats = await engine.seat_map(screening_id)
    return {s.seat_id: s.user_id for s in seats if s.status == "reserved" and s.user_id}


async def test_a_hold_answers_rows_with_ids_and_times_and_writes_them(
    holds: HoldService, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 3)
    now = now_ms()
    held = await holds.hold(show.id, user, [show.seat_ids[1], show.seat_ids[0]], now)
    rows = held.reservations
    assert [r.seat_id for r in rows] == show.seat_ids[:2]  # in seat order
    assert len({r.id for r in rows}) == 2
    assert {(r.screening_id, r.user_id, r.status) for r in rows} == {(show.id, user, "active")}
    assert {(r.reserved_at, r.expires_at) for r in rows} == {(utc(now), utc(now + HOLD_MS))}
    assert held.minutes == HOLD_MS // 60_000
    await holds.writer.flush()
    written = await db.fetch("SELECT id, seat_id FROM reservations ORDER BY seat_id")
    assert [(w["id"], w["seat_id"]) for w in written] == [(r.id, r.seat_id) for r in rows]


async def test_a_re_hold_keeps_the_rows_of_seats_already_held(
    holds: HoldService, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 3)
    now = now_ms()
    first = await holds.hold(show.id, user, show.seat_ids[:2], now)
    again = await holds.hold(show.id, user, show.seat_ids, now + 1_000)
    kept, new = again.reservations[:2], again.reservations[2]
    assert kept == first.reservations  # same ids, same times: the earlier holds stand
    assert new.id not in {r.id for r in kept}
    assert new.expires_at == utc(now + 1_000 + HOLD_MS)
    assert again.minutes == HOLD_MS // 60_000
    await holds.writer.flush()
    assert await db.fetchval("SELECT count(*) FROM reservations") == 3


async def test_a_re_hold_in_another_process_finds_the_rows_in_postgresql(
    holds: HoldService,
    engine: SeatEngine,
    pool: asyncpg.Pool,
    redis: Redis,
    db: asyncpg.Connection,
    user: int,
) -> None:
    show = await make.show(db, 2)
    now = now_ms()
    first = await holds.hold(show.id, user, show.seat_ids[:1], now)
    await holds.writer.flush()
    elsewhere = hold_service(engine, HistoryWriter(pool), ReservationIds(pool), pool, redis)
    again = await elsewhere.hold(show.id, user, show.seat_ids[:1], now + 1_000)
    assert again.reservations == first.reservations


async def test_no_ids_to_be_had_lets_the_new_holds_go_and_answers_unavailable(
    holds: HoldService,
    engine: SeatEngine,
    dead_pool: asyncpg.Pool,
    db: asyncpg.Connection,
    user: int,
    other: int,
) -> None:
    show = await make.show(db, 3)
    a, b, c = show.seat_ids
    now = now_ms()
    await holds.hold(show.id, user, [a], now)
    working = holds.ids
    holds.ids = ReservationIds(dead_pool)  # PostgreSQL unreachable while a new block is due
    try:
        with pytest.raises(Unavailable) as refused:
            await holds.hold(show.id, user, [a, b], now + 1_000)
        assert isinstance(refused.value.__cause__, asyncpg.InterfaceError)
        with pytest.raises(Unavailable):
            await holds.hold(show.id, other, [c], now + 1_000)
    finally:
        holds.ids = working
    # The new holds are gone; the seat held (with its row) before the failed request stays held.
    assert await holders(engine, show.id) == {a: user}
    held = await holds.hold(show.id, other, [b, c], now + 2_000)
    assert [r.seat_id for r in held.reservations] == [b, c]


async def test_the_compensation_frees_only_what_its_grant_took(
    holds: HoldService,
    engine: SeatEngine,
    dead_pool: asyncpg.Pool,
    db: asyncpg.Connection,
    user: int,
) -> None:
    # Seat A is the user's from an earlier request whose row this process cannot find (held by
    # another process whose history is not written yet), so the new request counts A among the
    # seats that need an id. When no id can be had, only B (this request's grant) is let go.
    show = await make.show(db, 2)
    a, b = show.seat_ids
    now = now_ms()
    await engine.hold(show.id, user, [a], now)
    working = holds.ids
    holds.ids = ReservationIds(dead_pool)
    try:
        with pytest.raises(Unavailable):
            await holds.hold(show.id, user, [a, b], now + 1_000)
    finally:
        holds.ids = working
    assert await holders(engine, show.id) == {a: user}
    await engine.claim(show.id, user, [a], now + 2_000)  # still the user's, and bookable


async def test_a_refused_hold_takes_no_id(
    holds: HoldService, db: asyncpg.Connection, user: int, other: int
) -> None:
    show = await make.show(db, 2)
    await holds.hold(show.id, user, show.seat_ids[:1])
    before = holds.ids._next
    with pytest.raises(Conflict):
        await holds.hold(show.id, other, show.seat_ids)
    assert holds.ids._next == before


async def test_both_kinds_of_hold_count_and_log_their_refusals_alike(
    holds: HoldService,
    db: asyncpg.Connection,
    user: int,
    other: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    show = await make.show(db, 2)
    await holds.hold(show.id, user, show.seat_ids[:1])
    caplog.set_level(logging.DEBUG, logger=holds_module.__name__)
    with pytest.raises(Conflict):
        await holds.hold(show.id, other, show.seat_ids)
    with pytest.raises(Conflict):
        await holds.hold_best(show.id, other, 2)
    assert holds.outcomes.counts["taken"] == 1
    assert holds.outcomes.counts["no_block"] == 1
    lines = [r.getMessage() for r in caplog.records if r.name == holds_module.__name__]
    assert lines[0].startswith(f"hold refused (SeatsUnavailable): screening {show.id}, user")
    assert f"seats {show.seat_ids}" in lines[0]
    assert lines[1].startswith(f"hold refused (NoAdjacentSeats): screening {show.id}, user")
    assert "best block of 2" in lines[1]
    assert len(lines) == 2


async def test_extend_pushes_back_the_holds_and_names_their_rows(
    holds: HoldService, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 2)
    now = now_ms()
    held = await holds.hold(show.id, user, show.seat_ids, now)
    extended = await holds.extend(show.id, user, show.seat_ids, 5)
    assert [e.seat_id for e in extended] == show.seat_ids
    assert [e.id for e in extended] == [r.id for r in held.reservations]
    assert all(e.expires_at >= utc(now + HOLD_MS + 5 * 60_000) for e in extended)
    with pytest.raises(ValidationFailed, match="between 1 and 15"):
        await holds.extend(show.id, user, show.seat_ids, 16)


async def test_cancel_frees_the_seats_in_redis_and_closes_their_rows(
    holds: HoldService, engine: SeatEngine, db: asyncpg.Connection, user: int
) -> None:
    show = await make.show(db, 3)
    await holds.hold(show.id, user, show.seat_ids)
    await holds.cancel(show.id, user, show.seat_ids[:1])
    assert set(await holders(engine, show.id)) == set(show.seat_ids[1:])
    await holds.cancel(show.id, user, None)
    assert await holders(engine, show.id) == {}
    assert await holds.mine(user, include_expired=False) == []
    closed = await holds.mine(user, include_expired=True)
    assert sorted((r.seat_id, r.status) for r in closed) == [
        (seat, "cancelled") for seat in show.seat_ids
    ]


async def test_mine_lists_the_users_live_holds_newest_first(
    holds: HoldService, db: asyncpg.Connection, user: int, other: int
) -> None:
    show = await make.show(db, 3)
    now = now_ms()
    await holds.hold(show.id, user, show.seat_ids[:1], now)
    await holds.hold(show.id, user, show.seat_ids[1:2], now + 1_000)
    await holds.hold(show.id, other, show.seat_ids[2:], now)
    mine = await holds.mine(user, include_expired=False)
    assert [(r.seat_id, r.user_id, r.status) for r in mine] == [
        (show.seat_ids[1], user, "active"),
        (show.seat_ids[0], user, "active"),
    ]


async def test_cleanup_sweeps_at_most_once_per_interval(holds: HoldService) -> None:
    done = await holds.cleanup()
    assert done.expired == 0 and done.seconds >= 0
    with pytest.raises(TooManyRequests):
        await holds.cleanup()


def test_grants_are_unique_valid_and_drawn_anew_in_a_forked_child() -> None:
    made = [next_grant() for _ in range(10_000)]
    assert len(set(made)) == len(made) and all(GRANT.fullmatch(g) for g in made)
    prefix = made[0][:12]
    assert all(g.startswith(prefix) for g in made)
    holds._seed_grants()  # what a forked child runs (os.register_at_fork)
    assert not next_grant().startswith(prefix)
