"""The engine's Python side: loading from the LayoutSource (invariant 7), errors, versions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from seatlock import keys
from seatlock.engine.errors import (
    HoldExpired,
    HoldNotFound,
    ScreeningNotFound,
    ScreeningStarted,
    SeatsUnavailable,
    TooManySeats,
    UnknownSeats,
    raise_for,
)
from seatlock.engine.model import Layout, new_grant
from seatlock.engine.scripts import Status
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from seatlock.errors import InvalidInput, SeatLockError, Unavailable
from seatlock.server.embedded import free_port
from tests.lua.support import (
    DictSource,
    Transports,
    dump,
    engine_redis,
    make_engine,
    now_ms,
    two_screenings,
)

S, T = 601, 602
ALICE, BOB = 7, 8


@pytest.fixture
def source() -> DictSource:
    return two_screenings(S, T, BOB)


@pytest.fixture
def engine(transport: Transport, source: DictSource) -> SeatEngine:
    return make_engine(transport, source)


async def test_after_flushall_sold_seats_come_back_before_any_hold(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    await engine.hold(S, ALICE, [1])
    await engine.sell(S, {1: ALICE})
    source.layouts[S].sold[1] = ALICE  # what PostgreSQL committed
    await redis.flushall()
    with pytest.raises(SeatsUnavailable) as info:
        await engine.hold(S, BOB, [1, 2])
    assert info.value.detail == "Seats [1] are already booked"
    with pytest.raises(SeatsUnavailable, match=r"Seats \[4\] are already booked"):
        await engine.hold(S, ALICE, [4])
    assert [s.status for s in await engine.seat_map(S)] == [
        "booked",
        "available",
        "available",
        "booked",
    ]


async def test_source_down_means_unavailable_never_available(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    source.fail = True
    with pytest.raises(Unavailable):
        await engine.hold(S, ALICE, [1])
    with pytest.raises(Unavailable):
        await engine.seat_map(S)
    assert await dump(redis, S) == {}
    source.fail = False
    assert (await engine.hold(S, ALICE, [1]))[0].seat_id == 1


async def test_unknown_screening(redis: Redis, engine: SeatEngine) -> None:
    with pytest.raises(ScreeningNotFound) as info:
        await engine.hold(999, ALICE, [1])
    assert info.value.detail == "Screening not found"
    with pytest.raises(ScreeningNotFound):
        await engine.seat_map(999)
    assert await engine.release(999, ALICE, None) == []
    assert await dump(redis, 999) == {}
    # Anyone may ask for any id (seat maps are public): nothing is kept per id that never loads.
    for screening_id in range(1000, 1100):
        with pytest.raises(ScreeningNotFound):
            await engine.seat_map(screening_id)
    assert engine._loading == {}


async def test_one_load_per_screening_per_process(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    results = await asyncio.gather(
        *(engine.hold(S, user, [1 + user % 3]) for user in range(30)), return_exceptions=True
    )
    assert source.calls == 1
    assert sum(not isinstance(r, BaseException) for r in results) == 3
    assert engine._loading == {}  # the screening's lock went with its last waiter
    assert await redis.zscore(keys.LOADED_SCREENINGS, S) == source.layouts[S].starts_at_ms


async def test_a_grant_releases_only_what_it_took(redis: Redis, engine: SeatEngine) -> None:
    """A user holds seat 1, then a second request for seats 1 and 2 succeeds but its reservation
    id cannot be had: compensating by the second grant must not release seat 1."""
    now = now_ms()
    first = await engine.hold(S, ALICE, [1], now)
    second = await engine.hold(S, ALICE, [1, 2], now + 1000, grant=new_grant())
    assert [h.grant for h in second] == [first[0].grant, second[1].grant]
    assert first[0].grant != second[1].grant
    assert await engine.release_grant(S, second[1].grant, [1, 2], now + 2000) == [2]
    states = await engine.seat_map(S, now + 2000)
    assert [(s.seat_id, s.status, s.user_id) for s in states[:2]] == [
        (1, "reserved", ALICE),
        (2, "available", None),
    ]
    await engine.claim(S, ALICE, [1], now + 2000)  # still the user's, and claimable
    with pytest.raises(HoldExpired):
        await engine.claim(S, ALICE, [2], now + 2000)
    assert await engine.release_grant(S, first[0].grant, [1], now + 3000) == [1]


async def test_holds_of_a_started_screening_can_no_longer_be_extended_or_booked(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    # The screening was moved to start in a minute (an admin's change reaches Redis by refresh).
    now = now_ms()
    await engine.hold(S, ALICE, [1, 2], now)
    source.add(S, [1, 2, 3, 4], {4: BOB}, starts_at_ms=now + 60_000)
    await engine.refresh(S, now)
    before = await dump(redis, S)
    with pytest.raises(ScreeningStarted, match="Cannot extend reservations for past screenings"):
        await engine.extend(S, ALICE, [1], 60_000, now + 60_000)
    with pytest.raises(ScreeningStarted, match="Cannot book seats for past screenings"):
        await engine.claim(S, ALICE, [1, 2], now + 60_000)
    assert await dump(redis, S) == before  # refusals change nothing
    await engine.claim(S, ALICE, [1, 2], now + 59_999)  # a moment before, still bookable


async def test_calls_that_need_no_layout_do_not_load(
    engine: SeatEngine, source: DictSource
) -> None:
    assert await engine.release(S, ALICE, [1]) == []
    assert await engine.release_grant(S, new_grant(), [1]) == []
    assert await engine.expire_leases(S, [1]) == 0
    assert await engine.sweep() == 0
    assert source.calls == 0


async def test_sell_on_an_unloaded_screening_loads_it(
    engine: SeatEngine, source: DictSource
) -> None:
    source.layouts[S].sold[2] = ALICE
    await engine.sell(S, {2: ALICE})
    assert source.calls == 1
    states = await engine.seat_map(S)
    assert (states[1].status, states[1].user_id) == ("booked", ALICE)


async def test_version_changes_on_every_seat_change_only(engine: SeatEngine, redis: Redis) -> None:
    now = now_ms()
    await engine.seat_map(S, now)
    seen = [await engine.version(S)]

    async def changed() -> None:
        version = await engine.version(S)
        assert version > seen[-1]
        seen.append(version)

    await engine.hold(S, ALICE, [1, 2], now)
    await changed()
    await engine.extend(S, ALICE, [1], 60_000, now)
    await changed()
    await engine.release(S, ALICE, [2], now)
    await changed()
    await engine.sell(S, {1: ALICE}, now)
    await changed()
    await engine.unsell(S, [1], now)
    await changed()
    await engine.hold(S, ALICE, [3], now)
    await changed()
    await engine.sweep(now + 10 * 60_000)
    await changed()
    with pytest.raises(SeatsUnavailable):
        await engine.hold(S, ALICE, [4], now)
    await engine.seat_map(S, now)
    assert await engine.version(S) == seen[-1]
    await redis.flushall()
    await engine.seat_map(S)
    await changed()  # restarts above the lost value


async def test_bad_arguments(engine: SeatEngine) -> None:
    with pytest.raises(InvalidInput):
        await engine.hold(S, ALICE, [])
    with pytest.raises(InvalidInput):
        await engine.extend(S, ALICE, [1], 0)


async def test_sweep_covers_every_loaded_screening(engine: SeatEngine, redis: Redis) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1, 2], now)
    await engine.hold(T, ALICE, [1], now)
    await engine.hold(T, BOB, [2], now + 60_000)
    assert await engine.sweep(now + 5 * 60_000) == 3
    assert await engine.seat_map(T, now + 5 * 60_000)
    states = {s.seat_id: s.status for s in await engine.seat_map(T, now + 5 * 60_000)}
    assert states == {1: "available", 2: "reserved"}
    await redis.delete(keys.screening_meta(T))  # Redis lost the screening (eviction)
    assert await engine.sweep(now + 10 * 60_000) == 0
    assert await redis.zscore(keys.LOADED_SCREENINGS, T) is None


async def test_redis_down_means_unavailable(source: DictSource, transports: Transports) -> None:
    dead = Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    try:
        engine = make_engine(transports(dead), source)
        with pytest.raises(Unavailable):
            await engine.hold(S, ALICE, [1])
    finally:
        await dead.aclose()


async def test_out_of_range_ids_are_refused_before_redis(engine: SeatEngine, redis: Redis) -> None:
    with pytest.raises(UnknownSeats) as info:
        await engine.hold(S, ALICE, [1, 0, 2**60])
    assert info.value.seat_ids == [0, 2**60]
    with pytest.raises(InvalidInput):
        await engine.hold(S, -1, [1])
    assert await dump(redis, S) == {}


async def test_sweep_batches_many_screenings(
    engine: SeatEngine, source: DictSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("seatlock.engine.seats.SWEEP_BATCH", 3)
    now = now_ms()
    for screening in range(1000, 1008):
        source.add(screening, [1, 2, 3, 4, 5])
        await engine.hold(screening, ALICE, [1, 2, 3, 4], now)
    assert await engine.sweep(now + 5 * 60_000) == 8 * 3  # 3 seats per script run
    assert await engine.sweep(now + 5 * 60_000) == 8


async def test_unsell_and_sell_correct_a_load_that_read_postgresql_before_them(
    source: DictSource, transports: Transports
) -> None:
    stale = DictSource()  # what another process read from PostgreSQL a moment earlier
    stale.add(S, [1, 2, 3, 4], {4: BOB})

    class Racing(DictSource):
        async def __call__(self, screening_id: int) -> Layout | None:
            await make_engine(transports(), stale).seat_map(screening_id)  # its load lands first
            return await source(screening_id)

    engine = make_engine(transports(), Racing())
    del source.layouts[S].sold[4]  # the ticket was cancelled in PostgreSQL, then:
    await engine.unsell(S, [4])
    assert (await engine.seat_map(S))[3].status == "available"
    await engine.transport.command("FLUSHALL")
    source.layouts[S].sold[2] = ALICE  # a booking committed in PostgreSQL, then:
    await engine.sell(S, {2: ALICE})
    assert (await engine.seat_map(S))[1].status == "booked"
    await engine.unsell(999, [1])  # no such screening: nothing to do


async def test_the_sweep_forgets_screenings_long_over(
    engine: SeatEngine, source: DictSource, redis: Redis
) -> None:
    now = now_ms()
    source.add(T, [1, 2], starts_at_ms=now + 1000)
    await engine.hold(T, ALICE, [1], now)
    await engine.hold(S, ALICE, [1], now)
    assert await engine.sweep(now + 5 * 60_000) == 2
    later = now + 1000 + engine.max_hold_ms + 3_600_000 + 1
    await engine.sweep(later)
    assert await redis.zrange(keys.LOADED_SCREENINGS, 0, -1) == [str(S).encode()]


async def test_works_with_a_decoding_client(
    backend_urls: tuple[str, str], source: DictSource, transports: Transports
) -> None:
    async with engine_redis(backend_urls[0], decode_responses=True) as client:
        engine = make_engine(transports(client), source)
        now = now_ms()
        assert (await engine.hold(S, ALICE, [1, 2], now))[1].expires_at_ms == now + 300_000
        assert (await engine.seat_map(S, now))[0].user_id == ALICE
        assert await engine.release(S, ALICE, None, now) == [1, 2]
        await engine.hold(S, ALICE, [3], now)
        assert await engine.sweep(now + 300_000) == 1
        assert await engine.version(S) > 0
        assert await engine.expire_leases(S, [3], now) == 0


@pytest.mark.parametrize(
    ("reply", "kind", "detail"),
    [
        ([5, 3, 1], SeatsUnavailable, "Seats [1, 3] are currently reserved by other users"),
        ([Status.BOOKED, 2], SeatsUnavailable, "Seats [2] are already booked"),
        ([1], Unavailable, "Seat data is being restored, try again shortly"),
        ([2], ScreeningStarted, "Cannot reserve seats for past screenings"),
        ([3, b"9", b"8"], UnknownSeats, "Seats [8, 9] not found in this screening"),
        ([6, 4], TooManySeats, "You can hold at most 4 seats in this screening"),
        ([7, 5], HoldNotFound, "No active reservation for seats [5]"),
        ([8, 6, 5], HoldExpired, "Reservation for seats [5, 6] has expired or does not exist"),
    ],
)
def test_every_script_status_has_its_error(
    reply: list[Any], kind: type[SeatLockError], detail: str
) -> None:
    with pytest.raises(kind) as info:
        raise_for(reply)
    assert info.value.detail == detail
    assert info.value.args == (detail,)
    assert str(info.value) == detail


def test_ok_and_unknown_statuses() -> None:
    raise_for([Status.OK, 1, 2])
    raise_for([0])
    with pytest.raises(ValueError):
        raise_for([99, 1])


def test_unavailable_seats_name_them_sorted() -> None:
    taken = SeatsUnavailable([9, 2, 5], booked=False)
    assert taken.seat_ids == [2, 5, 9]
    assert taken.detail == "Seats [2, 5, 9] are currently reserved by other users"
    booked = SeatsUnavailable([5, 9, 2], booked=True)
    assert booked.detail == "Seats [2, 5, 9] are already booked"
    assert SeatsUnavailable([2, 5, 9], booked=False).detail == taken.detail


async def test_renumber_moves_the_version_past_the_restart_once(
    redis: Redis, engine: SeatEngine
) -> None:
    """A Redis back from an older snapshot: versions before its restart are numbered past it,
    once, whichever process asks first; one not loaded is left to its load."""
    await engine.hold(S, ALICE, [1])
    before = await engine.version(S)
    restarted_ms = now_ms() + 5_000  # later than any version handed out so far
    assert await engine.renumber(S, restarted_ms)
    after = await engine.version(S)
    assert after > restarted_ms * 1000 > before
    assert not await engine.renumber(S, restarted_ms)  # another process: numbered already
    assert await engine.version(S) == after
    assert [s.status for s in await engine.seat_map(S)][:2] == ["reserved", "available"]
    assert not await engine.renumber(S + 1, restarted_ms)  # not loaded
