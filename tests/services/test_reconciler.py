"""The reconciler against real Redis and PostgreSQL: a ticket sold behind Redis's back is marked
sold, a seat Redis calls sold without an active ticket is freed, watchers see both, a second pass
changes nothing, and a pass that failed is retried soon."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from seatlock.engine.seats import SeatEngine
from seatlock.services import reconciler as module
from seatlock.services.reconciler import Reconciler
from tests import factories as make
from tests.lua.support import tap, wait_until


async def states(engine: SeatEngine, screening_id: int) -> dict[int, tuple[str, int | None]]:
    return {s.seat_id: (s.status, s.user_id) for s in await engine.seat_map(screening_id)}


async def test_a_pass_repairs_redis_from_postgres_and_tells_watchers(
    engine: SeatEngine,
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    redis: Redis,
    user: int,
    other: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    show = await make.show(db, 5)
    a, b, c, d, e = show.seat_ids
    clean = await make.show(db, 2)
    await engine.seat_map(clean.id)  # loaded, and in agreement: left alone
    await make.ticket(db, other, show.id, d)
    await engine.seat_map(show.id)  # loaded with d sold
    await engine.hold(show.id, user, [c])
    # Behind Redis's back: a ticket committed a minute ago whose seat was never marked sold ...
    await make.ticket(db, user, show.id, a)
    await db.execute("UPDATE tickets SET booked_at = now() - interval '1 minute'")
    # ... (one committed just now is left to its booking, which may still be marking it) ...
    await make.ticket(db, other, show.id, e)
    # ... and a seat Redis calls sold that PostgreSQL has no active ticket for.
    await engine.sell(show.id, {b: other})
    reconciler = Reconciler(engine, pool, interval_s=30)
    caplog.set_level(logging.WARNING, logger=module.__name__)
    async with tap(redis, show.id) as events:
        assert await reconciler.reconcile() == 1
        first, second = await events.next(), await events.next()
    assert [(s["seat_id"], s["status"], s["user_id"]) for s in first["seats"]] == [
        (a, "booked", user)
    ]
    assert [(s["seat_id"], s["status"]) for s in second["seats"]] == [(b, "available")]
    assert await states(engine, show.id) == {
        a: ("booked", user),
        b: ("available", None),
        c: ("reserved", user),
        d: ("booked", other),
        e: ("available", None),
    }
    assert (reconciler.repairs, reconciler.seats_repaired, reconciler.passes) == (1, 2, 1)
    [line] = [r for r in caplog.records if "reconciled" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert f"screening {show.id}" in line.getMessage()
    assert f"[{a}]" in line.getMessage() and f"[{b}]" in line.getMessage()
    # Idempotent: a second pass (or another process's at the same time) changes nothing.
    assert await reconciler.reconcile() == 0
    assert reconciler.repairs == 1
    # Once settled, a sale still not marked is repaired.
    await db.execute("UPDATE tickets SET booked_at = now() - interval '1 minute'")
    assert await reconciler.reconcile() == 1
    assert (await states(engine, show.id))[e] == ("booked", other)


async def test_a_screening_redis_does_not_have_is_left_to_its_next_load(
    engine: SeatEngine, pool: asyncpg.Pool, db: asyncpg.Connection, redis: Redis, user: int
) -> None:
    show = await make.show(db, 2)
    await make.ticket(db, user, show.id, show.seat_ids[0])
    reconciler = Reconciler(engine, pool, interval_s=30)
    assert await reconciler.reconcile() == 0
    assert await engine.loaded_screenings() == []  # the pass loaded nothing
    assert (await states(engine, show.id))[show.seat_ids[0]] == ("booked", user)


async def test_the_loop_passes_at_once_and_retries_a_failed_pass_soon(
    engine: SeatEngine,
    pool: asyncpg.Pool,
    dead_pool: asyncpg.Pool,
    db: asyncpg.Connection,
    user: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    show = await make.show(db, 2)
    await engine.seat_map(show.id)
    await make.ticket(db, user, show.id, show.seat_ids[0])
    await db.execute("UPDATE tickets SET booked_at = now() - interval '1 minute'")  # settled
    monkeypatch.setattr(module, "RETRY_S", 0.05)
    # PostgreSQL unreachable at first (a closed pool), then back: no wait for the period.
    reconciler = Reconciler(engine, dead_pool, interval_s=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop))
    try:
        await wait_until(lambda: reconciler.failing)
        assert reconciler.passes == 0
        reconciler.db = pool
        await wait_until(lambda: reconciler.repairs == 1)
        assert not reconciler.failing
    finally:
        stop.set()
        await task
    assert (await states(engine, show.id))[show.seat_ids[0]] == ("booked", user)


async def test_processes_sharing_a_redis_take_turns(
    engine: SeatEngine, pool: asyncpg.Pool, db: asyncpg.Connection, user: int
) -> None:
    """One pass an interval between them: the first to ask takes the turn for 0.9 of the
    interval (and keeps it for its retries), the others skip until it lapses."""
    show = await make.show(db, 2)
    await engine.seat_map(show.id)
    one, two = (Reconciler(engine, pool, interval_s=0.5) for _ in range(2))
    assert await one._pass() and await two._pass()
    assert (one.passes, two.passes) == (1, 0)
    assert await one._pass()  # its own turn still
    assert (one.passes, two.passes) == (2, 0)
    await make.ticket(db, user, show.id, show.seat_ids[0])
    await db.execute("UPDATE tickets SET booked_at = now() - interval '1 minute'")  # settled
    await asyncio.sleep(0.5 * module.TURN_SHARE)  # the turn lapsed
    assert await two._pass() and await one._pass()
    assert (one.passes, two.passes, two.repairs) == (2, 1, 1)
    assert (await states(engine, show.id))[show.seat_ids[0]] == ("booked", user)


async def test_without_an_answer_about_the_turn_each_process_passes(
    engine: SeatEngine, pool: asyncpg.Pool, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turn's key on a cluster primary that is down: the screenings of the others are still
    reconciled, by every process, as before turns."""
    show = await make.show(db, 2)
    await engine.seat_map(show.id)
    one, two = (Reconciler(engine, pool, interval_s=30) for _ in range(2))
    command = engine.transport.command

    async def turn_unanswered(*args: Any) -> Any:
        if module.TURN in args:
            raise RedisConnectionError("the turn's primary is down")
        return await command(*args)

    monkeypatch.setattr(engine.transport, "command", turn_unanswered)
    assert await one._pass() and await two._pass()
    assert (one.passes, two.passes) == (1, 1)
    assert not one.failing and not two.failing


async def test_a_ticket_cancelled_while_a_pass_runs_is_not_marked_sold(
    engine: SeatEngine,
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    user: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ticket committed just now, its seat not yet marked, and cancelled (seat freed) right
    after the pass read PostgreSQL: the pass must not sell the seat of a cancelled ticket.
    It once did, from a second query that no longer saw the ticket as a young sale."""
    show = await make.show(db, 2)
    seat = show.seat_ids[0]
    await engine.seat_map(show.id)  # loaded, the seat free
    ticket = await make.ticket(db, user, show.id, seat)
    read = module.repo.sales_to_reconcile

    async def then_cancelled(*args: object) -> object:
        found = await read(*args)  # type: ignore[arg-type]
        await db.execute(CANCEL, ticket)
        await engine.unsell(show.id, [seat])
        return found

    monkeypatch.setattr(module.repo, "sales_to_reconcile", then_cancelled)
    reconciler = Reconciler(engine, pool, interval_s=30)
    assert await reconciler.reconcile() == 0
    assert (await states(engine, show.id))[seat] == ("available", None)


async def test_a_seat_cancelled_and_sold_again_while_a_pass_runs_is_not_freed(
    engine: SeatEngine,
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    user: int,
    other: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pass reads the seat sold in Redis; its ticket is cancelled (the seat freed) before
    the pass reads PostgreSQL, and another user books the seat before the pass repairs: the
    pass must not free the new sale (it once did: a seat on sale again while sold)."""
    show = await make.show(db, 2)
    seat = show.seat_ids[0]
    first = await make.ticket(db, user, show.id, seat)
    await db.execute("UPDATE tickets SET booked_at = now() - interval '1 minute'")
    await engine.seat_map(show.id)  # loaded with the seat sold to the user
    reconciler = Reconciler(engine, pool, interval_s=30)
    read_redis, read_postgres = reconciler._sold_where_answered, module.repo.sales_to_reconcile

    async def then_cancelled(screening_ids: list[int]) -> list[dict[int, int] | None]:
        found = await read_redis(screening_ids)
        await db.execute(CANCEL, first)
        await engine.unsell(show.id, [seat])
        return found

    async def then_sold_again(*args: object) -> object:
        found = await read_postgres(*args)  # type: ignore[arg-type]
        await make.ticket(db, other, show.id, seat)
        await engine.sell(show.id, {seat: other})
        return found

    monkeypatch.setattr(reconciler, "_sold_where_answered", then_cancelled)
    monkeypatch.setattr(module.repo, "sales_to_reconcile", then_sold_again)
    assert await reconciler.reconcile() == 0
    assert (await states(engine, show.id))[seat] == ("booked", other)


CANCEL = "UPDATE tickets SET status = 'cancelled', cancelled_at = now() WHERE id = $1"
