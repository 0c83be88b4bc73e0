"""The guide's tickets: quick book, book-from-reservation (payment webhook) and ticket management.

A booking is: the engine pins the caller's holds (claim), PostgreSQL commits the booking and its
tickets (group commit, db.tickets.BookingWriter), then the engine marks the seats sold. A 201
therefore means the tickets are committed (invariant 5), whatever Redis does afterwards.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from redis.exceptions import RedisError

from api.rendering import decode_body
from api.reservations import MAX_SEATS_PER_REQUEST, Id, unique_seats
from api.routing import MAX_ID, Call, Router
from api.schemas import Message
from db import reservations as history
from db import tickets as repo
from seatlock.accounts.mail import Mail
from seatlock.errors import Conflict, InvalidInput, NotFound, SeatLockError, Unavailable
from seatlock.services.container import Services

logger = logging.getLogger(__name__)

router = Router("Tickets")

PaymentId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
SeatIds = Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_SEATS_PER_REQUEST)]
Status = Literal["pending", "confirmed", "cancelled", "refunded"]
DB_DOWN = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
# How long a claim pins the holds past now. Long enough for a batch to commit; when the commit
# fails the holds are left as they are (the user retries the payment), so a failed commit only
# keeps a hold this much longer than its own deadline, never indefinitely.
COMMIT_PIN_MS = 15_000


class BookIn(msgspec.Struct):
    screening_id: Id
    seat_ids: SeatIds
    payment_id: PaymentId | None = None


class PaidBookIn(msgspec.Struct):
    screening_id: Id
    seat_ids: SeatIds
    payment_id: PaymentId


class PaymentIn(msgspec.Struct):
    payment_id: PaymentId | None = None


class StatusIn(msgspec.Struct):
    status: Status


class ListQuery(msgspec.Struct):
    skip: Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 100
    status: Status | None = None
    screening_id: Id | None = None
    user_id: Id | None = None


class TicketOut(msgspec.Struct):
    """The guide's ticket. ``price`` (screening price times seat type, in cents exactly) is a
    JSON number, as api/screenings.py renders prices."""

    id: int
    user_id: int
    screening_id: int
    seat_id: int
    price: float
    status: Status
    booked_at: datetime
    confirmed_at: datetime | None
    payment_id: str | None


def ticket_out(row: Any) -> TicketOut:
    return TicketOut(
        row["id"],
        row["user_id"],
        row["screening_id"],
        row["seat_id"],
        float(row["price"]),
        row["status"],
        row["booked_at"],
        row["confirmed_at"],
        row["payment_id"],
    )


@router.post(
    "/api/v1/tickets/book", access="user", body=BookIn, status=201, response=list[TicketOut]
)
async def book(call: Call) -> list[TicketOut]:
    """Hold and buy seats in one call (confirmed with a payment_id, pending without)."""
    body: BookIn = call.body
    seat_ids = unique_seats(body.seat_ids)
    user_id, screening_id, payment_id = call.user.user_id, body.screening_id, body.payment_id
    # No lookup of the payment id up front (a query per booking): a replay finds its seats
    # sold (hold refused) or its payment id taken (unique violation), and answers from there.
    try:
        await call.services.engine.hold(screening_id, user_id, seat_ids)
    except SeatLockError:
        if payment_id is not None:
            found = await _existing(call.services, payment_id, user_id, screening_id, seat_ids)
            if found is not None:
                return found
        raise
    try:
        return await _claim_and_commit(call.services, user_id, screening_id, seat_ids, payment_id)
    except Conflict:  # e.g. a payment id already used for other seats: no hold left behind
        await _release(call.services, screening_id, user_id, seat_ids)
        raise


@router.post(
    "/api/v1/tickets/book-from-reservation",
    access="user",
    body=PaidBookIn,
    status=201,
    response=list[TicketOut],
)
async def book_from_reservation(call: Call) -> list[TicketOut]:
    """Buy the seats you hold (payment webhook); idempotent on payment_id."""
    body: PaidBookIn = call.body
    seat_ids = unique_seats(body.seat_ids)
    return await _claim_and_commit(
        call.services, call.user.user_id, body.screening_id, seat_ids, body.payment_id
    )


async def _existing(
    services: Services, payment_id: str, user_id: int, screening_id: int, seat_ids: list[int]
) -> list[TicketOut] | None:
    """The tickets already bought with this payment id; 409 if it paid for something else."""
    booking = await repo.booking_by_payment(services.db, payment_id)
    if booking is None:
        return None
    if not booking.matches(user_id, screening_id, seat_ids):
        raise Conflict("This payment_id was already used for another booking")
    return [ticket_out(r) for r in await repo.tickets_of_booking(services.db, booking.id)]


async def _claim_and_commit(
    services: Services, user_id: int, screening_id: int, seat_ids: list[int], payment_id: str | None
) -> list[TicketOut]:
    engine = services.engine
    try:
        await engine.claim(screening_id, user_id, seat_ids, pin_ms=COMMIT_PIN_MS)
    except SeatLockError:
        # A duplicate call may have sold these seats a moment ago: answer with its tickets.
        if payment_id is not None:
            found = await _existing(services, payment_id, user_id, screening_id, seat_ids)
            if found is not None:
                return found
        raise
    rows, fresh = await _commit(services, user_id, screening_id, seat_ids, payment_id)
    if fresh:
        await _mark_sold(services, user_id, screening_id, seat_ids)
        services.history.submit(history.Closed(screening_id, user_id, seat_ids, "booked"))
    return rows


async def _mark_sold(
    services: Services, user_id: int, screening_id: int, seat_ids: list[int]
) -> None:
    try:
        await services.engine.sell(screening_id, dict.fromkeys(seat_ids, user_id))
    except Exception as exc:
        # Committed in PostgreSQL, so sold and the answer is 201 (invariant 5) whatever failed
        # here: Redis rebuilds sold seats from PostgreSQL on its next load (invariant 7), and
        # the unique index refuses a second ticket for these seats meanwhile.
        logger.warning("seats of screening %s sold but not marked in Redis: %r", screening_id, exc)


async def _commit(
    services: Services, user_id: int, screening_id: int, seat_ids: list[int], payment_id: str | None
) -> tuple[list[TicketOut], bool]:
    """The tickets, and whether this call created them (False: a duplicate call did)."""
    try:
        rows = await services.bookings.book(user_id, screening_id, seat_ids, payment_id)
        return [ticket_out(r) for r in rows], True
    except asyncpg.UniqueViolationError:
        # Same payment id, committed first by a concurrent call (earlier in the same batch, or
        # another batch PostgreSQL made us wait for): it is committed now, answer with it.
        assert payment_id is not None
        found = await _existing(services, payment_id, user_id, screening_id, seat_ids)
        if found is None:
            raise Conflict("This payment_id was already used for another booking") from None
        return found, False
    except Unavailable:
        raise
    except SeatLockError:
        await _release(services, screening_id, user_id, seat_ids)
        raise
    except DB_DOWN as exc:
        # Not committed. The holds stay (pinned COMMIT_PIN_MS at most beyond their deadline)
        # so the user can retry the payment; releasing them would give the seats away.
        logger.warning("booking not saved, holds kept: %r", exc)
        raise Unavailable("Booking could not be saved right now; please try again") from None


async def _release(services: Services, screening_id: int, user_id: int, seats: list[int]) -> None:
    try:
        await services.engine.release(screening_id, user_id, seats)
    except (RedisError, OSError) as exc:  # the leases still expire on their own
        logger.warning("could not release holds after a failed booking: %r", exc)


async def _unsell(services: Services, screening_id: int, seat_id: int) -> None:
    try:
        await services.engine.unsell(screening_id, [seat_id])
    except (RedisError, OSError) as exc:  # stays "booked" in Redis: safe, never sold twice
        logger.warning("seat %s of screening %s not freed in Redis: %r", seat_id, screening_id, exc)


async def _own_ticket(call: Call, *, admin_too: bool = True) -> Any:
    row = await repo.get(call.services.db, call.params["ticket_id"])
    user = call.user
    if row is None or (row["user_id"] != user.user_id and not (admin_too and user.is_admin)):
        raise NotFound("Ticket not found")
    return row


@router.get("/api/v1/tickets/my-tickets", access="user", response=list[TicketOut])
async def my_tickets(call: Call) -> list[TicketOut]:
    """Your tickets, newest first."""
    return [ticket_out(r) for r in await repo.for_user(call.services.db, call.user.user_id)]


@router.get("/api/v1/tickets/", access="admin", query=ListQuery, response=list[TicketOut])
async def list_tickets(call: Call) -> list[TicketOut]:
    """Every ticket, newest first, with filters (admin)."""
    q: ListQuery = call.query
    rows = await repo.search(
        call.services.db,
        skip=q.skip,
        limit=q.limit,
        status=q.status,
        screening_id=q.screening_id,
        user_id=q.user_id,
    )
    return [ticket_out(r) for r in rows]


@router.get("/api/v1/tickets/{ticket_id:int}", access="user", response=TicketOut)
async def get_ticket(call: Call) -> TicketOut:
    """One of your tickets (admins: any ticket)."""
    return ticket_out(await _own_ticket(call))


@router.delete("/api/v1/tickets/{ticket_id:int}", access="user", response=TicketOut)
async def cancel_ticket(call: Call) -> TicketOut:
    """Cancel one of your tickets before the screening starts; the seat is free again."""
    row = await _own_ticket(call, admin_too=False)
    if row["status"] not in repo.ACTIVE:
        raise InvalidInput(f"Ticket is already {row['status']}")
    starts_at = await repo.screening_start(call.services.db, row["screening_id"])
    if starts_at is None or not await _in_future(call.services, starts_at):
        raise InvalidInput("Cannot cancel tickets for screenings that have started")
    updated = await repo.change_status(call.services.db, row["id"], list(repo.ACTIVE), "cancelled")
    if updated is None:
        raise InvalidInput("Ticket is already cancelled")
    await _unsell(call.services, row["screening_id"], row["seat_id"])
    return ticket_out(updated)


async def _in_future(services: Services, moment: Any) -> bool:
    return bool(await services.db.fetchval("SELECT $1::timestamptz > now()", moment))


@router.post("/api/v1/tickets/{ticket_id:int}/confirm-payment", access="user", response=TicketOut)
async def confirm_payment(call: Call) -> TicketOut:
    """Mark a pending ticket paid (body ``{"payment_id": ...}`` optional)."""
    raw = await call.request.body()
    body: PaymentIn = decode_body(raw, PaymentIn) if raw.strip() else PaymentIn()
    row = await _own_ticket(call)
    if row["status"] != "pending":
        raise InvalidInput(f"Only pending tickets can be confirmed (this one is {row['status']})")
    updated = await repo.change_status(
        call.services.db, row["id"], ["pending"], "confirmed", body.payment_id
    )
    if updated is None:
        raise InvalidInput("Only pending tickets can be confirmed")
    return ticket_out(updated)


@router.put(
    "/api/v1/tickets/{ticket_id:int}/status", access="admin", body=StatusIn, response=TicketOut
)
async def update_status(call: Call) -> TicketOut:
    """Move a ticket to another status (admin); cancelling or refunding frees the seat."""
    to: str = call.body.status
    row = await repo.get(call.services.db, call.params["ticket_id"])
    if row is None:
        raise NotFound("Ticket not found")
    if to not in repo.TRANSITIONS[row["status"]]:
        raise InvalidInput(f"Cannot change ticket status from {row['status']} to {to}")
    updated = await repo.change_status(call.services.db, row["id"], [row["status"]], to)
    if updated is None:
        raise Conflict("The ticket changed meanwhile; try again")
    if to in ("cancelled", "refunded"):
        await _unsell(call.services, row["screening_id"], row["seat_id"])
    return ticket_out(updated)


@router.post("/api/v1/tickets/{ticket_id:int}/resend", access="user", response=Message)
async def resend(call: Call) -> Message:
    """Send the ticket confirmation mail again."""
    row = await _own_ticket(call)
    if row["status"] not in repo.ACTIVE:
        raise InvalidInput(f"Ticket is {row['status']}")
    email = await repo.owner_email(call.services.db, row["user_id"])
    if email is None:
        raise NotFound("Ticket not found")
    body = (
        f"Your ticket #{row['id']}: screening {row['screening_id']}, seat {row['seat_id']},"
        f" price {row['price']}, status {row['status']}."
    )
    await call.services.mailer.send(
        Mail(to=email, subject="Your ticket", body=body, kind="ticket_confirmation")
    )
    return Message("Ticket confirmation sent")
