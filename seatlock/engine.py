"""The seat-hold engine: holds, extensions, releases, claims and sales as Python calls.

Every state change is one Lua script (``lua/``), so a multi-seat change is all-or-nothing and is
published on the screening's channel in the order it happened. The screening's layout and sold
seats are loaded from PostgreSQL (a ``LayoutSource``) on first use and again after Redis lost them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from redis.asyncio import Redis

from seatlock.errors import Conflict, InvalidInput, NotFound


class Layout(NamedTuple):
    """What the engine needs from PostgreSQL about one screening."""

    starts_at_ms: int
    seat_ids: list[int]
    sold: dict[int, int]  # seat id -> user id of active (pending/confirmed) tickets


class LayoutSource(Protocol):
    async def __call__(self, screening_id: int) -> Layout | None: ...  # None: no such screening


@dataclass(frozen=True, slots=True)
class Hold:
    seat_id: int
    user_id: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class SeatState:
    seat_id: int
    status: str  # "available" | "reserved" | "booked"
    user_id: int | None
    expires_at_ms: int | None


def _ids(seat_ids: list[int]) -> str:
    return str(sorted(seat_ids))


class SeatsUnavailable(Conflict):
    """Some seats are held by other users, or sold (``booked`` says which; booked wins)."""

    def __init__(self, seat_ids: list[int], *, booked: bool) -> None:
        what = "are already booked" if booked else "are currently reserved by other users"
        super().__init__(f"Seats {_ids(seat_ids)} {what}")
        self.seat_ids = sorted(seat_ids)
        self.booked = booked


class UnknownSeats(NotFound):
    def __init__(self, seat_ids: list[int]) -> None:
        super().__init__(f"Seats {_ids(seat_ids)} not found in this screening")
        self.seat_ids = sorted(seat_ids)


class TooManySeats(Conflict):
    def __init__(self, limit: int) -> None:
        super().__init__(f"You can hold at most {limit} seats in this screening")
        self.limit = limit


class ScreeningStarted(InvalidInput):
    def __init__(self) -> None:
        super().__init__("Cannot reserve seats for past screenings")


class ScreeningNotFound(NotFound):
    def __init__(self, screening_id: int) -> None:
        super().__init__("Screening not found")
        self.screening_id = screening_id


class HoldNotFound(NotFound):
    """Extend: some seats are not held by the caller, or their hold expired."""

    def __init__(self, seat_ids: list[int]) -> None:
        super().__init__(f"No active reservation for seats {_ids(seat_ids)}")
        self.seat_ids = sorted(seat_ids)


class HoldExpired(Conflict):
    """Claim: some seats are not (or no longer) held by the caller."""

    def __init__(self, seat_ids: list[int]) -> None:
        super().__init__(f"Reservation for seats {_ids(seat_ids)} has expired or does not exist")
        self.seat_ids = sorted(seat_ids)


class SeatEngine:
    """Seat holds of every screening, kept in Redis; one instance per process."""

    def __init__(
        self,
        redis: Redis,
        source: LayoutSource,
        *,
        hold_ms: int,
        max_hold_ms: int,
        max_seats_per_user: int,
    ) -> None:
        raise NotImplementedError

    async def hold(
        self, screening_id: int, user_id: int, seat_ids: list[int], now_ms: int | None = None
    ) -> list[Hold]:
        """Hold every seat for ``hold_ms`` or none; seats the caller already holds are kept."""
        raise NotImplementedError

    async def extend(
        self,
        screening_id: int,
        user_id: int,
        seat_ids: list[int],
        extra_ms: int,
        now_ms: int | None = None,
    ) -> list[Hold]:
        """Push back the caller's live holds by ``extra_ms`` (capped at max_hold_ms of life)."""
        raise NotImplementedError

    async def release(
        self, screening_id: int, user_id: int, seat_ids: list[int] | None, now_ms: int | None = None
    ) -> list[int]:
        """Drop the caller's holds (None: all of them in the screening); returns the seats freed."""
        raise NotImplementedError

    async def claim(
        self,
        screening_id: int,
        user_id: int,
        seat_ids: list[int],
        now_ms: int | None = None,
        pin_ms: int = 60_000,
    ) -> None:
        """Check the caller holds every seat and pin the leases while PostgreSQL commits."""
        raise NotImplementedError

    async def sell(
        self, screening_id: int, sold: dict[int, int], now_ms: int | None = None
    ) -> None:
        """Mark seats sold (seat id -> user id) after PostgreSQL committed; idempotent."""
        raise NotImplementedError

    async def unsell(
        self, screening_id: int, seat_ids: list[int], now_ms: int | None = None
    ) -> None:
        """A ticket was cancelled in PostgreSQL: its seat is free again."""
        raise NotImplementedError

    async def seat_map(self, screening_id: int, now_ms: int | None = None) -> list[SeatState]:
        """Every seat of the screening with its status, ordered by seat id."""
        raise NotImplementedError

    async def expire_lease(self, key: bytes | str, now_ms: int | None = None) -> bool:
        """A lease key expired (keyspace event): drop the hold if it is really gone."""
        raise NotImplementedError

    async def sweep(self, now_ms: int | None = None) -> int:
        """Free every expired hold of every loaded screening; returns how many."""
        raise NotImplementedError

    async def version(self, screening_id: int) -> int:
        """A number that changes on every seat change of the screening."""
        raise NotImplementedError
