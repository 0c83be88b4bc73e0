"""The guide's tickets: quick book, book-from-reservation (payment webhook) and ticket management.

The booking flows live in ``seatlock/services/bookings.py``; a route here parses, authorizes
(a user's own tickets; 404 for others', so ids do not leak), calls the service or a repository
read and renders the guide's ticket.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated

import msgspec
from redis.exceptions import RedisError

from api.reservations import MAX_SEATS_PER_REQUEST, Id, unique_seats
from api.routing import MAX_ID, Call, Router
from api.schemas import Message
from db import tickets as repo
from seatlock.accounts import throttle
from seatlock.accounts.mail import Mail, MailNotSent
from seatlock.errors import InvalidInput, NotFound
from seatlock.services.bookings import Ticket, TicketStatus

router = Router("Tickets")

PaymentId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
# Duplicates are refused by the handler (422); the schema says so.
SeatIds = Annotated[
    list[Id],
    msgspec.Meta(
        min_length=1, max_length=MAX_SEATS_PER_REQUEST, extra_json_schema={"uniqueItems": True}
    ),
]
Status = TicketStatus


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


def ticket_out(t: Ticket) -> TicketOut:
    return TicketOut(
        t.id,
        t.user_id,
        t.screening_id,
        t.seat_id,
        float(t.price),
        t.status,
        t.booked_at,
        t.confirmed_at,
        t.payment_id,
    )


@router.post(
    "/api/v1/tickets/book",
    errors=(402, 404, 409),
    access="user",
    body=BookIn,
    status=201,
    response=list[TicketOut],
)
async def book(call: Call) -> list[TicketOut]:
    """Hold and buy seats in one call (confirmed with a payment_id, pending without)."""
    body: BookIn = call.body
    seat_ids = unique_seats(body.seat_ids)
    tickets = await call.services.bookings.book(
        call.user.user_id, body.screening_id, seat_ids, body.payment_id
    )
    return [ticket_out(t) for t in tickets]


@router.post(
    "/api/v1/tickets/book-from-reservation",
    errors=(402, 404, 409),
    access="user",
    body=PaidBookIn,
    status=201,
    response=list[TicketOut],
)
async def book_from_reservation(call: Call) -> list[TicketOut]:
    """Buy the seats you hold (payment webhook); idempotent on payment_id."""
    body: PaidBookIn = call.body
    seat_ids = unique_seats(body.seat_ids)
    tickets = await call.services.bookings.book_from_reservation(
        call.user.user_id, body.screening_id, seat_ids, body.payment_id
    )
    return [ticket_out(t) for t in tickets]


async def _own_ticket(call: Call, *, admin_too: bool = True) -> Ticket:
    row = await repo.get(call.services.db, call.params["ticket_id"])
    user = call.user
    if row is None or (row["user_id"] != user.user_id and not (admin_too and user.is_admin)):
        raise NotFound("Ticket not found")
    return Ticket.of(row)


@router.get("/api/v1/tickets/my-tickets", access="user", response=list[TicketOut])
async def my_tickets(call: Call) -> list[TicketOut]:
    """Your tickets, newest first."""
    rows = await repo.for_user(call.services.db, call.user.user_id)
    return [ticket_out(Ticket.of(r)) for r in rows]


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
    return [ticket_out(Ticket.of(r)) for r in rows]


@router.get("/api/v1/tickets/{ticket_id:int}", access="user", response=TicketOut)
async def get_ticket(call: Call) -> TicketOut:
    """One of your tickets (admins: any ticket)."""
    return ticket_out(await _own_ticket(call))


@router.delete(
    "/api/v1/tickets/{ticket_id:int}", errors=(400, 409), access="user", response=TicketOut
)
async def cancel_ticket(call: Call) -> TicketOut:
    """Cancel one of your tickets before the screening starts; the seat is free again."""
    ticket = await _own_ticket(call, admin_too=False)
    return ticket_out(await call.services.bookings.cancel_ticket(ticket))


@router.post(
    "/api/v1/tickets/{ticket_id:int}/confirm-payment",
    errors=(400, 402, 409),
    access="user",
    body=PaymentIn,
    optional_body=True,
    response=TicketOut,
)
async def confirm_payment(call: Call) -> TicketOut:
    """Mark a pending ticket paid (body ``{"payment_id": ...}`` optional)."""
    body: PaymentIn = call.body or PaymentIn()
    ticket = await _own_ticket(call)
    return ticket_out(await call.services.bookings.confirm_payment(ticket, body.payment_id))


@router.put(
    "/api/v1/tickets/{ticket_id:int}/status",
    errors=(409,),
    access="admin",
    body=StatusIn,
    response=TicketOut,
)
async def update_status(call: Call) -> TicketOut:
    """Move a ticket to another status (admin); cancelling or refunding frees the seat."""
    row = await repo.get(call.services.db, call.params["ticket_id"])
    if row is None:
        raise NotFound("Ticket not found")
    updated = await call.services.bookings.change_status(Ticket.of(row), call.body.status)
    return ticket_out(updated)


@router.post(
    "/api/v1/tickets/{ticket_id:int}/resend", errors=(400, 429), access="user", response=Message
)
async def resend(call: Call) -> Message:
    """Send the ticket confirmation mail again."""
    ticket = await _own_ticket(call)
    if ticket.status not in repo.ACTIVE:
        raise InvalidInput(f"Ticket is {ticket.status}")
    email = await repo.owner_email(call.services.db, ticket.user_id)
    if email is None:
        raise NotFound("Ticket not found")
    body = (
        f"Your ticket #{ticket.id}: screening {ticket.screening_id}, seat {ticket.seat_id},"
        f" price {ticket.price}, status {ticket.status}."
    )
    redis = call.services.redis
    await throttle.admit_ticket_mail(redis, ticket.id, throttle.TICKET_MAIL_EVERY_S)
    try:
        await call.services.mailer.send(
            Mail(to=email, subject="Your ticket", body=body, kind="ticket_confirmation")
        )
    except MailNotSent:
        with contextlib.suppress(RedisError):
            await throttle.ticket_mail_failed(redis, ticket.id)
        raise
    return Message("Ticket confirmation sent")
