"""Random sequences of holds, extensions, releases (by user and by grant), claims, sales,
cancellations, expiries, sweeps, leases lost early and Redis data loss against the real engine,
checked after every step against a Python model.

Time is passed in: it moves in 10 s steps, so a lease never lapses in real time during a run.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine.errors import (
    HoldExpired,
    HoldNotFound,
    SeatsUnavailable,
    TooManySeats,
    UnknownSeats,
)
from seatlock.engine.model import SeatState
from seatlock.engine.transport import open_transport
from seatlock.errors import SeatLockError
from tests.lua.support import DictSource, engine_url, make_engine, now_ms

T = TypeVar("T")
STEP = 10_000
HOLD, MAX_HOLD, PIN, CAP = 3 * STEP, 6 * STEP, 4 * STEP, 4
SEATS = list(range(1, 9))
USERS = st.sampled_from([1, 2, 3])
SEAT_SETS = st.lists(st.sampled_from([*SEATS, 99]), min_size=1, max_size=3, unique=True)
screening_ids = itertools.count(900)


@dataclass(frozen=True)
class ModelHold:
    user: int
    grant: str
    exp: int
    first: int
    pin: int = 0
    lease: bool = True  # False: the lease key vanished before the deadline (eviction, clock skew)

    @property
    def deadline(self) -> int:
        return max(self.exp, self.pin)


class EngineMachine(RuleBasedStateMachine):
    redis_url = ""
    transport_kind = "fast"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.redis = Redis.from_url(self.redis_url)
        self.run(self.redis.flushall())  # the sweep covers every screening: start from nothing
        self.screening = next(screening_ids)
        self.source = DictSource()
        self.source.add(self.screening, SEATS, starts_at_ms=now_ms() + 3_600_000)
        self.engines = [
            make_engine(
                open_transport(self.transport_kind, self.redis),
                self.source,
                hold_ms=HOLD,
                max_hold_ms=MAX_HOLD,
                max_seats_per_user=CAP,
            )
            for _ in range(2)  # two API processes sharing one Redis
        ]
        self.engine = self.engines[0]
        self.now = now_ms() // STEP * STEP
        self.sold: dict[int, int] = {}
        self.holds: dict[int, ModelHold] = {}
        self.grants: list[str] = []  # every grant a hold was asked under, in order

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        for engine in self.engines:  # their connections, before the loop closes
            self.run(engine.transport.aclose())
        self.run(self.redis.aclose())
        self.loop.close()

    def live(self, seat: int) -> ModelHold | None:
        hold = self.holds.get(seat)
        return hold if hold is not None and hold.deadline > self.now else None

    def blocking(self, seat: int) -> ModelHold | None:
        """The hold that keeps others off the seat: live in the index and its lease still there."""
        hold = self.live(seat)
        return hold if hold is not None and hold.lease else None

    def owns(self, user: int, seat: int) -> bool:
        hold = self.blocking(seat)
        return hold is not None and hold.user == user and hold.exp > self.now

    def outcome(self, call: Coroutine[Any, Any, T]) -> T | SeatLockError:
        try:
            return self.run(call)
        except SeatLockError as error:
            return error

    @rule(user=USERS, seats=SEAT_SETS)
    def hold(self, user: int, seats: list[int]) -> None:
        grant = f"g{len(self.grants)}"
        self.grants.append(grant)
        call = self.engine.hold(self.screening, user, seats, self.now, grant=grant)
        result = self.outcome(call)
        seats = sorted(seats)
        unknown = [s for s in seats if s not in SEATS]
        booked = [s for s in seats if s in self.sold]
        taken = [s for s in seats if (h := self.blocking(s)) is not None and h.user != user]
        fresh = [s for s in seats if self.blocking(s) is None]
        mine = sum(1 for s in self.holds if (h := self.live(s)) is not None and h.user == user)
        if len(seats) > CAP or (
            not unknown and not booked and not taken and mine + len(fresh) > CAP
        ):
            assert isinstance(result, TooManySeats)
        elif unknown:
            assert isinstance(result, UnknownSeats) and result.seat_ids == unknown
        elif booked or taken:
            assert isinstance(result, SeatsUnavailable)
            assert (result.seat_ids, result.booked) == (
                (booked, True) if booked else (taken, False)
            )
        else:
            for seat in fresh:
                self.holds[seat] = ModelHold(user, grant, self.now + HOLD, self.now)
            assert not isinstance(result, SeatLockError)
            assert [(h.seat_id, h.user_id, h.expires_at_ms, h.grant) for h in result] == [
                (s, user, self.holds[s].exp, self.holds[s].grant) for s in seats
            ]

    @rule(user=USERS, seat=st.sampled_from(SEATS))
    def hold_one(self, user: int, seat: int) -> None:
        self.hold(user, [seat])

    @rule(user=USERS, seats=SEAT_SETS, steps=st.integers(1, 4))
    def extend(self, user: int, seats: list[int], steps: int) -> None:
        result = self.outcome(
            self.engine.extend(self.screening, user, seats, steps * STEP, self.now)
        )
        missing = sorted(s for s in seats if not self.owns(user, s))
        if missing:
            assert isinstance(result, HoldNotFound) and result.seat_ids == missing
            return
        for seat in seats:
            hold = self.holds[seat]
            exp = max(hold.exp, min(hold.exp + steps * STEP, hold.first + MAX_HOLD))
            self.holds[seat] = replace(hold, exp=exp)
        assert not isinstance(result, SeatLockError)
        assert [(h.seat_id, h.expires_at_ms, h.grant) for h in result] == [
            (s, self.holds[s].exp, self.holds[s].grant) for s in sorted(seats)
        ]

    @rule(user=USERS, steps=st.integers(1, 4))
    def extend_mine(self, user: int, steps: int) -> None:
        self.extend(user, self.mine(user), steps)

    @rule(user=USERS, seats=st.none() | SEAT_SETS)
    def release(self, user: int, seats: list[int] | None) -> None:
        released = self.run(self.engine.release(self.screening, user, seats, self.now))
        candidates = self.holds if seats is None else seats
        expected = sorted(s for s in candidates if s in self.holds and self.holds[s].user == user)
        assert released == expected
        for seat in expected:
            del self.holds[seat]

    @rule(pick=st.integers(0, 7), seats=SEAT_SETS)
    def release_grant(self, pick: int, seats: list[int]) -> None:
        """Release by one of the latest grants (or one never used): what it took and nothing
        else, live or lapsed, while its lease is there (a lease gone is the listener's)."""
        grant = self.grants[-1 - pick] if pick < len(self.grants) else "never-used"
        released = self.run(self.engine.release_grant(self.screening, grant, seats, self.now))
        expected = sorted(
            s
            for s in seats
            if (h := self.holds.get(s)) is not None and h.grant == grant and h.lease
        )
        assert released == expected
        for seat in expected:
            del self.holds[seat]

    @rule(user=USERS, seats=SEAT_SETS)
    def hold_then_release_grant(self, user: int, seats: list[int]) -> None:
        """The compensation of a hold whose reservation id cannot be had: the hold, then its own
        grant released over every seat asked (seats kept from an earlier grant stay held)."""
        self.hold(user, seats)
        self.release_grant(0, seats)

    def claim_outcome(self, user: int, seats: list[int]) -> SeatLockError | None:
        result = self.outcome(self.engine.claim(self.screening, user, seats, self.now, PIN))
        lapsed = sorted(s for s in seats if self.sold.get(s) != user and not self.owns(user, s))
        if lapsed:
            assert isinstance(result, HoldExpired) and result.seat_ids == lapsed
            return result
        assert result is None
        for seat in seats:
            if seat in self.holds and self.sold.get(seat) != user:
                hold = self.holds[seat]
                self.holds[seat] = replace(hold, pin=max(hold.pin, self.now + PIN))
        return None

    def mine(self, user: int) -> list[int]:
        """The seats the user holds, or one seat when none: claims that can succeed."""
        return [s for s in self.holds if self.owns(user, s)] or [SEATS[0]]

    @rule(user=USERS)
    def claim_mine(self, user: int) -> None:
        self.claim_outcome(user, self.mine(user))

    @rule(user=USERS)
    def book_mine(self, user: int) -> None:
        self.book(user, self.mine(user))

    @rule(user=USERS, seats=SEAT_SETS)
    def book(self, user: int, seats: list[int]) -> None:
        if self.claim_outcome(user, seats) is not None:
            return
        # PostgreSQL committed: it now reports these seats sold (invariant 7 reads it back).
        self.source.layouts[self.screening].sold.update({s: user for s in seats})
        self.run(self.engine.sell(self.screening, {s: user for s in seats}, self.now))
        for seat in seats:
            self.sold[seat] = user
            self.holds.pop(seat, None)

    @rule(seats=SEAT_SETS)
    def cancel_tickets(self, seats: list[int]) -> None:
        for seat in seats:
            self.source.layouts[self.screening].sold.pop(seat, None)
            self.sold.pop(seat, None)
        self.run(self.engine.unsell(self.screening, seats, self.now))

    @rule()
    def other_process(self) -> None:
        self.engine = self.engines[1] if self.engine is self.engines[0] else self.engines[0]

    @rule(steps=st.integers(0, 5))
    def advance(self, steps: int) -> None:
        self.now += steps * STEP

    @rule(seat=st.sampled_from(SEATS))
    def lease_lapses(self, seat: int) -> None:
        """Redis drops a lapsed lease key (as its TTL would) and the listener reports it."""
        hold = self.holds.get(seat)
        lapsed = hold is not None and hold.deadline <= self.now
        if lapsed:
            self.run(self.redis.delete(keys.seat_hold(self.screening, seat)))
        gone = hold is not None and (lapsed or not hold.lease)
        assert self.run(self.engine.expire_leases(self.screening, [seat], self.now)) == int(gone)
        if gone:
            del self.holds[seat]

    @rule(seat=st.sampled_from(SEATS))
    def lease_vanishes(self, seat: int) -> None:
        """A lease key is gone before its deadline, not yet reported: the seat is free to hold."""
        hold = self.holds.get(seat)
        if hold is not None:
            self.run(self.redis.delete(keys.seat_hold(self.screening, seat)))
            self.holds[seat] = replace(hold, lease=False)

    @rule()
    def sweep(self) -> None:
        due = [s for s, h in self.holds.items() if h.deadline <= self.now]
        freed = self.run(self.engine.sweep(self.now))
        assert freed == len(due)
        for seat in due:
            del self.holds[seat]

    @rule()
    def redis_loses_its_data(self) -> None:
        self.run(self.redis.flushall())
        self.holds.clear()

    @invariant()
    def seat_map_matches_the_model(self) -> None:
        states = self.run(self.engine.seat_map(self.screening, self.now))
        assert states == [self.expected_state(seat) for seat in SEATS]

    @invariant()
    def redis_keys_match_the_model(self) -> None:
        """The index, the deadline set, the sales and one lease per indexed hold."""
        sid = self.screening
        if not self.run(self.redis.exists(keys.screening_meta(sid))):
            assert not self.holds
            return
        index = self.run(self.redis.hgetall(keys.screening_holds(sid)))
        assert index == {
            str(s).encode(): f"{h.user}:{h.exp}:{h.first}:{h.pin}".encode()
            for s, h in self.holds.items()
        }
        deadlines = self.run(
            self.redis.zrange(keys.screening_deadlines(sid), 0, -1, withscores=True)
        )
        assert dict(deadlines) == {str(s).encode(): h.deadline for s, h in self.holds.items()}
        owners = self.run(self.redis.zrange(keys.screening_owners(sid), 0, -1, withscores=True))
        assert dict(owners) == {str(s).encode(): h.user for s, h in self.holds.items()}
        sold = self.run(self.redis.hgetall(keys.screening_sold(sid)))
        assert sold == {str(s).encode(): str(u).encode() for s, u in self.sold.items()}
        leases = self.run(self.redis.mget([keys.seat_hold(sid, s) for s in SEATS]))
        assert leases == [
            f"{h.user}:{h.grant}".encode()
            if (h := self.holds.get(s)) is not None and h.lease
            else None
            for s in SEATS
        ]

    def expected_state(self, seat: int) -> SeatState:
        if seat in self.sold:
            return SeatState(seat, "booked", self.sold[seat], None)
        hold = self.live(seat)
        if hold is not None:
            return SeatState(seat, "reserved", hold.user, hold.deadline)
        return SeatState(seat, "available", None, None)


def test_engine_follows_the_model(backend_urls: tuple[str, str], transport_kind: str) -> None:
    EngineMachine.redis_url = engine_url(backend_urls[0])
    EngineMachine.transport_kind = transport_kind
    run_state_machine_as_test(
        EngineMachine,
        settings=settings(
            max_examples=50,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
