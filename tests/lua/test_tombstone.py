"""A deleted screening stays deleted in Redis: ``forget`` leaves a tombstone (lua/forget.lua), and
a load or refresh in another process that read the layout before the delete, and writes it after
the forget, writes nothing (lua/load.lua, lua/refresh.lua answer DELETED: ScreeningNotFound).
The per-process lock (``_one_at_a_time``) does not order two processes; these races are played
here deterministically, the other process's forget run from inside the stale layout read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from seatlock import keys
from seatlock.engine.errors import ScreeningNotFound
from seatlock.engine.model import Layout
from seatlock.engine.scripts import Status
from seatlock.engine.seats import TOMBSTONE_MS, SeatEngine, _layout_args
from seatlock.engine.transport import Transport
from seatlock.errors import Unavailable
from tests.lua.support import DictSource, Transports, dump, make_engine, now_ms, two_screenings

S, T = 801, 802
ALICE, BOB = 7, 8


class StaleSource(DictSource):
    """PostgreSQL as a process that read S's layout just before the delete committed sees it:
    the first read of S returns the layout, and ``meanwhile`` (the delete and its forget,
    elsewhere) runs before the caller gets it."""

    def __init__(self, source: DictSource, meanwhile: Callable[[], Awaitable[object]]) -> None:
        super().__init__()
        self.layouts = source.layouts
        self.meanwhile: Callable[[], Awaitable[object]] | None = meanwhile

    async def __call__(self, screening_id: int) -> Layout | None:
        layout = await super().__call__(screening_id)
        if screening_id == S and self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile()
        return layout


@pytest.fixture
def source() -> DictSource:
    return two_screenings(S, T, BOB)


@pytest.fixture
def deleter(transports: Transports, source: DictSource) -> SeatEngine:
    """The process that deletes the screening (its own transport: another process)."""
    return make_engine(transports(), source)


def deleting(source: DictSource, deleter: SeatEngine) -> Callable[[], Awaitable[None]]:
    async def delete() -> None:
        del source.layouts[S]  # committed in PostgreSQL
        await deleter.forget(S)

    return delete


async def assert_deleted(redis: Redis, *engines: SeatEngine) -> None:
    """Nothing of S but its tombstone, and every engine refuses S as not found."""
    assert set(await dump(redis, S)) == {keys.screening_deleted(S)}
    assert not await redis.hget(keys.screening_meta(S), "ready")
    assert await redis.zscore(keys.LOADED_SCREENINGS, str(S)) is None
    for engine in engines:
        with pytest.raises(ScreeningNotFound):
            await engine.hold(S, ALICE, [2])
        with pytest.raises(ScreeningNotFound):
            await engine.seat_map(S)


def test_the_tombstone_is_on_the_screenings_cluster_slot() -> None:
    tombstone = keys.screening_deleted(S).encode()
    assert key_slot(tombstone) == key_slot(keys.screening_meta(S).encode())
    assert keys.parse_seat_hold(tombstone) is None


async def test_forget_leaves_a_tombstone_with_a_long_ttl(
    redis: Redis, deleter: SeatEngine, source: DictSource
) -> None:
    await deleter.hold(S, ALICE, [1])
    await deleter.hold(T, ALICE, [1])
    del source.layouts[S]
    await deleter.forget(S)
    tombstone = keys.screening_deleted(S)
    assert TOMBSTONE_MS - 60_000 < await redis.pttl(tombstone) <= TOMBSTONE_MS
    await assert_deleted(redis, deleter)
    assert not await redis.exists(keys.screening_deleted(T))  # others untouched
    assert len(await deleter.seat_map(T)) == 2


async def test_a_load_that_read_the_layout_before_the_forget_writes_nothing(
    redis: Redis, transports: Transports, deleter: SeatEngine, source: DictSource
) -> None:
    loader = make_engine(transports(), StaleSource(source, deleting(source, deleter)))
    with pytest.raises(ScreeningNotFound):
        await loader.hold(S, ALICE, [1])  # first use: loads S from the stale read
    await assert_deleted(redis, loader, deleter)


async def test_a_refresh_that_read_the_layout_before_the_forget_writes_nothing(
    redis: Redis, transports: Transports, deleter: SeatEngine, source: DictSource
) -> None:
    await deleter.hold(S, ALICE, [1])  # loaded, with a hold
    refresher = make_engine(transports(), StaleSource(source, deleting(source, deleter)))
    assert not await refresher.refresh(S)  # an admin's PUT racing the DELETE
    await assert_deleted(redis, refresher, deleter)


async def test_refresh_loaded_of_a_deleted_screening_writes_nothing(
    redis: Redis, transports: Transports, deleter: SeatEngine, source: DictSource
) -> None:
    await deleter.hold(S, ALICE, [1])
    await deleter.hold(T, ALICE, [1])
    refresher = make_engine(transports(), StaleSource(source, deleting(source, deleter)))
    assert await refresher.refresh_loaded([S, T]) == [S, T]  # seats added to their room
    await assert_deleted(redis, refresher, deleter)
    states = await refresher.seat_map(T)
    assert [(s.seat_id, s.status) for s in states] == [(1, "reserved"), (2, "available")]


@pytest.mark.parametrize("name", ["load", "refresh"])
async def test_the_scripts_refuse_a_screening_with_a_tombstone(
    redis: Redis, deleter: SeatEngine, source: DictSource, name: str
) -> None:
    now = now_ms()
    layout = source.layouts[S]  # read before the delete
    await deleter.hold(S, ALICE, [1], now)
    del source.layouts[S]
    await deleter.forget(S, now)
    before = await dump(redis, S)
    args = [S, now, *_layout_args(layout, 100, False)]
    script_keys = [*keys.script_keys(S), keys.screening_deleted(S), keys.screening_rows(S)]
    reply = await deleter.transport.run(name, script_keys, args)
    assert [int(reply[0]), int(reply[1])] == [Status.DELETED, S]
    assert await dump(redis, S) == before
    await assert_deleted(redis, deleter)


async def test_a_refresh_that_found_no_screening_leaves_no_tombstone(
    redis: Redis, deleter: SeatEngine, source: DictSource
) -> None:
    # An id PostgreSQL does not have may be one not created yet: no tombstone may refuse it.
    assert not await deleter.refresh(999)
    assert await dump(redis, 999) == {}
    source.add(999, [1, 2])
    assert len(await deleter.hold(999, ALICE, [1])) == 1


class ForgetAfterReady:
    """A transport that, when the engine asks whether S is ready (``_load``), first has
    ``other`` load S and then forget it once the answer ("ready") is on its way: the hold's
    second run then finds S gone."""

    def __init__(self, inner: Transport, other: SeatEngine, source: DictSource) -> None:
        self._inner, self._other, self._source = inner, other, source

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def command(self, *args: Any) -> Any:
        if args[:3] != ("HGET", keys.screening_meta(S), "ready"):
            return await self._inner.command(*args)
        await self._other.seat_map(S)
        answer = await self._inner.command(*args)
        del self._source.layouts[S]
        await self._other.forget(S)
        return answer


async def test_a_hold_on_a_screening_forgotten_during_its_load_is_not_found(
    redis: Redis, transports: Transports, deleter: SeatEngine, source: DictSource
) -> None:
    racing: Any = ForgetAfterReady(transports(), deleter, source)
    engine = make_engine(racing, source)
    try:
        await engine.hold(S, ALICE, [1])
    except Unavailable as exc:  # the old answer: 503 "Seat data is being restored"
        pytest.fail(f"answered {exc!r}")
    except ScreeningNotFound:
        pass
    else:
        pytest.fail("the hold was accepted")
    await assert_deleted(redis, deleter)
