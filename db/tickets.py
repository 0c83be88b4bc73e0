"""Bookings and tickets in PostgreSQL, the system of record for everything sold.

PostgreSQL is the final judge (invariants 1, 5, 6): ``tickets_one_active_per_seat`` refuses a
second active ticket for a seat, ``bookings.payment_id`` refuses a second booking for a payment.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg

from db.pool import Conn, Executor
from seatlock.errors import Conflict, NotFound

TICKET_COLUMNS = (
    "id, booking_id, user_id, screening_id, seat_id, price, status, payment_id, booked_at,"
    " confirmed_at, cancelled_at"
)
ACTIVE = ("pending", "confirmed")
SEAT_TYPE_MULTIPLIERS = {
    "standard": Decimal("1.0"),
    "premium": Decimal("1.25"),
    "vip": Decimal("1.5"),
    "couple": Decimal("2.0"),
    "wheelchair": Decimal("1.0"),
}
# Status changes an admin may make; moving to cancelled or refunded frees the seat.
TRANSITIONS = {
    "pending": {"confirmed", "cancelled"},
    "confirmed": {"cancelled", "refunded"},
    "cancelled": set(),
    "refunded": set(),
}


def ticket_price(screening_price: Decimal, seat_type: str) -> Decimal:
    """Price of one ticket: the screening's price times the seat type's multiplier.

    standard 1.0, premium 1.25, vip 1.5, couple 2.0 (a seat for two), wheelchair 1.0; an unknown
    type pays the standard price. Rounded half-up to cents.
    """
    multiplier = SEAT_TYPE_MULTIPLIERS.get(seat_type, Decimal("1.0"))
    return (screening_price * multiplier).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class Booking:
    id: int
    user_id: int
    screening_id: int
    payment_id: str | None
    seat_ids: list[int]

    def matches(self, user_id: int, screening_id: int, seat_ids: list[int]) -> bool:
        return (self.user_id, self.screening_id, sorted(self.seat_ids)) == (
            user_id,
            screening_id,
            sorted(seat_ids),
        )


class SeatAlreadySold(Conflict):
    def __init__(self) -> None:
        super().__init__("Some of these seats are already booked")


async def booking_by_payment(db: Executor, payment_id: str) -> Booking | None:
    row = await db.fetchrow(
        "SELECT id, user_id, screening_id, payment_id, seat_ids FROM bookings"
        " WHERE payment_id = $1",
        payment_id,
    )
    if row is None:
        return None
    return Booking(
        row["id"], row["user_id"], row["screening_id"], row["payment_id"], row["seat_ids"]
    )


async def tickets_of_booking(db: Executor, booking_id: int) -> list[Any]:
    return list(
        await db.fetch(
            f"SELECT {TICKET_COLUMNS} FROM tickets WHERE booking_id = $1 ORDER BY id", booking_id
        )
    )


async def create_booking(
    db: asyncpg.Pool,
    user_id: int,
    screening_id: int,
    seat_ids: list[int],
    payment_id: str | None,
) -> list[Any]:
    """One transaction: the booking and its tickets (confirmed when paid, else pending).

    Raises ``asyncpg.UniqueViolationError`` when the payment id is taken (the caller decides
    whether that is the same booking) and ``SeatAlreadySold`` when a seat has an active ticket.
    """
    async with db.acquire() as conn, conn.transaction():
        prices = await _prices(conn, screening_id, seat_ids)
        booking_id = await conn.fetchval(
            "INSERT INTO bookings (user_id, screening_id, payment_id, seat_ids)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            user_id,
            screening_id,
            payment_id,
            sorted(seat_ids),
        )
        status = "confirmed" if payment_id else "pending"
        try:
            return list(
                await conn.fetch(
                    "INSERT INTO tickets (booking_id, user_id, screening_id, seat_id, price,"
                    " status, payment_id, confirmed_at)"
                    " SELECT $1, $2, $3, s.seat_id, s.price, $6, $7,"
                    " CASE WHEN $6 = 'confirmed' THEN now() END"
                    " FROM unnest($4::bigint[], $5::numeric[]) AS s(seat_id, price)"
                    f" ORDER BY s.seat_id RETURNING {TICKET_COLUMNS}",
                    booking_id,
                    user_id,
                    screening_id,
                    list(prices),
                    list(prices.values()),
                    status,
                    payment_id,
                )
            )
        except asyncpg.UniqueViolationError:
            raise SeatAlreadySold() from None


async def _prices(conn: Conn, screening_id: int, seat_ids: list[int]) -> dict[int, Decimal]:
    rows = await conn.fetch(
        "SELECT st.id, st.seat_type, s.price FROM screenings s"
        " JOIN seats st ON st.room_id = s.room_id"
        " WHERE s.id = $1 AND st.id = ANY($2::bigint[])",
        screening_id,
        seat_ids,
    )
    if len(rows) != len(set(seat_ids)):
        raise NotFound("Seat not found in this screening")
    return {r["id"]: ticket_price(r["price"], r["seat_type"]) for r in sorted(rows, key=_id)}


def _id(row: Any) -> int:
    return int(row["id"])


async def get(db: Executor, ticket_id: int) -> Any:
    return await db.fetchrow(f"SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1", ticket_id)


async def for_user(db: Executor, user_id: int) -> list[Any]:
    return list(
        await db.fetch(
            f"SELECT {TICKET_COLUMNS} FROM tickets WHERE user_id = $1"
            " ORDER BY booked_at DESC, id LIMIT 1000",
            user_id,
        )
    )


async def search(
    db: Executor,
    *,
    skip: int,
    limit: int,
    status: str | None,
    screening_id: int | None,
    user_id: int | None,
) -> list[Any]:
    return list(
        await db.fetch(
            f"SELECT {TICKET_COLUMNS} FROM tickets"
            " WHERE ($1::text IS NULL OR status = $1)"
            " AND ($2::bigint IS NULL OR screening_id = $2)"
            " AND ($3::bigint IS NULL OR user_id = $3)"
            " ORDER BY id DESC OFFSET $4 LIMIT $5",
            status,
            screening_id,
            user_id,
            skip,
            limit,
        )
    )


async def change_status(
    db: Executor, ticket_id: int, from_statuses: list[str], to: str, payment_id: str | None = None
) -> Any:
    """Move a ticket from one of ``from_statuses`` to ``to``; None if it was in another status."""
    return await db.fetchrow(
        "UPDATE tickets SET status = $3,"
        " confirmed_at = CASE WHEN $3 = 'confirmed' THEN now() ELSE confirmed_at END,"
        " cancelled_at = CASE WHEN $3 IN ('cancelled', 'refunded') THEN now()"
        " ELSE cancelled_at END,"
        " payment_id = coalesce($4, payment_id)"
        f" WHERE id = $1 AND status = ANY($2::text[]) RETURNING {TICKET_COLUMNS}",
        ticket_id,
        from_statuses,
        to,
        payment_id,
    )


async def screening_start(db: Executor, screening_id: int) -> Any:
    return await db.fetchval("SELECT starts_at FROM screenings WHERE id = $1", screening_id)


async def owner_email(db: Executor, user_id: int) -> str | None:
    value = await db.fetchval("SELECT email FROM users WHERE id = $1", user_id)
    return None if value is None else str(value)
