"""Each Lua script through the engine: its success, every refusal, and "nothing changed" after a
refusal (a dump of the screening's keys before and after), plus the event each change publishes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from seatlock import keys
from seatlock.engine.errors import (
    HoldExpired,
    HoldNotFound,
    ScreeningStarted,
    SeatsUnavailable,
    TooManySeats,
    UnknownSeats,
)
from seatlock.engine.scripts import NAMES, PRELUDE, Status, lua_dir
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from seatlock.errors import InvalidInput, SeatLockError
from tests.lua.support import DictSource, calls_made, dump, make_engine, now_ms, tap

S = 501  # screening id
ALICE, BOB = 7, 8
MIN = 60_000
G1, G2, G3 = "1111aaaa1111aaaa", "2222bbbb2222bbbb", "3333cccc3333cccc"  # grant tokens


@pytest.fixture
def source() -> DictSource:
    src = DictSource()
    src.add(S, list(range(1, 11)), {10: 99})
    return src


@pytest.fixture
def engine(transport: Transport, source: DictSource) -> SeatEngine:
    limits = {"hold_ms": 5 * MIN, "max_hold_ms": 12 * MIN, "max_seats_per_user": 4}
    return make_engine(transport, source, **limits)


async def refused(
    redis: Redis, call: Awaitable[object], error: type[SeatLockError]
) -> SeatLockError:
    """Run a call that must be refused; assert it changed no key and published nothing."""
    before = await dump(redis, S)
    async with tap(redis, S) as events:
        with pytest.raises(error) as info:
            await call
        await events.none(0.05)
    assert await dump(redis, S) == before
    return info.value


def test_every_script_has_a_contract_header_and_builds_no_key() -> None:
    for name in (*NAMES, PRELUDE):
        text = (lua_dir() / f"{name}.lua").read_text()
        header = text.split("\nif ", 1)[0] if name != PRELUDE else text
        for word in ("KEYS", "ARGV"):
            assert word in header, (name, word)
        if name != PRELUDE:
            assert "Returns" in header, name
        # Keys arrive in KEYS only (Redis Cluster): no key prefix or hash tag inside Lua.
        assert not re.search(r"['\"]sl:|\{scr:", text), name
    assert Path(lua_dir(), "hold.lua").is_file()


@pytest.mark.parametrize("screening", [1, 42, 987654321])
def test_every_key_of_a_script_is_on_one_cluster_slot(screening: int) -> None:
    script_keys = keys.script_keys(screening, [1, 2, 500])
    assert len({key_slot(key.encode()) for key in script_keys}) == 1
    assert keys.parse_seat_hold(script_keys[-1]) == (screening, 500)
    assert all(keys.parse_seat_hold(key) is None for key in script_keys[:-3])


async def test_hold_success_publishes_and_writes_leases(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    async with tap(redis, S) as events:
        holds = await engine.hold(S, ALICE, [3, 2], now, grant=G1)
        event = await events.next()
    assert [(h.seat_id, h.user_id, h.expires_at_ms, h.grant) for h in holds] == [
        (2, ALICE, now + 5 * MIN, G1),
        (3, ALICE, now + 5 * MIN, G1),
    ]
    assert event == {
        "screening_id": S,
        "ts": now,
        "seats": [
            {"seat_id": 2, "status": "reserved", "user_id": ALICE, "expires_at": now + 5 * MIN},
            {"seat_id": 3, "status": "reserved", "user_id": ALICE, "expires_at": now + 5 * MIN},
        ],
    }
    assert await redis.get(keys.seat_hold(S, 2)) == f"{ALICE}:{G1}".encode()  # holder:grant
    assert 0 < await redis.pttl(keys.seat_hold(S, 2)) <= 5 * MIN


async def test_hold_makes_a_grant_per_request(redis: Redis, engine: SeatEngine) -> None:
    first = await engine.hold(S, ALICE, [1, 2])
    second = await engine.hold(S, ALICE, [3])
    assert first[0].grant == first[1].grant != second[0].grant
    assert re.fullmatch("[0-9a-f]{16}", second[0].grant)
    assert await redis.get(keys.seat_hold(S, 3)) == f"{ALICE}:{second[0].grant}".encode()
    for grant in ("", "a:b", "x" * 65, "with space"):
        with pytest.raises(InvalidInput):
            await engine.hold(S, ALICE, [4], grant=grant)
        with pytest.raises(InvalidInput):
            await engine.release_grant(S, grant, [1])


async def test_hold_again_by_the_holder_changes_nothing(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [2], now, grant=G1)
    before = await dump(redis, S)
    async with tap(redis, S) as events:
        holds = await engine.hold(S, ALICE, [2], now + 1000, grant=G2)
        await events.none(0.05)
    assert (holds[0].expires_at_ms, holds[0].grant) == (now + 5 * MIN, G1)
    assert await dump(redis, S) == before


async def test_a_kept_seat_keeps_its_grant(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1], now, grant=G1)
    async with tap(redis, S) as events:
        holds = await engine.hold(S, ALICE, [1, 2], now + MIN, grant=G2)
        event = await events.next()
    assert [(h.seat_id, h.expires_at_ms, h.grant) for h in holds] == [
        (1, now + 5 * MIN, G1),
        (2, now + 6 * MIN, G2),
    ]
    assert [s["seat_id"] for s in event["seats"]] == [2]
    leases = await redis.mget(keys.seat_hold(S, 1), keys.seat_hold(S, 2))
    assert leases == [f"{ALICE}:{G1}".encode(), f"{ALICE}:{G2}".encode()]


async def test_hold_refusals_change_nothing(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, BOB, [4, 5], now)
    taken = await refused(redis, engine.hold(S, ALICE, [1, 5, 4], now), SeatsUnavailable)
    assert taken.detail == "Seats [4, 5] are currently reserved by other users"
    booked = await refused(redis, engine.hold(S, ALICE, [1, 4, 10], now), SeatsUnavailable)
    assert booked.detail == "Seats [10] are already booked"
    unknown = await refused(redis, engine.hold(S, ALICE, [1, 77, 66], now), UnknownSeats)
    assert unknown.detail == "Seats [66, 77] not found in this screening"
    too_many = await refused(redis, engine.hold(S, BOB, [1, 2, 3], now), TooManySeats)
    assert "at most 4 seats" in too_many.detail
    await refused(redis, engine.hold(S, ALICE, [1, 2, 3, 6, 7], now), TooManySeats)


async def test_hold_refused_once_the_screening_started(
    redis: Redis, transport: Transport, source: DictSource
) -> None:
    source.add(S, [1, 2], starts_at_ms=now_ms() + 1000)
    engine = make_engine(transport, source)
    await engine.hold(S, ALICE, [1])
    error = await refused(redis, engine.hold(S, BOB, [2], now_ms() + 1000), ScreeningStarted)
    assert error.detail == "Cannot reserve seats for past screenings"


async def test_expired_hold_of_another_user_can_be_taken(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, BOB, [4], now)
    holds = await engine.hold(S, ALICE, [4], now + 5 * MIN, grant=G2)
    assert (holds[0].user_id, holds[0].grant) == (ALICE, G2)
    assert await redis.get(keys.seat_hold(S, 4)) == f"{ALICE}:{G2}".encode()


async def test_a_hold_whose_lease_is_gone_frees_its_seat(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, BOB, [4], now)
    await redis.delete(keys.seat_hold(S, 4))  # evicted, or expired on a clock ahead of ours
    await redis.set(keys.seat_hold(S, 5), BOB, px=MIN)  # a lease the index does not know
    holds = await engine.hold(S, ALICE, [4, 5], now, grant=G1)
    assert [(h.seat_id, h.user_id) for h in holds] == [(4, ALICE), (5, ALICE)]
    lease = f"{ALICE}:{G1}".encode()
    assert await redis.mget(keys.seat_hold(S, 4), keys.seat_hold(S, 5)) == [lease, lease]
    assert await redis.zscore(keys.screening_owners(S), "4") == ALICE


async def test_hold_over_seats_in_every_state(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, BOB, [2], now)
    await engine.hold(S, ALICE, [1], now + MIN)
    later = now + 5 * MIN  # BOB's hold lapsed (its lease key still exists), ALICE's did not
    async with tap(redis, S) as events:
        holds = await engine.hold(S, ALICE, [3, 2, 1], later)
        event = await events.next()
    assert [(h.seat_id, h.expires_at_ms) for h in holds] == [
        (1, now + 6 * MIN),
        (2, later + 5 * MIN),
        (3, later + 5 * MIN),
    ]
    assert [(s["seat_id"], s["user_id"], s["expires_at"]) for s in event["seats"]] == [
        (2, ALICE, later + 5 * MIN),
        (3, ALICE, later + 5 * MIN),
    ]
    index = await redis.hgetall(keys.screening_holds(S))
    assert index[b"1"] == f"{ALICE}:{now + 6 * MIN}:{now + MIN}:0".encode()
    assert index[b"2"] == index[b"3"] == f"{ALICE}:{later + 5 * MIN}:{later}:0".encode()
    assert await redis.zscore(keys.screening_deadlines(S), "2") == later + 5 * MIN
    with pytest.raises(TooManySeats):  # three live holds, two more asked
        await engine.hold(S, ALICE, [4, 5], later)


async def test_a_pinned_hold_past_its_expiry_is_kept_for_its_holder(
    redis: Redis, engine: SeatEngine
) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1], now)
    await engine.claim(S, ALICE, [1], now + 5 * MIN - 1, pin_ms=MIN)
    before = await dump(redis, S)
    holds = await engine.hold(S, ALICE, [1], now + 5 * MIN)
    assert holds[0].expires_at_ms == now + 5 * MIN  # unchanged: the booking is committing
    assert await dump(redis, S) == before
    with pytest.raises(SeatsUnavailable):
        await engine.hold(S, BOB, [1], now + 5 * MIN)


async def test_hold_and_release_take_one_command_per_step(redis: Redis, engine: SeatEngine) -> None:
    """Every check and every write covers all the seats in one command: each redis.call costs."""
    now = now_ms()
    await engine.seat_map(S, now)  # loaded
    held = await calls_made(redis, engine.hold(S, ALICE, [1, 2, 3, 4], now))
    assert {n: held.get(n) for n in ("hmget", "smismember", "mget", "hset", "zadd", "set")} == {
        "hmget": 2,  # meta, then the sold seats
        "smismember": 1,
        "mget": 1,
        "hset": 1,
        "zadd": 2,
        "set": 4,  # one SET ... PX per lease
    }
    assert not {"sismember", "hexists", "exists", "hget"} & set(held)
    released = await calls_made(redis, engine.release(S, ALICE, [1, 2, 3, 4], now))
    assert {name: released.get(name) for name in ("hmget", "del", "hdel", "zrem")} == {
        "hmget": 2,  # meta (ready and the log's length together), then the index
        "del": 1,
        "hdel": 1,
        "zrem": 2,
    }
    assert "hget" not in released
    holds = await engine.hold(S, ALICE, [1, 2, 3, 4], now)
    by_grant = await calls_made(redis, engine.release_grant(S, holds[0].grant, [1, 2, 3, 4], now))
    assert {n: by_grant.get(n) for n in ("mget", "hmget", "del", "hdel", "zrem")} == {
        "mget": 1,
        "hmget": 1,
        "del": 1,
        "hdel": 1,
        "zrem": 2,
    }


async def test_seat_lists_longer_than_one_command_batch(
    redis: Redis, transport: Transport, source: DictSource
) -> None:
    seats = list(range(1, 2601))
    source.add(S, seats)
    engine = make_engine(transport, source, max_seats_per_user=2600)
    now = now_ms()
    assert len(await engine.hold(S, BOB, seats[100:2500], now)) == 2400
    error = await refused(redis, engine.hold(S, ALICE, seats[:2600], now), SeatsUnavailable)
    assert error.seat_ids == seats[100:2500]
    async with tap(redis, S) as events:
        assert await engine.release(S, BOB, seats, now) == seats[100:2500]
        event = await events.next()
    assert [s["seat_id"] for s in event["seats"]] == seats[100:2500]
    gone = [keys.screening_holds(S), keys.screening_deadlines(S), keys.screening_owners(S)]
    assert await redis.exists(*gone, keys.seat_hold(S, 101), keys.seat_hold(S, 2500)) == 0


async def test_extend_success_and_cap(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1], now, grant=G1)
    await engine.hold(S, ALICE, [2], now, grant=G2)
    async with tap(redis, S) as events:
        holds = await engine.extend(S, ALICE, [1, 2], 5 * MIN, now + MIN)
        event = await events.next()
    assert {h.expires_at_ms for h in holds} == {now + 10 * MIN}
    assert [h.added_ms for h in holds] == [5 * MIN, 5 * MIN]
    assert [h.grant for h in holds] == [G1, G2]  # the leases keep their grants
    assert await redis.get(keys.seat_hold(S, 2)) == f"{ALICE}:{G2}".encode()
    assert [s["expires_at"] for s in event["seats"]] == [now + 10 * MIN] * 2
    capped = await engine.extend(S, ALICE, [1], 5 * MIN, now + 2 * MIN)
    assert capped[0].expires_at_ms == now + 12 * MIN  # max_hold_ms after the first hold
    assert capped[0].added_ms == 2 * MIN  # of the 5 asked
    before = await dump(redis, S)
    async with tap(redis, S) as events:
        again = await engine.extend(S, ALICE, [1], 5 * MIN, now + 3 * MIN)
        await events.none(0.05)
    assert again[0].expires_at_ms == now + 12 * MIN
    assert again[0].added_ms == 0
    assert await dump(redis, S) == before


async def test_extend_refusals_change_nothing(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1], now)
    await engine.hold(S, BOB, [2], now)
    other = await refused(redis, engine.extend(S, ALICE, [1, 2, 3], MIN, now), HoldNotFound)
    assert other.detail == "No active reservation for seats [2, 3]"
    await refused(redis, engine.extend(S, ALICE, [1], MIN, now + 5 * MIN), HoldNotFound)


async def test_release_only_touches_the_callers_holds(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1, 2, 3], now)
    await engine.hold(S, BOB, [4], now)
    async with tap(redis, S) as events:
        assert await engine.release(S, ALICE, [2, 4, 5], now) == [2]
        event = await events.next()
    assert event["seats"] == [
        {"seat_id": 2, "status": "available", "user_id": None, "expires_at": None}
    ]
    assert await engine.release(S, ALICE, None, now) == [1, 3]
    assert await redis.exists(keys.seat_hold(S, 1)) == 0
    before = await dump(redis, S)
    assert await engine.release(S, ALICE, [4], now) == []
    assert await dump(redis, S) == before
    states = {s.seat_id: s.status for s in await engine.seat_map(S, now)}
    assert states[4] == "reserved" and states[1] == states[2] == "available"


async def test_release_grant_frees_only_what_the_grant_took(
    redis: Redis, engine: SeatEngine
) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1], now, grant=G1)
    await engine.hold(S, ALICE, [1, 2, 3], now, grant=G2)  # 1 kept under G1
    await engine.hold(S, BOB, [4], now, grant=G3)
    async with tap(redis, S) as events:
        assert await engine.release_grant(S, G2, [1, 2, 4, 5], now) == [2]
        event = await events.next()
    assert event["seats"] == [
        {"seat_id": 2, "status": "available", "user_id": None, "expires_at": None}
    ]
    assert await redis.exists(keys.seat_hold(S, 2)) == 0
    assert await redis.hkeys(keys.screening_holds(S)) == [b"1", b"3", b"4"]
    states = {s.seat_id: (s.status, s.user_id) for s in await engine.seat_map(S, now)}
    assert states[1] == states[3] == ("reserved", ALICE) and states[4] == ("reserved", BOB)
    assert states[2] == ("available", None)
    # A lapsed hold of the grant whose lease is still there goes too (live or lapsed).
    assert await engine.release_grant(S, G2, [3], now + 5 * MIN) == [3]
    before = await dump(redis, S)
    async with tap(redis, S) as events:
        assert await engine.release_grant(S, G2, [1, 2, 3, 4], now) == []  # nothing of G2 left
        assert await engine.release_grant(S, "0" * 16, [1, 4], now) == []
        await events.none(0.05)
    assert await dump(redis, S) == before


async def test_leases_older_than_grants_still_work(redis: Redis, engine: SeatEngine) -> None:
    """A Redis holding leases written before grants (the bare user id: a rolling upgrade)."""
    now = now_ms()
    await engine.hold(S, ALICE, [1, 2], now)
    await redis.set(keys.seat_hold(S, 1), ALICE, px=5 * MIN)  # as the old hold script wrote it
    holds = await engine.hold(S, ALICE, [1, 3], now, grant=G1)
    assert [(h.seat_id, h.grant) for h in holds] == [(1, ""), (3, G1)]  # kept: of no grant
    assert (await engine.extend(S, ALICE, [1], MIN, now))[0].grant == ""
    await engine.claim(S, ALICE, [1], now)
    assert await redis.get(keys.seat_hold(S, 1)) == b"7"  # rewritten as it was
    assert await engine.release_grant(S, G1, [1, 3], now) == [3]
    assert await engine.release(S, ALICE, [1], now) == [1]  # by user, as before


async def test_claim_pins_the_lease(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1, 2], now, grant=G1)
    async with tap(redis, S) as events:
        await engine.claim(S, ALICE, [1, 2], now + 5 * MIN - 1, pin_ms=MIN)
        await events.none(0.05)
    assert await redis.get(keys.seat_hold(S, 1)) == f"{ALICE}:{G1}".encode()  # grant kept
    # The hold's own deadline passed, but the pin keeps the seat until the commit is done.
    later = now + 5 * MIN + 1000
    assert await engine.sweep(later) == 0
    assert await engine.hold(S, BOB, [3], later)
    with pytest.raises(SeatsUnavailable):
        await engine.hold(S, BOB, [1], later)
    assert MIN - 1000 < await redis.pttl(keys.seat_hold(S, 1)) <= MIN  # pinned at claim time


async def test_claim_refusals_change_nothing(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1], now)
    await engine.hold(S, BOB, [2], now)
    error = await refused(redis, engine.claim(S, ALICE, [1, 2, 3], now), HoldExpired)
    assert error.detail == "Reservation for seats [2, 3] has expired or does not exist"
    await refused(redis, engine.claim(S, ALICE, [1], now + 5 * MIN), HoldExpired)
    await refused(redis, engine.claim(S, ALICE, [10], now), HoldExpired)  # sold to someone else


async def test_claim_passes_seats_already_sold_to_the_caller(
    redis: Redis, engine: SeatEngine
) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1, 2], now)
    await engine.claim(S, ALICE, [1, 2], now)
    await engine.sell(S, {1: ALICE, 2: ALICE}, now)
    await engine.claim(S, ALICE, [1, 2], now + 10 * MIN)  # a retried booking
    with pytest.raises(HoldExpired):
        await engine.claim(S, BOB, [1], now)


async def test_sell_is_idempotent_and_drops_any_hold(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1], now)
    await engine.hold(S, BOB, [2], now)
    async with tap(redis, S) as events:
        await engine.sell(S, {1: ALICE, 2: ALICE}, now)
        event = await events.next()
    assert event["seats"] == [
        {"seat_id": 1, "status": "booked", "user_id": ALICE, "expires_at": None},
        {"seat_id": 2, "status": "booked", "user_id": ALICE, "expires_at": None},
    ]
    assert await redis.exists(keys.seat_hold(S, 1), keys.seat_hold(S, 2)) == 0
    assert await redis.hlen(keys.screening_holds(S)) == 0
    before = await dump(redis, S)
    async with tap(redis, S) as events:
        await engine.sell(S, {1: ALICE, 2: ALICE}, now)
        await events.none(0.05)
    assert await dump(redis, S) == before
    error = await refused(redis, engine.hold(S, BOB, [2], now), SeatsUnavailable)
    assert error.detail == "Seats [2] are already booked"


async def test_unsell_frees_the_seat_once(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.seat_map(S, now)
    async with tap(redis, S) as events:
        await engine.unsell(S, [10], now)
        event = await events.next()
        await engine.unsell(S, [10], now)
        await events.none(0.05)
    assert event["seats"] == [
        {"seat_id": 10, "status": "available", "user_id": None, "expires_at": None}
    ]
    assert (await engine.hold(S, ALICE, [10], now))[0].seat_id == 10


async def test_expire_drops_only_a_gone_lease(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1], now)
    lease = keys.seat_hold(S, 1)
    assert await engine.expire_leases(S, [1], now) == 0  # lease still there: a stale event
    assert await engine.expire_leases(S, [5], now) == 0  # no hold at all
    await redis.delete(lease)  # what Redis does when the TTL runs out
    async with tap(redis, S) as events:
        assert await engine.expire_leases(S, [1, 1], now) == 1
        event = await events.next()
        assert await engine.expire_leases(S, [1], now) == 0
        await events.none(0.05)
    assert event["seats"][0] == {
        "seat_id": 1,
        "status": "available",
        "user_id": None,
        "expires_at": None,
    }
    assert await redis.hlen(keys.screening_holds(S)) == 0


async def test_expire_drops_many_gone_leases_in_one_event(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1, 2, 3], now)
    await engine.hold(S, BOB, [4], now)
    await redis.delete(keys.seat_hold(S, 1), keys.seat_hold(S, 3), keys.seat_hold(S, 4))
    async with tap(redis, S) as events:
        # Seat 2's lease is still there (held again since its notification), seat 5 holds nothing.
        assert await engine.expire_leases(S, [5, 4, 3, 2, 1], now) == 3
        event = await events.next()
        await events.none(0.05)
    assert [seat["seat_id"] for seat in event["seats"]] == [1, 3, 4]
    assert {seat["status"] for seat in event["seats"]} == {"available"}
    assert await redis.hkeys(keys.screening_holds(S)) == [b"2"]
    assert await redis.zrange(keys.screening_deadlines(S), 0, -1) == [b"2"]
    assert await redis.zrange(keys.screening_owners(S), 0, -1) == [b"2"]


async def test_sweep_frees_only_what_is_due(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1, 2], now)
    await engine.hold(S, BOB, [3], now + MIN)
    assert await engine.sweep(now + 5 * MIN - 1) == 0
    async with tap(redis, S) as events:
        assert await engine.sweep(now + 5 * MIN) == 2
        event = await events.next()
    assert [s["seat_id"] for s in event["seats"]] == [1, 2]
    assert await redis.exists(keys.seat_hold(S, 1)) == 0
    assert [s.status for s in await engine.seat_map(S, now + 5 * MIN)][:3] == [
        "available",
        "available",
        "reserved",
    ]


async def test_load_is_atomic_and_idempotent(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.seat_map(S, now)
    before = await dump(redis, S)
    assert before[keys.screening_meta(S)][b"ready"] == b"1"
    assert before[keys.screening_sold(S)] == {b"10": b"99"}
    assert len(before[keys.screening_seats(S)]) == 10
    reply = await engine.transport.run("load", keys.script_keys(S, []), [S, now, 0, 500, 1, 1])
    assert reply == [0, 0]
    assert await dump(redis, S) == before


async def test_seat_map_is_read_only(redis: Redis, engine: SeatEngine) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1], now)
    before = await dump(redis, S)
    states = await engine.seat_map(S, now)
    assert [s.seat_id for s in states] == list(range(1, 11))
    assert states[0].status == "reserved" and states[0].user_id == ALICE
    assert states[0].expires_at_ms == now + 5 * MIN
    assert states[9].status == "booked" and states[9].user_id == 99
    assert await dump(redis, S) == before


async def test_scripts_survive_a_script_flush(redis: Redis, engine: SeatEngine) -> None:
    await engine.hold(S, ALICE, [1])
    await redis.script_flush()  # a restarted or failed-over Redis forgot them: NOSCRIPT, reload
    assert (await engine.hold(S, ALICE, [2]))[0].seat_id == 2


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("load", "refresh", "forget")])
async def test_every_script_refuses_an_unloaded_screening(
    redis: Redis, engine: SeatEngine, name: str
) -> None:
    args = [S, now_ms(), ALICE, 1000, 4, 1]
    reply = await engine.transport.run(name, keys.script_keys(S, [1]), args)
    assert reply == [Status.NOT_LOADED]
    assert await dump(redis, S) == {}


async def test_unpaid_seats_count_toward_the_cap_until_paid_or_due(
    redis: Redis, engine: SeatEngine
) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1, 2, 3], now)
    await engine.owe(S, ALICE, [1, 2, 3], now + 5 * MIN, now)  # before sell: counted as holds
    await refused(redis, engine.hold(S, ALICE, [4, 5], now), TooManySeats)
    await engine.sell(S, {1: ALICE, 2: ALICE, 3: ALICE}, now)  # now counted as unpaid
    too_many = await refused(redis, engine.hold(S, ALICE, [4, 5], now), TooManySeats)
    assert "at most 4 seats" in too_many.detail
    await engine.hold(S, ALICE, [4], now)
    assert await engine.release(S, ALICE, None, now) == [4]  # markers are not holds
    assert len(await engine.hold(S, ALICE, [4, 5, 6, 7], now + 5 * MIN)) == 4  # past the due


async def test_settle_and_unsell_stop_counting_unpaid_seats(
    redis: Redis, engine: SeatEngine
) -> None:
    now = now_ms()
    await engine.hold(S, ALICE, [1, 2, 3, 4], now)
    await engine.owe(S, ALICE, [1, 2, 3, 4], now + 5 * MIN, now)
    await engine.sell(S, {1: ALICE, 2: ALICE, 3: ALICE, 4: ALICE}, now)
    await refused(redis, engine.hold(S, ALICE, [5], now), TooManySeats)
    await engine.settle(S, ALICE, [1, 2], now)  # paid
    async with tap(redis, S) as events:
        await engine.unsell(S, [3], now)  # cancelled or expired
        assert (await events.next())["seats"] == [
            {"seat_id": 3, "status": "available", "user_id": None, "expires_at": None}
        ]
    owners = await redis.zrange(keys.screening_owners(S), 0, -1)
    assert owners == [f"p:4:{now + 5 * MIN}".encode()]
    assert len(await engine.hold(S, ALICE, [5, 6, 7], now)) == 3
    await refused(redis, engine.hold(S, ALICE, [8], now), TooManySeats)


async def test_a_marker_counts_only_while_its_seat_is_sold_to_the_user(
    redis: Redis, engine: SeatEngine
) -> None:
    now = now_ms()
    await engine.owe(S, ALICE, [1, 2, 3, 4], now + 5 * MIN, now)  # the sale never reached Redis
    await engine.sell(S, {1: BOB}, now)
    assert len(await engine.hold(S, ALICE, [5, 6, 7, 8], now)) == 4
