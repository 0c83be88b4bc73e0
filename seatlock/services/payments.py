"""Payments: which ``payment_id`` may pay for a booking or a pending ticket, and the payment
deadline of unpaid (pending) tickets.

``SEATLOCK_PAYMENT_VERIFIER`` picks the verifier. ``accept`` (development) takes any id.
``hmac`` takes only ids the payment provider signed with the shared secret
``SEATLOCK_PAYMENT_SECRET``::

    payment_id = reference + "." + hex(HMAC-SHA256(secret, scope + "|" + reference))

where ``scope`` names what the payment pays for, so one signature never pays for anything else:
``booking:<user_id>:<screening_id>:<seat ids, sorted, comma-separated>`` for quick book and
book-from-reservation, ``ticket:<ticket_id>`` for confirm-payment. ``reference`` is the
provider's own id of the payment (any text without NUL; it may contain dots: the signature is
after the last one). A booking's payment id is unique in PostgreSQL (invariant 6), a ticket is
confirmed once, so a signed id pays exactly once.

Unpaid tickets behave like holds: a pending ticket must be paid by its deadline
(``SEATLOCK_PAYMENT_SECONDS`` after booking, default the hold time); ``UnpaidExpiry`` cancels it
in PostgreSQL after that and frees its seat in Redis, which announces it to watchers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from redis.exceptions import RedisError

from db import tickets as repo
from db.pool import DATABASE_FAILED
from seatlock.engine.seats import SeatEngine
from seatlock.errors import PaymentRefused, SeatLockError
from seatlock.heartbeats import Beat, no_beat, pause
from seatlock.metrics import UNPAID_EXPIRED
from seatlock.settings import MIN_PAYMENT_SECRET_CHARS, PAYMENT_VERIFIERS

_HEX_DIGEST_CHARS = 64
EXPIRE_BATCH = 500  # tickets cancelled per statement
_DB_DOWN = DATABASE_FAILED

logger = logging.getLogger(__name__)


class PaymentVerifier(Protocol):
    def verify(self, payment_id: str | None, scope: str) -> None:
        """Return when ``payment_id`` pays for ``scope``; raise ``PaymentRefused`` if not."""


def booking_scope(user_id: int, screening_id: int, seat_ids: Iterable[int]) -> str:
    """What a booking's payment pays for: the user, the screening and the seats."""
    seats = ",".join(str(seat) for seat in sorted(seat_ids))
    return f"booking:{user_id}:{screening_id}:{seats}"


def ticket_scope(ticket_id: int) -> str:
    """What a pending ticket's payment pays for: that ticket alone."""
    return f"ticket:{ticket_id}"


def sign(secret: str, reference: str, scope: str) -> str:
    """The payment id the provider sends for ``reference`` paying ``scope`` (tests, docs)."""
    return f"{reference}.{_digest(secret, reference, scope)}"


def _digest(secret: str, reference: str, scope: str) -> str:
    message = f"{scope}|{reference}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class AcceptAny:
    """Development: any payment id (or none, for confirm-payment) is taken as paid."""

    def verify(self, payment_id: str | None, scope: str) -> None:
        return None


class HmacVerifier:
    """Production: only payment ids signed by the payment provider's shared secret."""

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_PAYMENT_SECRET_CHARS:
            raise ValueError(
                f"the payment secret needs at least {MIN_PAYMENT_SECRET_CHARS} characters"
            )
        self._secret = secret

    def __repr__(self) -> str:  # the secret never reaches a log line
        return "HmacVerifier(secret=***)"

    def verify(self, payment_id: str | None, scope: str) -> None:
        if payment_id is None:
            raise PaymentRefused("A payment_id signed by the payment provider is required")
        reference, dot, signature = payment_id.rpartition(".")
        if not dot or not reference or len(signature) != _HEX_DIGEST_CHARS:
            raise PaymentRefused("payment_id is not a signed payment")
        # Constant time: a timing difference must not reveal how much of a guess was right.
        expected = _digest(self._secret, reference, scope).encode()
        if not hmac.compare_digest(signature.encode(), expected):
            raise PaymentRefused("payment_id is not a valid payment for this booking")


def verifier(kind: str, secret: str) -> PaymentVerifier:
    """The verifier ``SEATLOCK_PAYMENT_VERIFIER`` names."""
    if kind == "hmac":
        return HmacVerifier(secret)
    if kind == "accept":
        return AcceptAny()
    raise ValueError(f"unknown payment verifier {kind!r}: one of {', '.join(PAYMENT_VERIFIERS)}")


class UnpaidExpiry:
    """Cancel pending tickets past their payment deadline and free their seats."""

    def __init__(self, engine: SeatEngine, db: asyncpg.Pool, payment_seconds: float) -> None:
        self.engine = engine
        self.db = db
        self.seconds = payment_seconds

    async def expire_once(self, at: datetime | None = None) -> int:
        """Cancel every pending ticket past its deadline (at ``at``, default now); how many."""
        total = 0
        while True:
            rows = await repo.expire_unpaid(self.db, self.seconds, EXPIRE_BATCH, at)
            await self._free(rows)
            total += len(rows)
            if len(rows) < EXPIRE_BATCH:
                return total

    async def _free(self, rows: list[Any]) -> None:
        by_screening: dict[int, list[int]] = {}
        for row in rows:
            by_screening.setdefault(row["screening_id"], []).append(row["seat_id"])
        for screening_id, seats in by_screening.items():
            try:
                await self.engine.unsell(screening_id, seats)
            except (SeatLockError, RedisError, OSError) as exc:
                # Cancelled in PostgreSQL: the seats stay "booked" in Redis (never sold twice)
                # until the screening is reloaded or reconciled from PostgreSQL (invariant 7).
                logger.warning(
                    "unpaid seats %s of screening %s not freed in Redis: %r",
                    seats,
                    screening_id,
                    exc,
                )

    async def run(self, interval_s: float, stop: asyncio.Event, beat: Beat = no_beat) -> None:
        """Expire unpaid tickets every ``interval_s`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                if cancelled := await self.expire_once():
                    UNPAID_EXPIRED.inc(cancelled)
                    logger.info("cancelled %d unpaid tickets past their deadline", cancelled)
            except _DB_DOWN as exc:
                logger.warning("unpaid tickets not expired: %r", exc)
            beat()
            await pause(stop, interval_s, beat)
