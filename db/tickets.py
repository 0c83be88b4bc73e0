"""Bookings and tickets in PostgreSQL, the system of record for everything sold.

PostgreSQL is the final judge (invariants 1, 5, 6): ``tickets_one_active_per_seat`` refuses a
second active ticket for a seat, ``bookings.payment_id`` refuses a second booking for a payment.

``BookingWriter`` commits concurrent bookings together (group commit): the usual batch is one
statement that commits on its own, every caller answered only once it has (invariant 5); a batch
in which any booking fails is written again in one transaction, each booking in its own savepoint.
When the committing statement (or the COMMIT) was sent but its answer is lost (the connection
dies, releasing it fails), the writer looks the batch's bookings up before answering: an outcome
is known, never guessed.

A booking and a change of its screening's room take turns on the screening's advisory lock
(``SHARE_SCREENINGS_SQL``, ``ROOM_CHANGE_LOCK_SQL``): tickets are only ever written for seats of
the room the screening is in when they commit, and a screening that sold tickets never moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg

from db.pool import DATABASE_FAILED, Conn, Executor, KeptConnection
from seatlock.errors import Conflict, NotFound, Unavailable
from seatlock.heartbeats import BEAT_S, Beat, no_beat

logger = logging.getLogger(__name__)

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


class SeatsNotInScreening(NotFound):
    def __init__(self) -> None:
        super().__init__("Seat not found in this screening")


class BookingNotSaved(Unavailable):
    """The COMMIT was sent, its answer lost, and the lookup found the booking not committed."""

    def __init__(self) -> None:
        super().__init__("Booking could not be saved right now; please try again")


class BookingOutcomeUnknown(Unavailable):
    """The COMMIT was sent, its answer lost, and PostgreSQL could not be asked whether it
    committed: a replay with the same payment_id answers the booking if it did."""

    def __init__(self) -> None:
        super().__init__("Booking outcome not known yet; retry with the same payment_id")


SEAT_CONSTRAINT = "tickets_one_active_per_seat"
_MULTIPLIER_SQL = " ".join(f"WHEN '{k}' THEN {v}" for k, v in SEAT_TYPE_MULTIPLIERS.items())
# One round trip per booking: price the seats (as ticket_price does: round() on numeric is
# half-up for prices >= 0), insert the booking only if every seat is in the screening's room,
# then its tickets. No row back means an unknown screening or seat, and nothing was written.
BOOK_SQL = (
    "WITH p AS (SELECT st.id AS seat_id,"
    f" round(s.price * CASE st.seat_type {_MULTIPLIER_SQL} ELSE 1.0 END, 2) AS price"
    " FROM screenings s JOIN seats st ON st.room_id = s.room_id"
    " WHERE s.id = $2 AND st.id = ANY($3::bigint[])),"
    " b AS (INSERT INTO bookings (user_id, screening_id, payment_id, seat_ids)"
    " SELECT $1, $2, $4, $3::bigint[]"
    " WHERE (SELECT count(*) FROM p) = cardinality($3::bigint[]) RETURNING id)"
    " INSERT INTO tickets (booking_id, user_id, screening_id, seat_id, price, status,"
    " payment_id, confirmed_at)"
    " SELECT b.id, $1, $2, p.seat_id, p.price, $5, $4,"
    " CASE WHEN $5 = 'confirmed' THEN now() END"
    f" FROM b, p ORDER BY p.seat_id RETURNING {TICKET_COLUMNS}"
)
_PRICE_SQL = f"round(s.price * CASE st.seat_type {_MULTIPLIER_SQL} ELSE 1.0 END, 2)"
# A whole batch in one statement that commits on its own, for when nothing in it fails (the usual
# case): no BEGIN, no COMMIT, one round trip (and one each side to take and let go of the lock of
# its screenings, SHARE_SCREENINGS_SQL). Its booking ids are drawn beforehand (``BookingIds``)
# so that each ticket row can be traced back to its request ``i`` and, if the statement's answer
# is lost, the batch can be looked up. All or nothing: a unique violation aborts the statement, and
# a seat that is not in its screening's room (fewer priced seats than seats asked) makes both
# INSERTs write nothing; either way the batch is written again one savepoint per booking.
BATCH_SQL = (
    "WITH r AS (SELECT * FROM unnest($1::int[], $2::bigint[], $3::bigint[], $4::text[],"
    " $5::text[], $8::bigint[]) AS r(i, user_id, screening_id, payment_id, status, booking_id)),"
    " q AS (SELECT * FROM unnest($6::int[], $7::bigint[]) AS q(i, seat_id)),"
    f" p AS (SELECT q.i, q.seat_id, {_PRICE_SQL} AS price FROM q JOIN r ON r.i = q.i"
    " JOIN screenings s ON s.id = r.screening_id"
    " JOIN seats st ON st.id = q.seat_id AND st.room_id = s.room_id),"
    " whole AS (SELECT (SELECT count(*) FROM p) = cardinality($7::bigint[]) AS ok),"
    " b AS (INSERT INTO bookings (id, user_id, screening_id, payment_id, seat_ids)"
    " OVERRIDING SYSTEM VALUE SELECT r.booking_id, r.user_id, r.screening_id, r.payment_id,"
    " (SELECT array_agg(q.seat_id ORDER BY q.seat_id) FROM q WHERE q.i = r.i)"
    " FROM r, whole WHERE whole.ok ORDER BY r.i),"
    " t AS (INSERT INTO tickets (booking_id, user_id, screening_id, seat_id, price, status,"
    " payment_id, confirmed_at)"
    " SELECT r.booking_id, r.user_id, r.screening_id, p.seat_id, p.price, r.status,"
    " r.payment_id, CASE WHEN r.status = 'confirmed' THEN now() END"
    " FROM p JOIN r ON r.i = p.i, whole WHERE whole.ok"
    f" ORDER BY p.i, p.seat_id RETURNING {TICKET_COLUMNS})"
    " SELECT r.i, t.* FROM t JOIN r ON r.booking_id = t.booking_id"
)
# The tickets of bookings, by booking: whether a batch whose answer was lost committed, and its
# tickets when that answer was the batch statement's.
TICKETS_OF_BOOKINGS_SQL = (
    f"SELECT {TICKET_COLUMNS} FROM tickets WHERE booking_id = ANY($1::bigint[])"
    " ORDER BY booking_id, seat_id"
)
# Bookings and room changes of a screening take turns on an advisory lock whose key is the
# screening id negated (every other advisory key of seatlock is positive: db/migrate.py,
# db/reservations.py, db/demo.py). A booking holds it shared from a statement of its own, before
# the statement that reads the screening's room and writes its tickets, until that statement has
# committed: the statement's snapshot follows any room change it waited for. A room change holds
# it exclusive from before its UPDATE to its commit (db/catalog.py): the UPDATE's check for sold
# tickets sees every booking that committed while it waited. Without it neither waited for the
# other (the tickets' foreign key takes FOR KEY SHARE, which the UPDATE's FOR NO KEY UPDATE does
# not conflict with), and a screening moved to another room kept tickets for seats of the old
# one. Shared holders never wait for one another, and take no row lock (no MultiXact): bookings
# of a hot screening do not queue on it. One statement, ascending ids, for a whole batch.
# Session-level around the batch statement, which commits on its own (no transaction); to the end
# of the transaction around the savepoints of a retried batch and in ``create_booking``.
SHARE_SCREENINGS_SQL = "SELECT pg_advisory_lock_shared(-id) FROM unnest($1::bigint[]) AS u(id)"
UNSHARE_SCREENINGS_SQL = "SELECT pg_advisory_unlock_shared(-id) FROM unnest($1::bigint[]) AS u(id)"
SHARE_SCREENINGS_IN_TRANSACTION_SQL = (
    "SELECT pg_advisory_xact_lock_shared(-id) FROM unnest($1::bigint[]) AS u(id)"
)
# A room change: waits for the bookings of the screening in flight, keeps new ones waiting until
# its transaction ends.
ROOM_CHANGE_LOCK_SQL = "SELECT pg_advisory_xact_lock(-$1::bigint)"
ID_BLOCK = 256  # booking ids drawn from the sequence at a time (BookingIds)
# Errors after which a statement's outcome is not known, although asyncpg raises them as
# PostgresErrors: the connection failed or was ended (class 08, and 57: an administrator or a
# shutdown ended the backend, maybe once its work was committed). Any other error PostgreSQL
# answers a statement with means the statement was rolled back.
ANSWER_LOST = (asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError)
# Waits before each lookup of a batch whose COMMIT went unanswered (PostgreSQL may be restarting).
OUTCOME_LOOKUP_DELAYS = (0.0, 0.2, 0.5, 1.0)
OUTCOME_LOOKUP_TIMEOUT = 2.0  # seconds per lookup
# Test-only: False makes the writer guess "not committed" when a COMMIT goes unanswered, as it
# once did. It exists for the fault suite's sabotaged control run, which must show the checker
# catching the 500s and lost acknowledgements that guessing causes. Never False in production.
LOOK_UP_OUTCOME = True
MAX_BATCH = 256  # bookings per transaction
MAX_QUEUE = 4096  # bookings waiting; a burst beyond waits to enqueue (back-pressure)


@dataclass(slots=True)
class _Request:
    user_id: int
    screening_id: int
    seat_ids: list[int]
    payment_id: str | None
    done: asyncio.Future[list[Any]] = field(repr=False)


class BookingIds:
    """Booking ids drawn ahead from the bookings' sequence, ID_BLOCK in one round trip, for the
    writer's batches (one task: no lock). Ids drawn and never used leave gaps, as a sequence
    may anyway."""

    def __init__(self, block: int = ID_BLOCK) -> None:
        self._ids: deque[int] = deque()
        self._block = block

    async def take(self, conn: Conn, count: int) -> list[int]:
        ids = self._ids
        if len(ids) < count:
            rows = await conn.fetch(
                "SELECT nextval(pg_get_serial_sequence('bookings', 'id'))"
                " FROM generate_series(1, $1::int)",
                max(self._block, count - len(ids)),
            )
            ids.extend(int(row[0]) for row in rows)
        return [ids.popleft() for _ in range(count)]


class BookingWriter:
    """Group commit of bookings: a bounded queue and one flusher task per process.

    ``book`` answers exactly as ``create_booking`` would, but only once the batch holding the
    booking is committed. The batch is first written by one statement that commits on its own
    (one round trip); if any of its bookings fails (seat sold, payment id taken, unknown seat),
    that statement writes nothing and the batch is written again in a transaction, each booking in
    its own savepoint: the failing one is rolled back alone and the others commit. A failing
    COMMIT fails every booking in it.
    """

    def __init__(
        self, db: asyncpg.Pool, *, max_batch: int = MAX_BATCH, max_queue: int = MAX_QUEUE
    ) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Request] = asyncio.Queue(max_queue)
        self._running = False
        self.batches = 0  # batches written or tried, for tests and stats
        self.retried = 0  # batches written again one savepoint per booking
        self.looked_up = 0  # batches whose commit went unanswered, resolved by a lookup
        # Test seam: awaited with "commit" just before what commits the batch is sent (the batch
        # statement, or the COMMIT of its retry) and "committed" right after it succeeded, on the
        # batch's connection; fault tests break the connection here.
        self.commit_hook: Callable[[str, Conn], Awaitable[None]] | None = None
        self._beat: Beat = no_beat
        # Kept from one batch to the next while bookings keep coming, as the history writer's;
        # nothing that goes wrong returning it may keep a batch from its answers.
        self._conn = KeptConnection(db, (Exception,))
        self._ids = BookingIds()

    @property
    def backlog(self) -> int:
        """Bookings queued for the next batch."""
        return self._queue.qsize()

    async def book(
        self, user_id: int, screening_id: int, seat_ids: list[int], payment_id: str | None
    ) -> list[Any]:
        if not self._running:
            raise Unavailable("Booking could not be saved right now; please try again")
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(user_id, screening_id, sorted(seat_ids), payment_id, done))
        if not self._running:  # the flusher ended while we waited for room: nobody would answer
            raise Unavailable("Booking could not be saved right now; please try again")
        return await done

    async def run(self, stop: asyncio.Event, beat: Beat = no_beat) -> None:
        """Flush batches until ``stop`` is set; what is queued by then is still written."""
        self._running = True
        self._beat = beat
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set() or not self._queue.empty():
                beat()
                first = await self._next(stopped)
                if first is None:
                    continue
                batch = [first]
                while len(batch) < self._max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._flush(batch)
                if self._queue.empty():
                    await self._conn.let_go()
        finally:
            self._running = False
            stopped.cancel()
            self._fail_queued()
            await self._conn.let_go()

    async def _next(self, stopped: asyncio.Task[Any]) -> _Request | None:
        if not self._queue.empty():
            return self._queue.get_nowait()
        getter = asyncio.ensure_future(self._queue.get())
        # A timeout, so that an idle writer still beats (seatlock/heartbeats.py).
        await asyncio.wait({getter, stopped}, timeout=BEAT_S, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await getter
        return None

    def _fail_queued(self) -> None:
        while not self._queue.empty():
            _answer(self._queue.get_nowait().done, Unavailable("Server is shutting down"))

    async def _flush(self, batch: list[_Request]) -> None:
        """Write the batch and answer each booking in it; answered as soon as it is committed,
        not after the connection's return to the pool."""
        attempt = _Attempt()
        self.batches += 1
        try:
            conn = await self._conn.get()
            if not await self._write_at_once(conn, batch, attempt):
                self.retried += 1
                await self._write(conn, batch, attempt)
        except Exception as exc:
            await self._conn.let_go()  # the pool replaces a connection that broke
            if not attempt.commit_sent or not LOOK_UP_OUTCOME:
                # Nothing that commits was sent: rolled back, every booking of the batch failed.
                logger.warning("booking batch of %d not committed: %r", len(batch), exc)
                for request in batch:
                    _answer(request.done, exc)
                return
            await self._resolve(batch, attempt, exc)
            return
        for request, outcome in zip(batch, attempt.outcomes, strict=True):
            _answer(request.done, outcome)

    async def _write_at_once(self, conn: Conn, batch: list[_Request], attempt: _Attempt) -> bool:
        """The batch in one statement that commits on its own (``BATCH_SQL``); False, with
        nothing written, when any booking of it fails."""
        ids = await self._ids.take(conn, len(batch))
        seat_index = [i for i, req in enumerate(batch) for _ in req.seat_ids]
        seats = [seat for req in batch for seat in req.seat_ids]
        screenings = _screenings_of(batch)
        # Let go below once the statement is done; if anything fails before, the connection is
        # let go, and the pool's reset (pg_advisory_unlock_all) or its end releases the lock.
        await conn.execute(SHARE_SCREENINGS_SQL, screenings)
        await self._hook("commit", conn)
        # From here a failure leaves the outcome unknown: PostgreSQL may have committed.
        attempt.commit_sent, attempt.booking_ids = True, ids
        try:
            rows = await conn.fetch(
                BATCH_SQL,
                list(range(len(batch))),
                [req.user_id for req in batch],
                [req.screening_id for req in batch],
                [req.payment_id for req in batch],
                ["confirmed" if req.payment_id else "pending" for req in batch],
                seat_index,
                seats,
                ids,
            )
        except asyncpg.PostgresError as exc:
            if isinstance(exc, ANSWER_LOST):
                raise  # committed or not: looked up
            rows = []  # PostgreSQL refused it: the statement was rolled back
        await conn.execute(UNSHARE_SCREENINGS_SQL, screenings)
        if not rows:
            attempt.commit_sent, attempt.booking_ids = False, []
            return False
        outcomes: list[list[Any]] = [[] for _ in batch]
        for row in rows:
            outcomes[row["i"]].append(row)
        attempt.outcomes = [sorted(rows_of_one, key=_seat_of) for rows_of_one in outcomes]
        await self._hook("committed", conn)
        return True

    async def _write(self, conn: Conn, batch: list[_Request], attempt: _Attempt) -> None:
        """The batch in one transaction, one savepoint per booking; ``attempt`` records the
        outcomes and the COMMIT."""
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(SHARE_SCREENINGS_IN_TRANSACTION_SQL, _screenings_of(batch))
            outcomes = [
                await _book_in_savepoint(conn, request, first=index == 0)
                for index, request in enumerate(batch)
            ]
            await self._hook("commit", conn)
        except BaseException:
            with contextlib.suppress(Exception):  # a dead connection rolls back on its own
                await transaction.rollback()
            raise
        attempt.outcomes = list(outcomes)
        # From here a failure leaves the outcome unknown: PostgreSQL may have committed.
        attempt.commit_sent = True
        await transaction.commit()
        await self._hook("committed", conn)

    async def _hook(self, stage: str, conn: Conn) -> None:
        if self.commit_hook is not None:
            await self.commit_hook(stage, conn)

    async def _resolve(self, batch: list[_Request], attempt: _Attempt, exc: Exception) -> None:
        """Answer a batch whose commit went unanswered from what PostgreSQL has (invariant 5).

        A booking is answered with its tickets only if they are there (read back when the batch
        statement's own answer was lost); a booking that failed inside the batch keeps its own
        error; the rest are not committed, or unknown.
        """
        self.looked_up += 1
        outcomes: list[list[Any] | Exception | None] = [*attempt.outcomes] or [None] * len(batch)
        # The batch statement's drawn ids, else the ids the savepoint path's rows carry.
        ids: list[int | None] = [*attempt.booking_ids] or [
            rows[0]["booking_id"] if isinstance(rows, list) and rows else None for rows in outcomes
        ]
        rows = await self._tickets_of({i for i in ids if i is not None})
        tickets: dict[int, list[Any]] = {}
        for row in rows or []:
            tickets.setdefault(int(row["booking_id"]), []).append(row)
        logger.warning(
            "booking batch of %d: commit unanswered (%r); looked up: %s",
            len(batch),
            exc,
            "unknown" if rows is None else f"{len(tickets)} bookings committed",
        )
        for request, outcome, booking_id in zip(batch, outcomes, ids, strict=True):
            if isinstance(outcome, Exception):
                _answer(request.done, outcome)
            elif rows is None:
                _answer(request.done, _chained(BookingOutcomeUnknown(), exc))
            elif booking_id in tickets:
                _answer(request.done, outcome or tickets[booking_id])
            else:
                _answer(request.done, _chained(BookingNotSaved(), exc))

    async def _tickets_of(self, ids: Collection[int]) -> list[Any] | None:
        """The tickets of these bookings; None when PostgreSQL cannot be asked (a few tries,
        waiting a little longer each time: it may be restarting)."""
        if not ids:
            return []
        for delay in OUTCOME_LOOKUP_DELAYS:
            await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(OUTCOME_LOOKUP_TIMEOUT):
                    return list(await self._db.fetch(TICKETS_OF_BOOKINGS_SQL, sorted(ids)))
            except DATABASE_FAILED as exc:  # TimeoutError too: an OSError
                logger.warning("booking outcome lookup failed: %r", exc)
        return None


@dataclass(slots=True)
class _Attempt:
    """How far a batch's write got: its outcomes, and whether what commits it was sent."""

    outcomes: list[list[Any] | Exception] = field(default_factory=list)
    commit_sent: bool = False
    booking_ids: list[int] = field(default_factory=list)  # the batch statement's, once sent


def _screenings_of(batch: list[_Request]) -> list[int]:
    """The batch's screenings in the order their locks are taken (SHARE_SCREENINGS_SQL)."""
    return sorted({req.screening_id for req in batch})


def _chained(error: Exception, cause: Exception) -> Exception:
    error.__cause__ = cause
    return error


async def _book_in_savepoint(conn: Conn, req: _Request, *, first: bool) -> list[Any] | Exception:
    """One booking inside the batch; its error is returned, its rows rolled back alone."""
    await conn.execute("SAVEPOINT booking" if first else "RELEASE booking; SAVEPOINT booking")
    status = "confirmed" if req.payment_id else "pending"
    try:
        rows = await conn.fetch(
            BOOK_SQL, req.user_id, req.screening_id, req.seat_ids, req.payment_id, status
        )
    except asyncpg.PostgresError as exc:
        await conn.execute("ROLLBACK TO SAVEPOINT booking")
        if isinstance(exc, asyncpg.UniqueViolationError) and exc.constraint_name == SEAT_CONSTRAINT:
            return SeatAlreadySold()
        return exc
    if not rows:
        return SeatsNotInScreening()
    return sorted(rows, key=_seat_of)


def _seat_of(row: Any) -> int:
    return int(row["seat_id"])


def _answer(done: asyncio.Future[list[Any]], outcome: list[Any] | BaseException) -> None:
    if done.done():  # the caller went away; its booking stands or falls with the batch anyway
        return
    if isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


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


async def active_sales(db: Executor, screening_ids: list[int]) -> dict[int, dict[int, int]]:
    """Per screening, seat id -> user id of every active ticket: what Redis must show as sold.

    One query for the whole batch of screenings (the partial unique index on active tickets
    serves it); a screening without active tickets is absent.
    """
    rows = await db.fetch(
        "SELECT screening_id, seat_id, user_id FROM tickets"
        " WHERE screening_id = ANY($1::bigint[]) AND status IN ('pending', 'confirmed')",
        screening_ids,
    )
    sales: dict[int, dict[int, int]] = {}
    for row in rows:
        sales.setdefault(int(row["screening_id"]), {})[int(row["seat_id"])] = int(row["user_id"])
    return sales


# One statement, so both parts describe one moment: a ticket cancelled between two queries once
# read as an active sale of the first and no young sale of the second, and the reconciler sold
# the seat of a cancelled ticket. The second part uses tickets_cancelled_at_idx (0012).
SALES_TO_RECONCILE = """
SELECT screening_id, seat_id, user_id, booked_at > now() - make_interval(secs => $2) AS young
FROM tickets WHERE screening_id = ANY($1::bigint[]) AND status IN ('pending', 'confirmed')
UNION ALL
SELECT screening_id, seat_id, NULL, true
FROM tickets WHERE cancelled_at > now() - make_interval(secs => $2)
    AND screening_id = ANY($1::bigint[])
"""


async def sales_to_reconcile(
    db: Executor, screening_ids: list[int], settle_s: float
) -> tuple[dict[int, dict[int, int]], dict[int, set[int]]]:
    """What the reconciler compares Redis with, per screening: seat id -> user id of every
    active ticket (as ``active_sales``), and the seats whose ticket was booked, cancelled or
    refunded in the last ``settle_s`` seconds. Their booking or cancellation is marking Redis
    itself (seatlock/services/bookings.py), at once or retried until Redis takes it; a pass
    that acted on them could undo a newer change of the same seat."""
    active: dict[int, dict[int, int]] = {}
    settling: dict[int, set[int]] = {}
    for row in await db.fetch(SALES_TO_RECONCILE, screening_ids, settle_s):
        screening_id, seat_id = int(row["screening_id"]), int(row["seat_id"])
        if row["user_id"] is not None:
            active.setdefault(screening_id, {})[seat_id] = int(row["user_id"])
        if row["young"]:
            settling.setdefault(screening_id, set()).add(seat_id)
    return active, settling


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
        await conn.execute(SHARE_SCREENINGS_IN_TRANSACTION_SQL, [screening_id])
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


# A pending ticket's deadline: the one recorded, else booked_at plus the setting ($1 seconds).
_DUE_SQL = "coalesce(payment_due, booked_at + make_interval(secs => $1::float8))"


async def record_payment_due(db: Executor, ticket_ids: list[int], seconds: float) -> Any:
    """Record the payment deadline of fresh pending tickets; the deadline (None: none pending)."""
    return await db.fetchval(
        "UPDATE tickets SET payment_due = booked_at + make_interval(secs => $1::float8)"
        " WHERE id = ANY($2::bigint[]) AND status = 'pending' AND payment_due IS NULL"
        " RETURNING payment_due",
        seconds,
        ticket_ids,
    )


async def confirm_pending(
    db: Executor,
    ticket_id: int,
    payment_id: str | None,
    seconds: float,
    at: datetime | None = None,
) -> Any:
    """Confirm a pending ticket whose deadline has not passed (at ``at``, default PostgreSQL's
    now); None if it is not one."""
    return await db.fetchrow(
        "UPDATE tickets SET status = 'confirmed', confirmed_at = now(),"
        " payment_id = coalesce($3, payment_id)"
        f" WHERE id = $2 AND status = 'pending' AND {_DUE_SQL} > coalesce($4, now())"
        f" RETURNING {TICKET_COLUMNS}",
        seconds,
        ticket_id,
        payment_id,
        at,
    )


async def expire_unpaid(
    db: Executor, seconds: float, limit: int, at: datetime | None = None
) -> list[Any]:
    """Cancel up to ``limit`` pending tickets past their deadline at ``at`` (default
    PostgreSQL's now: no outcome depends on one host's clock); the tickets cancelled.

    Safe with any number of processes: SKIP LOCKED hands each row to one of them, and the
    outer ``status = 'pending'`` re-checked on the locked row leaves a ticket confirmed or
    cancelled meanwhile alone, so each ticket is expired once, and never after it was paid.
    """
    return list(
        await db.fetch(
            "UPDATE tickets SET status = 'cancelled', cancelled_at = now()"
            " WHERE id IN (SELECT id FROM tickets"
            f" WHERE status = 'pending' AND {_DUE_SQL} <= coalesce($3, now())"
            " ORDER BY booked_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            " AND status = 'pending'"
            " RETURNING id, user_id, screening_id, seat_id",
            seconds,
            limit,
            at,
        )
    )
