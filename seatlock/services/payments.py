"""Payment verification: which ``payment_id`` may pay for a booking or a pending ticket.

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
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Protocol

from seatlock.errors import PaymentRefused
from seatlock.settings import MIN_PAYMENT_SECRET_CHARS, PAYMENT_VERIFIERS

_HEX_DIGEST_CHARS = 64


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
