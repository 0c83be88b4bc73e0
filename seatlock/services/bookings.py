"""The booking flow: quick book, book-from-reservation (payment webhook), ticket cancel and status.

A booking is: the engine pins the caller's holds (claim), PostgreSQL commits the booking and its
tickets (group commit, ``db.tickets.BookingWriter``), then the engine marks the seats sold. A
successful return therefore means the tickets are committed (invariant 5), whatever Redis does
afterwards: marking the seats sold is retried in the background until Redis takes it, also when
an idempotent replay finds the booking already made (which then reads the tickets again, to free
the seats of any cancelled meanwhile). A cancelled or refunded ticket frees its seat in Redis after
PostgreSQL changed it, retried in the background the same way. The reconciler (``reconciler.py``)
repairs what is left.

With ``SEATLOCK_HOLD_REPLICAS`` the sale in Redis counts as marked only once the replicas confirmed
it: until then the engine raises ``ReplicasBehind`` (an Unavailable) and the marking is retried
like a Redis outage. The booking's answer does not change: PostgreSQL committed the tickets, and
they are the booking's truth (invariant 5). A 503 there would lose or double a ticket from the
client's side: a retry without payment_id would hold seats already sold (409 on its own purchase)
or, after a cancellation meanwhile, book again; a retry with one replays (invariant 6), so it
gains nothing. A failover that loses the unconfirmed "sold" mark cannot sell the seat twice: the
unique index refuses a second ticket (invariant 1), and this retry or the reconciler marks it
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

import asyncpg
from redis.exceptions import RedisError

from db import reservations as history
from db import tickets as repo
from db.pool import DATABASE_FAILED
from db.reservations import HistoryWriter
from db.tickets import BookingWriter, SeatAlreadySold
from seatlock.engine.errors import ScreeningStarted
from seatlock.engine.model import new_grant
from seatlock.engine.seats import SeatEngine
from seatlock.errors import Conflict, InvalidInput, SeatLockError, Unavailable
from seatlock.metrics import BOOKINGS
from seatlock.services.payments import AcceptAny, PaymentVerifier, booking_scope, ticket_scope

logger = logging.getLogger(__name__)

# Not committed: PostgreSQL cannot answer (db/pool.py), or refused the transaction.
DB_DOWN = DATABASE_FAILED
# How long a claim pins the holds past now. Long enough for a batch to commit; when the commit
# fails the holds are left as they are (the user retries the payment), so a failed commit only
# keeps a hold this much longer than its own deadline, never indefinitely.
COMMIT_PIN_MS = 15_000
# Marking seats sold after a commit: how long a request waits for it before answering (the rest
# runs in the background), and the backoff of its retries while Redis refuses.
SELL_WAIT_S = 0.5
SELL_RETRY_FIRST_S = 0.1
SELL_RETRY_MAX_S = 5.0
PAYMENT_REUSED = "This payment_id was already used for another booking"
TicketStatus = Literal["pending", "confirmed", "cancelled", "refunded"]
# Seats to change in Redis: seat id -> buyer to mark sold, or seat ids to free.
Seats = TypeVar("Seats", dict[int, int], list[int])
BOOKED, REPLAYED, REFUSED, UNAVAILABLE, CANCELLED = (
    BOOKINGS.labels(outcome)
    for outcome in ("booked", "replayed", "refused", "unavailable", "cancelled")
)


@dataclass(frozen=True, slots=True)
class Ticket:
    id: int
    user_id: int
    screening_id: int
    seat_id: int
    price: Decimal
    status: TicketStatus
    booked_at: datetime
    confirmed_at: datetime | None
    payment_id: str | None

    @classmethod
    def of(cls, row: Any) -> Ticket:
        """The ticket of a ``db.tickets`` row."""
        return cls(
            row["id"],
            row["user_id"],
            row["screening_id"],
            row["seat_id"],
            row["price"],
            row["status"],
            row["booked_at"],
            row["confirmed_at"],
            row["payment_id"],
        )


class BookingService:
    """Book seats and manage tickets; one instance per process."""

    def __init__(
        self,
        engine: SeatEngine,
        writer: BookingWriter,
        history: HistoryWriter,
        db: asyncpg.Pool,
        *,
        payments: PaymentVerifier | None = None,
        payment_seconds: float = 300,
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.history = history
        self.db = db
        # Seats being marked sold (or freed, after a cancellation) in Redis in the background.
        self._selling: set[asyncio.Task[None]] = set()
        self.sell_retries = 0  # failed attempts to mark seats sold or free them, for tests
        self.payments: PaymentVerifier = payments or AcceptAny()
        self.payment_seconds = payment_seconds  # how long a pending ticket may stay unpaid

    @property
    def unmarked(self) -> int:
        """Committed bookings (and cancellations) whose seats are still being marked sold (or
        freed) in Redis in the background."""
        return len(self._selling)

    async def aclose(self) -> None:
        """Stop marking seats sold in the background: PostgreSQL has them, and the reconciler
        of a running process (or the next load of the screening) puts them into Redis."""
        for task in self._selling:
            task.cancel()
        await asyncio.gather(*self._selling, return_exceptions=True)

    def _verify_booking(
        self, payment_id: str | None, user_id: int, screening_id: int, seat_ids: list[int]
    ) -> None:
        # Before any seat is held or claimed: a refused payment changes nothing.
        if payment_id is not None:
            self.payments.verify(payment_id, booking_scope(user_id, screening_id, seat_ids))

    async def book(
        self, user_id: int, screening_id: int, seat_ids: list[int], payment_id: str | None
    ) -> list[Ticket]:
        """Hold and buy seats in one call (confirmed with a payment_id, pending without)."""
        with _counting_refusals():
            return await self._book(user_id, screening_id, seat_ids, payment_id)

    async def book_from_reservation(
        self, user_id: int, screening_id: int, seat_ids: list[int], payment_id: str | None
    ) -> list[Ticket]:
        """Buy the seats the user holds; idempotent on payment_id (invariant 6)."""
        with _counting_refusals():
            return await self._book_from_reservation(user_id, screening_id, seat_ids, payment_id)

    async def _book(
        self, user_id: int, screening_id: int, seat_ids: list[int], payment_id: str | None
    ) -> list[Ticket]:
        self._verify_booking(payment_id, user_id, screening_id, seat_ids)
        # No lookup of the payment id up front (a query per booking): a replay finds its seats
        # sold (hold refused) or its payment id taken (unique violation), and answers from there.
        grant = new_grant()
        try:
            await self.engine.hold(screening_id, user_id, seat_ids, grant=grant)
        except SeatLockError as exc:
            if (found := await self._replay(payment_id, user_id, screening_id, seat_ids)) is None:
                if isinstance(exc, ScreeningStarted):  # said as a booking, not the hold's words
                    raise ScreeningStarted("Cannot book seats for past screenings") from None
                raise
            return found
        try:
            tickets, fresh = await self._buy(user_id, screening_id, seat_ids, payment_id)
        except Conflict:  # e.g. a payment id already used for other seats: no hold left behind
            await self._release_grant(screening_id, grant, seat_ids)
            raise
        if not fresh and not any(t.status in repo.ACTIVE for t in tickets):
            # An earlier call with this payment id bought them, and they were cancelled since
            # (which is how this call could hold the seats): its tickets are the answer, and the
            # hold this call took is let go, not left to lapse unseen. (Active, their seats are
            # marked sold again, which drops the hold: lua/sell.lua.)
            await self._release_grant(screening_id, grant, seat_ids)
        return tickets

    async def _book_from_reservation(
        self, user_id: int, screening_id: int, seat_ids: list[int], payment_id: str | None
    ) -> list[Ticket]:
        return (await self._buy(user_id, screening_id, seat_ids, payment_id))[0]

    async def _buy(
        self, user_id: int, screening_id: int, seat_ids: list[int], payment_id: str | None
    ) -> tuple[list[Ticket], bool]:
        """The tickets of the seats the user holds, and whether this call bought them (False:
        an earlier or concurrent call with this payment id did)."""
        self._verify_booking(payment_id, user_id, screening_id, seat_ids)
        try:
            await self.engine.claim(screening_id, user_id, seat_ids, pin_ms=COMMIT_PIN_MS)
        except SeatLockError:
            # A duplicate call may have sold these seats a moment ago: answer with its tickets.
            if (found := await self._replay(payment_id, user_id, screening_id, seat_ids)) is None:
                raise
            return found, False
        tickets, fresh = await self._commit(user_id, screening_id, seat_ids, payment_id)
        (BOOKED if fresh else REPLAYED).inc()
        if fresh and payment_id is None:
            # Before the seats are marked sold (lua/owe.lua): they count toward the user's cap.
            await self._record_unpaid(user_id, screening_id, tickets)
        # Also when a duplicate call committed them: its own marking may have failed.
        await self._mark_sold(screening_id, tickets, replayed=not fresh)
        if fresh:
            self.history.submit(history.Closed(screening_id, user_id, seat_ids, "booked"))
        return tickets, fresh

    async def _replay(
        self, payment_id: str | None, user_id: int, screening_id: int, seat_ids: list[int]
    ) -> list[Ticket] | None:
        """The tickets of an earlier call with this payment id, their seats marked sold again
        (the first call's answer or marking may have been lost: a replay repairs Redis); None
        without a payment id or such a call."""
        if payment_id is None:
            return None
        found = await self._existing(payment_id, user_id, screening_id, seat_ids)
        if found is not None:
            REPLAYED.inc()
            await self._mark_sold(screening_id, found, replayed=True)
        return found

    async def _existing(
        self, payment_id: str, user_id: int, screening_id: int, seat_ids: list[int]
    ) -> list[Ticket] | None:
        """The tickets already bought with this payment id; Conflict if it paid for others."""
        booking = await repo.booking_by_payment(self.db, payment_id)
        if booking is None:
            return None
        if not booking.matches(user_id, screening_id, seat_ids):
            raise Conflict(PAYMENT_REUSED)
        return [Ticket.of(r) for r in await repo.tickets_of_booking(self.db, booking.id)]

    async def _commit(
        self, user_id: int, screening_id: int, seat_ids: list[int], payment_id: str | None
    ) -> tuple[list[Ticket], bool]:
        """The tickets, and whether this call created them (False: a duplicate call did)."""
        try:
            rows = await self.writer.book(user_id, screening_id, seat_ids, payment_id)
            return [Ticket.of(r) for r in rows], True
        except asyncpg.UniqueViolationError:
            # Same payment id, committed first by a concurrent call (earlier in the same batch,
            # or another batch PostgreSQL made us wait for): it is committed now, answer with it.
            assert payment_id is not None
            found = await self._existing(payment_id, user_id, screening_id, seat_ids)
            if found is None:
                raise Conflict(PAYMENT_REUSED) from None
            return found, False
        except Unavailable:
            raise
        except SeatAlreadySold:
            # A refusal changes nothing (invariant 10): the caller keeps its holds. The claim let
            # the booking through because Redis showed a seat as the caller's that PostgreSQL has
            # sold: to this caller already (a new payment for seats bought before, next to seats
            # held now), or to anyone, its "sold" mark lost. Releasing every seat asked for once
            # dropped the holds of the seats still to buy, and showed a sold seat available.
            await self._mark_sales(screening_id, seat_ids)
            raise
        except SeatLockError:
            await self._release(screening_id, user_id, seat_ids)
            raise
        except DB_DOWN as exc:
            # Not committed. The holds stay (pinned COMMIT_PIN_MS at most beyond their deadline)
            # so the user can retry the payment; releasing them would give the seats away.
            logger.warning("booking not saved, holds kept: %r", exc)
            raise Unavailable("Booking could not be saved right now; please try again") from None

    async def _record_unpaid(self, user_id: int, screening_id: int, tickets: list[Ticket]) -> None:
        """Fresh pending tickets: their seats count toward the user's cap in Redis until their
        payment deadline (recorded before the seats are marked sold: lua/owe.lua)."""
        due_ms = await self._record_due([t.id for t in tickets])
        try:
            await self.engine.owe(screening_id, user_id, [t.seat_id for t in tickets], due_ms)
        except (SeatLockError, RedisError, OSError) as exc:  # committed: the booking stands
            logger.warning("unpaid seats of screening %s not counted: %r", screening_id, exc)

    async def _record_due(self, ticket_ids: list[int]) -> int:
        """Record fresh pending tickets' payment deadline in PostgreSQL; the deadline (ms)."""
        try:
            due = await repo.record_payment_due(self.db, ticket_ids, self.payment_seconds)
            if due is not None:
                return int(due.timestamp() * 1000)
        except DB_DOWN as exc:  # unrecorded, the deadline is booked_at + the setting anyway
            logger.warning("payment deadline not recorded: %r", exc)
        # Unrecorded: PostgreSQL judges it at booked_at + the setting (its own clock); Redis's
        # marker counts the seats toward the cap until about then, on Redis's clock.
        return self.engine.now_ms() + int(self.payment_seconds * 1000)

    async def _mark_sold(
        self, screening_id: int, tickets: list[Ticket], *, replayed: bool = False
    ) -> None:
        """Mark the active tickets' seats sold in Redis, waiting SELL_WAIT_S at most.

        Committed in PostgreSQL, so sold and the answer is a success (invariant 5) whatever
        Redis does: the marking goes on in the background until Redis takes it (and, with
        replicas to wait for, until they confirmed it), and the unique index refuses a second
        ticket for these seats meanwhile. ``replayed``: the tickets were read, not made by this
        call, so they may have been cancelled since (``_unless_cancelled``).
        """
        sold = {t.seat_id: t.user_id for t in tickets if t.status in repo.ACTIVE}
        await self._sell(screening_id, sold, replayed=replayed)

    async def _mark_sales(self, screening_id: int, seat_ids: list[int]) -> None:
        """Mark sold in Redis those of these seats PostgreSQL has active tickets for, as a replay
        does (``_mark_sold``): a refused booking found Redis behind PostgreSQL."""
        try:
            sales = (await repo.active_sales(self.db, [screening_id])).get(screening_id, {})
        except DB_DOWN as exc:  # the reconciler marks them
            logger.warning("sold seats of screening %s not marked again: %r", screening_id, exc)
            return
        sold = {seat: sales[seat] for seat in seat_ids if seat in sales}
        await self._sell(screening_id, sold, replayed=True)

    async def _sell(self, screening_id: int, sold: dict[int, int], *, replayed: bool) -> None:
        """``_mark_sold`` of seat id -> buyer."""
        if not sold:
            return

        async def sell(seats: dict[int, int]) -> None:
            await self.engine.sell(screening_id, seats)
            if replayed:
                await self._unless_cancelled(screening_id, seats)

        still_sold = functools.partial(self._still_sold, screening_id)
        await self._in_background(
            self._retried(screening_id, "marked sold", sold, sell, still_sold)
        )

    async def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work``, waiting SELL_WAIT_S at most: PostgreSQL has the change, so the answer
        is a success whatever Redis does, and the work goes on in the background (``unmarked``)."""
        task = asyncio.create_task(work)
        await asyncio.wait({task}, timeout=SELL_WAIT_S)
        if not task.done():
            self._selling.add(task)
            task.add_done_callback(self._selling.discard)

    async def _retried(
        self,
        screening_id: int,
        doing: str,
        seats: Seats,
        attempt: Callable[[Seats], Awaitable[None]],
        refresh: Callable[[Seats], Awaitable[Seats]],
    ) -> None:
        """Run ``attempt(seats)``, retried with a capped backoff until Redis takes it. Before
        each retry, ``refresh`` keeps the seats that PostgreSQL still says it is right for: a
        change of a seat meanwhile must not be undone."""
        delay = SELL_RETRY_FIRST_S
        while seats:
            try:
                await attempt(seats)
                return
            except Unavailable as exc:
                failure: Exception = exc
            except SeatLockError as exc:  # the screening is gone: nothing to change
                logger.warning("seats of screening %s not %s: %r", screening_id, doing, exc)
                return
            except Exception as exc:
                failure = exc
            self.sell_retries += 1
            logger.warning(
                "seats %s of screening %s not %s in Redis yet, retrying in %.1f s: %r",
                list(seats),
                screening_id,
                doing,
                delay,
                failure,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, SELL_RETRY_MAX_S)
            seats = await refresh(seats)

    async def _unless_cancelled(self, screening_id: int, sold: dict[int, int]) -> None:
        """Free again the seats just marked sold whose tickets PostgreSQL no longer has active.

        A replay marks the seats of tickets it read. A cancellation committed after that read
        frees its seat in Redis, possibly before the replay's marking lands, which then showed
        the seat booked with no ticket until the reconciler came by. Read after the marking,
        PostgreSQL tells: a cancellation committed before this read is undone here, one
        committed after it frees the seat itself. While the seat shows sold nobody can hold
        it, so no newer sale is undone.
        """
        active = await self._still_sold(screening_id, sold)
        cancelled = [seat for seat in sold if seat not in active]
        if cancelled:
            await self._unsell_seats(screening_id, cancelled)

    async def _still_sold(self, screening_id: int, sold: dict[int, int]) -> dict[int, int]:
        """Of these seats, those PostgreSQL still has active tickets for (all, if it can't say)."""
        try:
            sales = await repo.active_sales(self.db, [screening_id])
        except DB_DOWN:
            return sold
        active = sales.get(screening_id, {})
        return {seat: active[seat] for seat in sold if seat in active}

    async def _release(self, screening_id: int, user_id: int, seats: list[int]) -> None:
        try:
            await self.engine.release(screening_id, user_id, seats)
        except (RedisError, OSError) as exc:  # the leases still expire on their own
            logger.warning("could not release holds after a failed booking: %r", exc)

    async def _release_grant(self, screening_id: int, grant: str, seats: list[int]) -> None:
        """Let go of what this call's hold took; seats the user held before stay held."""
        try:
            await self.engine.release_grant(screening_id, grant, seats)
        except (RedisError, OSError, SeatLockError) as exc:  # the leases expire on their own
            logger.warning("could not release holds after a failed booking: %r", exc)

    async def cancel_ticket(self, ticket: Ticket) -> Ticket:
        """Cancel a ticket before its screening starts; the seat is free again."""
        if ticket.status not in repo.ACTIVE:
            raise InvalidInput(f"Ticket is already {ticket.status}")
        starts_at = await repo.screening_start(self.db, ticket.screening_id)
        if starts_at is None or not await self._in_future(starts_at):
            raise InvalidInput("Cannot cancel tickets for screenings that have started")
        updated = await repo.change_status(self.db, ticket.id, list(repo.ACTIVE), "cancelled")
        if updated is None:
            raise InvalidInput("Ticket is already cancelled")
        CANCELLED.inc()
        await self._unsell(ticket.screening_id, ticket.seat_id)
        return Ticket.of(updated)

    async def _in_future(self, moment: datetime) -> bool:
        # PostgreSQL's clock, not this host's: no outcome depends on one host's clock.
        return bool(await self.db.fetchval("SELECT $1::timestamptz > now()", moment))

    async def change_status(self, ticket: Ticket, to: TicketStatus) -> Ticket:
        """Move a ticket to another status (admin); cancelling or refunding frees the seat."""
        if to not in repo.TRANSITIONS[ticket.status]:
            raise InvalidInput(f"Cannot change ticket status from {ticket.status} to {to}")
        updated = await repo.change_status(self.db, ticket.id, [ticket.status], to)
        if updated is None:
            raise Conflict("The ticket changed meanwhile; try again")
        if to in ("cancelled", "refunded"):
            CANCELLED.inc()
            await self._unsell(ticket.screening_id, ticket.seat_id)
        elif to == "confirmed":
            # Paid, as by confirm-payment: its seat no longer counts toward the user's cap
            # (lua/owe.lua), which otherwise refused the user's holds until the payment deadline.
            await self._settle(ticket)
        return Ticket.of(updated)

    async def confirm_payment(
        self, ticket: Ticket, payment_id: str | None, at: datetime | None = None
    ) -> Ticket:
        """Mark a pending ticket paid, if the payment verifier takes the payment_id."""
        self.payments.verify(payment_id, ticket_scope(ticket.id))
        if ticket.status != "pending":
            raise InvalidInput(
                f"Only pending tickets can be confirmed (this one is {ticket.status})"
            )
        updated = await repo.confirm_pending(
            self.db, ticket.id, payment_id, self.payment_seconds, at
        )
        if updated is not None:
            await self._settle(ticket)
            return Ticket.of(updated)
        current = await repo.get(self.db, ticket.id)
        if current is not None and current["status"] == "pending":
            # The deadline loop cancels it soon: its seat is going back on sale (invariant 1).
            raise Conflict("The payment deadline of this ticket has passed")
        raise InvalidInput("Only pending tickets can be confirmed")

    async def _settle(self, ticket: Ticket) -> None:
        try:
            await self.engine.settle(ticket.screening_id, ticket.user_id, [ticket.seat_id])
        except (SeatLockError, RedisError, OSError) as exc:  # counts until its deadline at most
            logger.warning("paid seat %s still counted toward the cap: %r", ticket.seat_id, exc)

    async def _unsell(self, screening_id: int, seat_id: int) -> None:
        await self._unsell_seats(screening_id, [seat_id])

    async def _unsell_seats(self, screening_id: int, seat_ids: list[int]) -> None:
        """Free in Redis the seats of tickets PostgreSQL has cancelled (meanwhile they show
        booked: safe, never sold twice)."""

        async def unsell(seats: list[int]) -> None:
            await self.engine.unsell(screening_id, seats)

        async def still_free(seats: list[int]) -> list[int]:
            try:
                active = await repo.active_sales(self.db, [screening_id])
            except DB_DOWN:  # PostgreSQL cannot say: free them all
                return seats
            return [seat for seat in seats if seat not in active.get(screening_id, {})]

        await self._in_background(
            self._retried(screening_id, "freed", seat_ids, unsell, still_free)
        )


@contextlib.contextmanager
def _counting_refusals() -> Iterator[None]:
    """Count a booking refused (4xx) or not saved (503) once, at the public call."""
    try:
        yield
    except Unavailable:
        UNAVAILABLE.inc()
        raise
    except SeatLockError:
        REFUSED.inc()
        raise
