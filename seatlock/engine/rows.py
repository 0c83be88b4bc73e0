"""Row geometry: which seats sit side by side, as the rows hash in Redis keeps it.

The load and refresh scripts write the hash (``keys.screening_rows``) from the room's seats;
``lua/hold_best.lua`` picks blocks of adjacent seats from it and ``lua/hold.lua`` checks the
single-gap rule on it. Rows are numbered 1..n front to back in seat-map order (shorter labels
first: "A".."Z" before "AA"), seats of a row in seat-number order; a missing number is an aisle,
which breaks adjacency. The engine keeps a parsed copy per screening (``Geometry``) to name the
candidate seats' leases in KEYS and to place the focal point.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from zlib import crc32

import msgspec

from seatlock.engine.model import SeatPlace
from seatlock.errors import ValidationFailed

SEAT_TYPES = ("standard", "premium", "vip", "wheelchair", "couple")  # the seats table's CHECK
# Without a seat type, best available never picks these: they are for those who ask for them.
ONLY_WHEN_ASKED = "wheelchair"
SCALE = 6  # the focal point goes to Lua times six: exact integers for 2/3 and for halves


def row_key(label: str) -> tuple[int, str]:
    """Seat-map order of row labels (db/catalog.py SEAT_ORDER)."""
    return len(label), label


def rows_fields(places: Iterable[SeatPlace]) -> list[str | int]:
    """The rows hash as field, value, ... for the load and refresh scripts; "v", a checksum of
    the rows, tells lua/hold_best.lua whether its caller's copy is the current one."""
    ordered = sorted(places, key=lambda p: (row_key(p.row_label), p.seat_number))
    rows = [list(seats) for _, seats in groupby(ordered, key=lambda p: p.row_label)]
    out: list[str | int] = []
    for i, seats in enumerate(rows, start=1):
        out += [f"r{i}", _packed(seats), f"l{i}", seats[0].row_label]
        for p in seats:
            out += [p.seat_id, i]
    stamp = crc32("\n".join(str(value) for value in out).encode())
    return ["v", stamp, "n", len(rows), *out]


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    seats: tuple[SeatPlace, ...]  # in seat-number order


@dataclass(slots=True)
class Geometry:
    """A screening's rows as the rows hash had them; rows[i - 1] is row i."""

    rows: tuple[Row, ...]
    stamp: str  # the rows hash's "v"
    _candidates: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, fields: Mapping[bytes | str, bytes | str]) -> Geometry:
        """From HGETALL of the rows hash (empty: a room without seats, or not loaded)."""
        text = {_text(k): _text(v) for k, v in fields.items() if not _text(k).isdigit()}
        rows = []
        for i in range(1, int(text.get("n", "0")) + 1):
            label = text.get(f"l{i}", "")
            rows.append(Row(label, tuple(_places(label, text.get(f"r{i}", "")))))
        return cls(tuple(rows), text.get("v", ""))

    def candidates(self, seat_type: str | None) -> tuple[list[int], list[int]]:
        """The seats best available may pick for ``seat_type`` (None: any type but
        wheelchair), in rows-hash order (the script gets their leases in KEYS), and per row the
        number of them in the rows before it."""
        wanted = seat_type or ""
        found = self._candidates.get(wanted)
        if found is None:
            seats: list[int] = []
            offsets: list[int] = []
            for row in self.rows:
                offsets.append(len(seats))
                seats += [p.seat_id for p in row.seats if _admits(wanted, p)]
            found = self._candidates[wanted] = (seats, offsets)
        return found

    def focal(self, near: tuple[str, int] | None) -> tuple[int, int]:
        """The focal point times SCALE: (row, column). Default: the room's centre column (the
        mean of its lowest and highest seat number), two thirds of the way back from row 1 to
        row n. ``near`` (row label, seat number): that row and that number."""
        if near is not None:
            for i, row in enumerate(self.rows, start=1):
                if row.label == near[0]:
                    return SCALE * i, SCALE * near[1]
            raise ValidationFailed(f"near.row_label {near[0]!r} is not a row of this room")
        numbers = [p.seat_number for row in self.rows for p in row.seats]
        if not numbers:
            return 0, 0
        back = len(self.rows) - 1
        return SCALE + SCALE * 2 * back // 3, SCALE * (min(numbers) + max(numbers)) // 2


def _packed(seats: list[SeatPlace]) -> str:
    """A row as the rows hash keeps it: JSON [[id...], [number...], [type...]], ids as text."""
    columns = [[str(p.seat_id) for p in seats], [p.seat_number for p in seats]]
    return msgspec.json.encode([*columns, [p.seat_type for p in seats]]).decode()


def _admits(wanted: str, place: SeatPlace) -> bool:
    if wanted:
        return place.seat_type == wanted
    return place.seat_type != ONLY_WHEN_ASKED


def _places(label: str, packed: str) -> Iterable[SeatPlace]:
    if not packed:
        return
    ids, numbers, kinds = msgspec.json.decode(packed, type=tuple[list[str], list[int], list[str]])
    for seat_id, number, kind in zip(ids, numbers, kinds, strict=True):
        yield SeatPlace(int(seat_id), label, number, kind)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
