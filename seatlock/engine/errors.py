"""The engine's refusals, and the one place where script status codes become them."""

from __future__ import annotations

from typing import Any

from seatlock.engine.scripts import Status
from seatlock.errors import Conflict, InvalidInput, NotFound, Unavailable


def _ids(seat_ids: list[int]) -> str:
    """Seat ids as every message shows them; ``seat_ids`` sorted (the errors keep them so)."""
    return str(seat_ids)


class SeatsUnavailable(Conflict):
    """Some seats are held by other users, or sold (``booked`` says which; booked wins)."""

    def __init__(self, seat_ids: list[int], *, booked: bool, locally: bool = False) -> None:
        self.seat_ids = sorted(seat_ids)
        self.booked = booked
        self.locally = locally  # answered by the process's seat mirror, without Redis
        what = "are already booked" if booked else "are currently reserved by other users"
        super().__init__(f"Seats {_ids(self.seat_ids)} {what}")


class UnknownSeats(NotFound):
    def __init__(self, seat_ids: list[int]) -> None:
        self.seat_ids = sorted(seat_ids)
        super().__init__(f"Seats {_ids(self.seat_ids)} not found in this screening")


class TooManySeats(Conflict):
    def __init__(self, limit: int) -> None:
        super().__init__(f"You can hold at most {limit} seats in this screening")
        self.limit = limit


class ScreeningStarted(InvalidInput):
    def __init__(self, detail: str = "Cannot reserve seats for past screenings") -> None:
        super().__init__(detail)


class ScreeningNotFound(NotFound):
    def __init__(self, screening_id: int) -> None:
        super().__init__("Screening not found")
        self.screening_id = screening_id


class HoldNotFound(NotFound):
    """Extend: some seats are not held by the caller, or their hold expired."""

    def __init__(self, seat_ids: list[int]) -> None:
        self.seat_ids = sorted(seat_ids)
        super().__init__(f"No active reservation for seats {_ids(self.seat_ids)}")


class HoldExpired(Conflict):
    """Claim: some seats are not (or no longer) held by the caller."""

    def __init__(self, seat_ids: list[int]) -> None:
        self.seat_ids = sorted(seat_ids)
        super().__init__(
            f"Reservation for seats {_ids(self.seat_ids)} has expired or does not exist"
        )


class SingleSeatGap(Conflict):
    """A hold would leave one free seat stranded while the single-gap rule is on."""

    def __init__(self, seat_id: int, row_label: str, seat_number: int) -> None:
        self.seat_id, self.row_label, self.seat_number = seat_id, row_label, seat_number
        super().__init__(
            f"This selection would leave a single empty seat (row {row_label}, seat {seat_number})"
        )


class NoAdjacentSeats(Conflict):
    """Best available: no block of ``count`` adjacent free seats is left."""

    def __init__(self, count: int) -> None:
        self.count = count
        super().__init__(f"No {count} adjacent seats available")


class StaleRows(Unavailable):
    """Best available: the room's rows changed since this process read them (read them again)."""

    def __init__(self) -> None:
        super().__init__("The seat layout changed; please try again")


def raise_for(reply: list[Any]) -> None:
    """The one place where script status codes become errors."""
    status = int(reply[0])
    if status == Status.OK:
        return
    # Plain int patterns, the refusals of a hot screening first: no Status() lookup per reply.
    # The seat ids as ints: map, no comprehension (one frame less, Python 3.11), per case, as
    # a GAP reply carries a row label.
    match status:
        case Status.TAKEN:
            raise SeatsUnavailable(list(map(int, reply[1:])), booked=False)
        case Status.BOOKED:
            raise SeatsUnavailable(list(map(int, reply[1:])), booked=True)
        case Status.NOT_LOADED:
            raise Unavailable("Seat data is being restored, try again shortly")
        case Status.STARTED:
            raise ScreeningStarted()
        case Status.UNKNOWN:
            raise UnknownSeats(list(map(int, reply[1:])))
        case Status.TOO_MANY:
            raise TooManySeats(int(reply[1]))
        case Status.NOT_HELD:
            raise HoldNotFound(list(map(int, reply[1:])))
        case Status.EXPIRED:
            raise HoldExpired(list(map(int, reply[1:])))
        case Status.GAP:
            raise SingleSeatGap(int(reply[1]), _text(reply[3]), int(reply[2]))
        case Status.NO_BLOCK:
            raise NoAdjacentSeats(int(reply[1]))
        case Status.STALE:
            raise StaleRows()
        case Status.DELETED:
            raise ScreeningNotFound(int(reply[1]))
        case _:
            raise ValueError(f"{status} is not a valid Status")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
