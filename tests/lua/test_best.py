"""Best available seats (lua/hold_best.lua) and the single-gap rule (lua/hold.lua), through the
engine, against a Python reference of what lua/hold_best.lua's header specifies."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from seatlock import keys
from seatlock.engine.errors import NoAdjacentSeats, SingleSeatGap, TooManySeats
from seatlock.engine.model import Layout, SeatPlace
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport
from seatlock.errors import SeatLockError, ValidationFailed
from tests.lua.support import HOUR_MS, DictSource, dump, make_engine, now_ms, tap

S = 601


@dataclass(frozen=True)
class Room:
    """Seats of a test room: rows front to back, each a list of (number, type)."""

    places: tuple[SeatPlace, ...]

    @classmethod
    def grid(cls, rows: str, numbers: list[int], types: dict[str, str] | None = None) -> Room:
        """Every row of ``rows`` with seats ``numbers``; ``types``: "B3" -> type."""
        places, seat_id = [], 0
        for label in rows:
            for number in numbers:
                seat_id += 1
                kind = (types or {}).get(f"{label}{number}", "standard")
                places.append(SeatPlace(seat_id, label, number, kind))
        return cls(tuple(places))

    def row(self, label: str) -> list[SeatPlace]:
        return [p for p in self.places if p.row_label == label]

    def seat(self, name: str) -> int:
        """The id of seat "B4"."""
        return next(p.seat_id for p in self.places if f"{p.row_label}{p.seat_number}" == name)

    def name(self, seat_id: int) -> str:
        p = next(p for p in self.places if p.seat_id == seat_id)
        return f"{p.row_label}{p.seat_number}"

    def labels(self) -> list[str]:
        return sorted({p.row_label for p in self.places}, key=lambda label: (len(label), label))


def add(
    source: DictSource,
    screening_id: int,
    room: Room,
    sold: dict[int, int] | None = None,
    gaps: bool | None = None,
) -> None:
    seats = [p.seat_id for p in room.places]
    starts = now_ms() + 24 * HOUR_MS
    source.layouts[screening_id] = Layout(starts, seats, dict(sold or {}), room.places, gaps)


# --- the reference: what lua/hold_best.lua and lib.lua stranded() specify --------------------


def stranded_by(room: Room, busy: set[int], chosen: set[int]) -> int | None:
    """The first seat (row order, then number) that taking ``chosen`` would strand."""
    for label in room.labels():
        row = room.row(label)
        for j, p in enumerate(row):
            if p.seat_id in busy or p.seat_id in chosen:
                continue
            left = j > 0 and row[j - 1].seat_number == p.seat_number - 1
            right = j + 1 < len(row) and row[j + 1].seat_number == p.seat_number + 1
            by_left = left and row[j - 1].seat_id in chosen
            by_right = right and row[j + 1].seat_id in chosen
            closed_left = not left or row[j - 1].seat_id in busy | chosen
            closed_right = not right or row[j + 1].seat_id in busy | chosen
            if (by_left or by_right) and closed_left and closed_right:
                return p.seat_id
    return None


def stranded_seats(room: Room, busy: set[int]) -> list[int]:
    """Free seats with an adjacent seat whose both sides are unavailable or a row's end."""
    found = []
    for label in room.labels():
        row = room.row(label)
        for j, p in enumerate(row):
            if p.seat_id in busy:
                continue
            left = j > 0 and row[j - 1].seat_number == p.seat_number - 1
            right = j + 1 < len(row) and row[j + 1].seat_number == p.seat_number + 1
            if (
                (left or right)
                and (not left or row[j - 1].seat_id in busy)
                and (not right or row[j + 1].seat_id in busy)
            ):
                found.append(p.seat_id)
    return found


def blocks(room: Room, busy: set[int], count: int, seat_type: str | None) -> list[list[int]]:
    """Every block best available may pick: free admitted seats of one type, consecutive."""
    found = []
    for label in room.labels():
        row = room.row(label)
        for a in range(len(row) - count + 1):
            block = row[a : a + count]
            kinds = {p.seat_type for p in block}
            numbers = [p.seat_number for p in block]
            admitted = kinds == {seat_type} if seat_type else kinds != {"wheelchair"}
            if (
                len(kinds) == 1
                and admitted
                and numbers == list(range(numbers[0], numbers[0] + count))
                and not any(p.seat_id in busy for p in block)
            ):
                found.append([p.seat_id for p in block])
    return found


def best_block(
    room: Room,
    busy: set[int],
    count: int,
    seat_type: str | None = None,
    near: tuple[str, int] | None = None,
    rule: bool = False,
) -> list[int] | None:
    labels = room.labels()
    if near is None:
        numbers = [p.seat_number for p in room.places]
        focal = (6 + 4 * (len(labels) - 1), 3 * (min(numbers) + max(numbers)))
    else:
        focal = (6 * (labels.index(near[0]) + 1), 6 * near[1])

    def rank(block: list[int]) -> tuple[int, int, int, int, int]:
        places = [p for p in room.places if p.seat_id in block]
        row = labels.index(places[0].row_label) + 1
        tier = 1 if seat_type is None and places[0].seat_type != "standard" else 0
        strands = strand_count(room, busy, set(block))
        first, last = places[0].seat_number, places[-1].seat_number
        d = (6 * row - focal[0]) ** 2 + (3 * (first + last) - focal[1]) ** 2
        return tier, strands, d, row, first

    candidates = blocks(room, busy, count, seat_type)
    if rule:
        candidates = [b for b in candidates if stranded_by(room, busy, set(b)) is None]
    return min(candidates, key=rank, default=None)


def strand_count(room: Room, busy: set[int], chosen: set[int]) -> int:
    return len(set(stranded_seats(room, busy | chosen)) - set(stranded_seats(room, busy)))


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def source() -> DictSource:
    return DictSource()


@pytest.fixture
def engine(transport: Transport, source: DictSource) -> SeatEngine:
    return make_engine(transport, source, max_seats_per_user=10)


async def busy_now(engine: SeatEngine, screening_id: int) -> set[int]:
    return {s.seat_id for s in await engine.seat_map(screening_id) if s.status != "available"}


# --- best available ---------------------------------------------------------------------------

NINE = Room.grid("ABC", list(range(1, 10)))


async def test_the_first_block_is_the_one_nearest_the_focal_point(
    engine: SeatEngine, source: DictSource
) -> None:
    # Rows 1..3, focal row 1 + 2/3 * 2 = 2.33 (6x: 14), focal column (1 + 9) / 2 = 5 (6x: 30).
    add(source, S, NINE)
    two = await engine.hold_best(S, 1, 2)
    # B4-B5 and B5-B6 are both 13/36 away (a tie): the lower number wins.
    assert [NINE.name(h.seat_id) for h in two] == ["B4", "B5"]
    three = await engine.hold_best(S, 2, 3)
    # C4-C6: 16/36 away; A4-A6: 64/36; what is left of row B is further off the centre.
    assert [NINE.name(h.seat_id) for h in three] == ["C4", "C5", "C6"]
    one = await engine.hold_best(S, 3, 1, near=("A", 1))
    assert [NINE.name(h.seat_id) for h in one] == ["A1"]


async def test_every_pick_follows_the_reference_on_a_filling_room(
    engine: SeatEngine, source: DictSource
) -> None:
    room = Room.grid("ABCDE", [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12])  # an aisle after 5
    add(source, S, room)
    rng = random.Random(7)
    busy: set[int] = set()
    for user in range(1, 60):
        count = rng.randint(1, 4)
        expected = best_block(room, busy, count)
        try:
            got = [h.seat_id for h in await engine.hold_best(S, user, count)]
        except NoAdjacentSeats:
            got = None
        assert got == expected, (user, count)
        busy |= set(got or [])
    assert busy == await busy_now(engine, S)


async def test_near_moves_the_focal_point_and_an_unknown_row_is_refused(
    engine: SeatEngine, source: DictSource
) -> None:
    add(source, S, NINE)
    held = await engine.hold_best(S, 1, 2, near=("C", 9))
    assert [NINE.name(h.seat_id) for h in held] == ["C8", "C9"]
    with pytest.raises(ValidationFailed, match="not a row"):
        await engine.hold_best(S, 1, 2, near=("Z", 1))


async def test_no_block_left_is_a_409_naming_the_count_and_changes_nothing(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    room = Room.grid("A", [1, 2, 3, 4, 5])
    add(source, S, room, sold={room.seat("A3"): 99})
    await engine.hold_best(S, 1, 2)
    before = await dump(redis, S)
    with pytest.raises(NoAdjacentSeats) as info:
        await engine.hold_best(S, 2, 3)
    assert info.value.detail == "No 3 adjacent seats available"
    assert await dump(redis, S) == before
    with pytest.raises(TooManySeats):
        await engine.hold_best(S, 2, 11)


async def test_a_type_is_picked_alone_and_wheelchairs_only_when_asked(
    engine: SeatEngine, source: DictSource
) -> None:
    kinds = {"A1": "wheelchair", "A2": "wheelchair", "C4": "premium", "C5": "premium"}
    kinds |= {"B1": "wheelchair", "B5": "vip"}
    room = Room.grid("ABC", list(range(1, 10)), kinds)
    add(source, S, room)
    wheel = await engine.hold_best(S, 1, 2, seat_type="wheelchair")
    assert [room.name(h.seat_id) for h in wheel] == ["A1", "A2"]
    with pytest.raises(NoAdjacentSeats):
        await engine.hold_best(S, 2, 2, seat_type="wheelchair")  # B1 alone is no pair
    premium = await engine.hold_best(S, 3, 2, seat_type="premium")
    assert [room.name(h.seat_id) for h in premium] == ["C4", "C5"]
    # Without a type: never the lone wheelchair place B1 nor the vip B5; one type per block.
    for user in range(10, 31):  # the 21 standard seats
        held = await engine.hold_best(S, user, 1)
        assert room.places[held[0].seat_id - 1].seat_type == "standard"
    free = {p.seat_id for p in room.places} - await busy_now(engine, S)
    assert {room.name(s) for s in free} == {"B1", "B5"}
    vip = await engine.hold_best(S, 50, 1)  # no standard seat left: the vip one (not B1)
    assert [room.name(h.seat_id) for h in vip] == ["B5"]


async def test_a_best_hold_publishes_and_writes_like_a_hold(
    redis: Redis, engine: SeatEngine, source: DictSource
) -> None:
    add(source, S, NINE)
    async with tap(redis, S) as events:
        held = await engine.hold_best(S, 1, 2, grant="g1")
        event = await events.next()
    assert [c["seat_id"] for c in event["seats"]] == [h.seat_id for h in held]
    assert {c["status"] for c in event["seats"]} == {"reserved"}
    assert {h.grant for h in held} == {"g1"}
    for h in held:
        assert await redis.get(keys.seat_hold(S, h.seat_id)) == b"1:g1"
    assert await engine.release_grant(S, "g1", [h.seat_id for h in held]) == sorted(
        h.seat_id for h in held
    )


async def test_the_user_cap_counts_best_holds(engine: SeatEngine, source: DictSource) -> None:
    add(source, S, NINE)
    await engine.hold_best(S, 1, 6)
    with pytest.raises(TooManySeats):
        await engine.hold_best(S, 1, 5)


async def test_a_room_changed_elsewhere_is_read_again(
    engine: SeatEngine, source: DictSource
) -> None:
    add(source, S, Room.grid("A", [1, 2]))
    await engine.hold_best(S, 1, 2)  # this engine caches a room of two seats
    bigger = Room.grid("AB", [1, 2, 3])
    add(source, S, bigger)
    other = make_engine(engine.transport, source)
    await other.refresh(S)  # another process: B1..B3 are new, A3 too
    held = await engine.hold_best(S, 2, 3)
    assert [bigger.name(h.seat_id) for h in held] == ["B1", "B2", "B3"]


async def test_a_hundred_concurrent_callers_never_overlap_nor_fail_needlessly(
    engine: SeatEngine, source: DictSource
) -> None:
    rng = random.Random(17)
    room = Room.grid("ABCDEFGHIJKLMNOPQRST", [*range(1, 13), *range(14, 27)])  # 20 x 25 = 500
    sold = {p.seat_id: 99 for p in room.places if rng.random() < 0.45}
    add(source, S, room, sold=sold)
    await engine.seat_map(S)  # loaded
    counts = {user: rng.randint(2, 4) for user in range(1, 101)}

    async def caller(user: int) -> list[int] | None:
        try:
            return [h.seat_id for h in await engine.hold_best(S, user, counts[user])]
        except NoAdjacentSeats:
            return None

    results = dict(zip(counts, await asyncio.gather(*map(caller, counts)), strict=True))
    held = [seat for block in results.values() if block for seat in block]
    assert len(held) == len(set(held)), "overlapping blocks"
    assert not set(held) & set(sold)
    for user, block in results.items():
        if block is None:
            continue
        places = [room.places[s - 1] for s in block]
        assert len(block) == counts[user]
        assert len({p.row_label for p in places}) == 1
        numbers = [p.seat_number for p in places]
        assert numbers == list(range(numbers[0], numbers[0] + counts[user]))
    busy = await busy_now(engine, S)
    assert busy == set(held) | set(sold)
    refused = [user for user, block in results.items() if block is None]
    assert refused, "the room should run out of some block sizes"
    for user in refused:
        assert not blocks(room, busy, counts[user], None), user


# --- the single-gap rule ----------------------------------------------------------------------

ROW = Room.grid("A", [1, 2, 3, 4, 5, 6])
AISLE = Room.grid("A", [1, 2, 3, 5, 6])  # seat 4 missing: an aisle
LONE = Room.grid("A", [1, 3, 4, 5])  # seat 1 sits alone between the wall and an aisle

# (room, row pattern: "." free, "X" sold, "H" held by someone else, "M" held by the caller,
#  selection (seat numbers), the seat number named in the refusal or None: allowed)
GAP_CASES = [
    (ROW, "......", [1], None),
    (ROW, "......", [2], 1),  # between the row's end and the selection
    (ROW, "......", [1, 2], None),
    (ROW, "......", [5], 6),
    (ROW, "......", [1, 3], 2),  # between two selected seats
    (ROW, "X.....", [3], 2),  # between a sold seat and the selection
    (ROW, "X.....", [2, 3], None),
    (ROW, "H.....", [3], 2),  # someone else's hold is unavailable too
    (ROW, "M.....", [3], 2),  # and so is the caller's own
    (ROW, "X.X...", [5], 4),
    (ROW, "X.X...", [2], None),  # the selection covers the gap
    (ROW, "X.X...", [4], None),  # seat 2 was stranded before: not this selection's doing
    (ROW, "....X.", [3], 4),  # between the selection and a sold seat
    (ROW, "..X...", [4, 5], 6),
    (ROW, "..X...", [4, 5, 6], None),
    (AISLE, ".....", [2], 1),  # both ends: seat 1 first
    (AISLE, ".....", [1, 2], 3),  # the aisle is a row's end
    (AISLE, ".....", [1, 2, 3], None),
    (AISLE, ".....", [5], 6),
    (LONE, "....", [3], None),  # seat 1 was always alone: no gap; 4 and 5 stay a pair
    (LONE, "....", [4], 3),
]


def pattern_state(room: Room, pattern: str) -> tuple[dict[int, int], list[int], list[int]]:
    """Sold seats, seats held by another user, seats held by the caller."""
    sold, theirs, mine = {}, [], []
    for p, mark in zip(room.places, pattern, strict=True):
        if mark == "X":
            sold[p.seat_id] = 99
        elif mark == "H":
            theirs.append(p.seat_id)
        elif mark == "M":
            mine.append(p.seat_id)
    return sold, theirs, mine


@pytest.mark.parametrize(("room", "pattern", "selection", "named"), GAP_CASES)
async def test_the_single_gap_rule_table(
    redis: Redis,
    engine: SeatEngine,
    source: DictSource,
    room: Room,
    pattern: str,
    selection: list[int],
    named: int | None,
) -> None:
    sold, theirs, mine = pattern_state(room, pattern)
    add(source, S, room, sold=sold, gaps=True)
    await engine.seat_map(S)  # loaded
    for seats, user in ((theirs, 2), (mine, 1)):
        if seats:
            await engine.hold(S, user, seats)
    seats = [room.seat(f"A{n}") for n in selection]
    if named is None:
        assert len(await engine.hold(S, 1, seats)) == len(seats)
        return
    before = await dump(redis, S)
    with pytest.raises(SingleSeatGap) as info:
        await engine.hold(S, 1, seats)
    assert info.value.detail == (
        f"This selection would leave a single empty seat (row A, seat {named})"
    )
    assert await dump(redis, S) == before


async def test_the_rule_is_off_by_default_and_per_screening(
    transport: Transport, source: DictSource
) -> None:
    add(source, S, ROW)
    add(source, S + 1, ROW, gaps=False)
    add(source, S + 2, ROW, gaps=True)
    strict = make_engine(transport, source)
    strict.no_single_gaps = True  # the server's setting: for screenings without their own
    stranding = [ROW.seat("A2")]
    assert await make_engine(transport, source).hold(S, 1, stranding)
    assert await strict.hold(S + 1, 1, stranding)  # the screening says no rule
    with pytest.raises(SingleSeatGap):
        await strict.hold(S + 2, 1, stranding)


async def test_best_available_never_strands_a_seat_with_the_rule_on(
    engine: SeatEngine, source: DictSource
) -> None:
    room = Room.grid("A", [1, 2, 3, 4, 5])
    add(source, S, room, gaps=True)
    # Centre first would take A2-A3 or A3-A4, stranding A1 or A5: A1-A2 strands nothing.
    held = await engine.hold_best(S, 1, 2)
    assert [room.name(h.seat_id) for h in held] == ["A1", "A2"]
    with pytest.raises(NoAdjacentSeats):
        await engine.hold_best(S, 2, 2)  # A3-A4 or A4-A5 would strand a seat
    assert [room.name(h.seat_id) for h in await engine.hold_best(S, 2, 3)] == ["A3", "A4", "A5"]


# --- the property: with the rule on, accepted holds never strand a seat ------------------------

PROPERTY_ROOM = Room.grid("AB", [1, 2, 3, 4, 6, 7, 8])  # an aisle after 4
screening_ids = iter(range(10_000, 20_000))
HOLDS = st.lists(
    st.one_of(
        st.tuples(st.just("seats"), st.lists(st.integers(1, 14), min_size=1, max_size=3)),
        st.tuples(st.just("best"), st.integers(1, 4)),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=HOLDS)
async def test_with_the_rule_on_no_accepted_hold_strands_a_seat(
    engine: SeatEngine, source: DictSource, steps: list[tuple[str, object]]
) -> None:
    screening = next(screening_ids)
    room = PROPERTY_ROOM
    add(source, screening, room, gaps=True)
    busy: set[int] = set()
    for user, (kind, what) in enumerate(steps, start=1):
        if kind == "seats":
            assert isinstance(what, list)
            seats = sorted(set(what))
            try:
                await engine.hold(screening, user, seats)
            except SingleSeatGap as refusal:
                assert stranded_by(room, busy, set(seats)) == refusal.seat_id
                continue
            except SeatLockError:
                continue  # taken: not this rule's business
            busy |= set(seats)
        else:
            assert isinstance(what, int)
            expected = best_block(room, busy, what, rule=True)
            try:
                got = [h.seat_id for h in await engine.hold_best(screening, user, what)]
            except NoAdjacentSeats:
                got = None
            assert got == expected
            busy |= set(got or [])
        assert not stranded_seats(room, busy), [room.name(s) for s in stranded_seats(room, busy)]
    assert busy == await busy_now(engine, screening)
