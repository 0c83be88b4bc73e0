"""Screening layouts from PostgreSQL: what the seat engine loads, and seat details for seat maps.

Seat maps are served from Redis plus the seat details cached here per process, so a warm seat map
costs no PostgreSQL round trip. A seat the cache does not know (room changed, seats added) makes
it reload that screening once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from db.pool import Executor
from seatlock.engine.model import Layout, SeatPlace

DETAILS_TTL_S = 300.0
# Screenings whose seat details a process keeps (~140 KB for 500 seats), the least recently
# loaded dropped first: a crawler walking every screening of a large catalog filled it without
# end (10,000 screenings: ~1.3 GB a process).
MAX_LAYOUTS = 512


@dataclass(frozen=True, slots=True)
class SeatInfo:
    id: int
    room_id: int
    row_label: str
    seat_number: int
    seat_type: str


@dataclass(frozen=True, slots=True)
class ScreeningSeats:
    screening_id: int
    room_id: int
    starts_at: datetime
    price: Decimal
    seats: dict[int, SeatInfo]  # in seat-map order: row, then number
    loaded_at: float


async def load_layout(db: Executor, screening_id: int) -> Layout | None:
    """The engine's view of a screening: start, the room's seats, and the seats already sold."""
    row = await db.fetchrow(
        "SELECT (extract(epoch FROM s.starts_at) * 1000)::bigint AS starts_ms, s.no_single_gaps,"
        " ARRAY(SELECT ARRAY[id::text, row_label, seat_number::text, seat_type] FROM seats"
        "       WHERE room_id = s.room_id ORDER BY id) AS places,"
        " ARRAY(SELECT ARRAY[t.seat_id, t.user_id] FROM tickets t WHERE t.screening_id = s.id"
        "       AND t.status IN ('pending', 'confirmed')) AS sold"
        " FROM screenings s WHERE s.id = $1",
        screening_id,
    )
    if row is None:
        return None
    sold = {int(pair[0]): int(pair[1]) for pair in row["sold"]}
    places = tuple(SeatPlace(int(p[0]), p[1], int(p[2]), p[3]) for p in row["places"])
    seat_ids = [p.seat_id for p in places]
    return Layout(int(row["starts_ms"]), seat_ids, sold, places, row["no_single_gaps"])


async def load_seats(db: Executor, screening_id: int) -> ScreeningSeats | None:
    rows = await db.fetch(
        "SELECT s.room_id, s.starts_at, s.price, st.id, st.row_label, st.seat_number,"
        " st.seat_type FROM screenings s LEFT JOIN seats st ON st.room_id = s.room_id"
        " WHERE s.id = $1 ORDER BY st.row_label, st.seat_number",
        screening_id,
    )
    if not rows:
        return None
    first = rows[0]
    seats = {r["id"]: _seat(r) for r in rows if r["id"] is not None}
    return ScreeningSeats(
        screening_id, first["room_id"], first["starts_at"], first["price"], seats, time.monotonic()
    )


def _seat(r: Any) -> SeatInfo:
    return SeatInfo(r["id"], r["room_id"], r["row_label"], r["seat_number"], r["seat_type"])


class Layouts:
    """The engine's LayoutSource over PostgreSQL, and the per-process seat-details cache."""

    def __init__(self, db: Executor, ttl_s: float = DETAILS_TTL_S) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._seats: dict[int, ScreeningSeats] = {}

    async def __call__(self, screening_id: int) -> Layout | None:
        return await load_layout(self._db, screening_id)

    async def seats(
        self, screening_id: int, need: list[int] | None = None
    ) -> ScreeningSeats | None:
        """Seat details of a screening (None: no such screening); reloads if ``need`` is unknown."""
        cached = self._seats.get(screening_id)
        if cached is not None and self._usable(cached, need or []):
            return cached
        fresh = await load_seats(self._db, screening_id)
        self._seats.pop(screening_id, None)
        if fresh is not None:
            if len(self._seats) >= MAX_LAYOUTS:
                del self._seats[next(iter(self._seats))]
            self._seats[screening_id] = fresh
        return fresh

    def cached(self, screening_id: int) -> ScreeningSeats | None:
        """The cached details if still fresh, without I/O (None: load them with ``seats``)."""
        cached = self._seats.get(screening_id)
        if cached is None or time.monotonic() - cached.loaded_at >= self._ttl_s:
            return None
        return cached

    def _usable(self, cached: ScreeningSeats, need: list[int]) -> bool:
        fresh = time.monotonic() - cached.loaded_at < self._ttl_s
        return fresh and all(seat_id in cached.seats for seat_id in need)
