"""Auto-pipelining, on every transport: concurrent calls share round trips, errors stay apart."""

from __future__ import annotations

import asyncio
import sys

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from seatlock.engine import batching
from seatlock.engine.batching import Batcher
from seatlock.engine.errors import SeatsUnavailable
from seatlock.engine.scripts import source
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from seatlock.engine.wire import MAX_BATCH
from seatlock.errors import Unavailable
from tests.lua.support import DictSource, make_engine, tap

S = 801
SEATS = list(range(1, 1001))


@pytest.fixture
def engine(transport: Transport) -> SeatEngine:
    source = DictSource()
    source.add(S, SEATS)
    return make_engine(transport, source, max_seats_per_user=2)


def pipelines(engine: SeatEngine) -> int:
    """Writes (fast) or pipelines (redis-py) sent so far: round trips."""
    sent: int = getattr(engine.transport, "pipelines")  # noqa: B009  (not in the interface)
    return sent


async def test_500_concurrent_holds_go_out_in_a_few_pipelines(engine: SeatEngine) -> None:
    await engine.seat_map(S)  # loaded first: only hold scripts below
    before = pipelines(engine)
    holds = await asyncio.gather(*(engine.hold(S, user, [user]) for user in range(1, 501)))
    assert [h[0].seat_id for h in holds] == list(range(1, 501))
    sent = pipelines(engine) - before
    assert sent <= 500 // MAX_BATCH + 2, sent


async def test_calls_made_while_a_write_is_unanswered_go_out_together(
    redis: Redis, engine: SeatEngine
) -> None:
    """One write in flight: calls made in later loop iterations meanwhile share the next write."""
    await engine.seat_map(S)
    before = pipelines(engine)
    await redis.execute_command("CLIENT", "PAUSE", 300, "WRITE")  # the first write stays unanswered
    first = asyncio.create_task(engine.hold(S, 1, [1]))
    later = []
    for user in range(2, 302):
        if user % 30 == 0:
            await asyncio.sleep(0)  # ten more loop iterations while the first write waits
        later.append(asyncio.create_task(engine.hold(S, user, [user])))
    await asyncio.gather(first, *later)
    assert pipelines(engine) - before == 2  # one write per loop iteration would be 11


async def test_errors_are_per_call(redis: Redis, engine: SeatEngine) -> None:
    await engine.hold(S, 1, [1])
    await redis.set("sl:test:a-string", "x")  # HGET on it inside a script: WRONGTYPE
    results = await asyncio.gather(
        engine.hold(S, 2, [2]),
        engine.hold(S, 3, [1]),  # taken
        engine.transport.run("hold", ["sl:test:a-string"], [S, 0]),
        engine.hold(S, 4, [4]),
        return_exceptions=True,
    )
    assert results[0][0].seat_id == 2  # type: ignore[index]
    assert isinstance(results[1], SeatsUnavailable)
    assert isinstance(results[2], ResponseError)
    assert results[3][0].seat_id == 4  # type: ignore[index]


async def test_calls_reach_redis_in_the_order_made(redis: Redis, engine: SeatEngine) -> None:
    await engine.seat_map(S)
    await redis.script_load(source("hold"))  # Redis knows hold, not release: no reordering
    async with tap(redis, S) as events:
        await asyncio.gather(
            engine.hold(S, 1, [5]), engine.release(S, 1, [5]), engine.hold(S, 2, [5])
        )
        got = [(await events.next())["seats"][0] for _ in range(3)]
    assert [(c["status"], c["user_id"]) for c in got] == [
        ("reserved", 1),
        ("available", None),
        ("reserved", 2),
    ]


async def test_a_script_flush_mid_batch_reloads_and_every_call_runs(
    redis: Redis, engine: SeatEngine
) -> None:
    await engine.seat_map(S)
    await redis.script_flush()
    holds = await asyncio.gather(*(engine.hold(S, user, [user]) for user in range(1, 51)))
    assert len(holds) == 50


async def test_a_cancelled_caller_does_not_break_the_others(engine: SeatEngine) -> None:
    await engine.seat_map(S)
    doomed = asyncio.ensure_future(engine.hold(S, 1, [1]))
    others = [asyncio.ensure_future(engine.hold(S, u, [u])) for u in range(2, 20)]
    await asyncio.sleep(0)
    doomed.cancel()
    assert len(await asyncio.gather(*others)) == 18


async def test_the_queue_is_bounded(engine: SeatEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    await engine.seat_map(S)
    transport = engine.transport  # the queue of the redis-py transports is batching's
    module = batching if isinstance(transport, Batcher) else sys.modules[type(transport).__module__]
    monkeypatch.setattr(module, "MAX_QUEUE", 10)
    results = await asyncio.gather(
        *(engine.hold(S, user, [user]) for user in range(1, 31)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, Unavailable)]
    assert len(refused) == 20
    assert all(isinstance(r, list) for r in results[:10])
