"""The one error root. ``api/errors.py`` maps each class to an HTTP status in one place."""

from __future__ import annotations

from typing import Any


class SeatLockError(Exception):
    """Base of every error seatlock raises on purpose; ``detail`` is shown to the client."""

    def __init__(self, detail: str) -> None:
        # What Exception.__init__ would do, without its call: refusals are raised by the
        # thousand per second on release day (a taken seat is a 409).
        self.args = (detail,)
        self.detail = detail


class InvalidInput(SeatLockError):
    """The request is well-formed but asks for something that cannot be (400)."""


class ValidationFailed(SeatLockError):
    """The request body or parameters do not have the right shape (422)."""


class RequestInvalid(ValidationFailed):
    """The request does not have its declared shape (422); ``errors`` lists every problem.

    Each problem is a dict in FastAPI's form (``type``, ``loc``, ``msg``, ``input``, maybe
    ``ctx``), sent as the ``detail`` list. Refusals of a rule beyond the shape stay a
    ValidationFailed with a text detail, as a FastAPI route's ``HTTPException(422, text)``.
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(str(errors[0]["msg"]) if errors else "Invalid request")
        self.errors = errors


class NotAuthenticated(SeatLockError):
    """No valid credentials (401)."""


class Forbidden(SeatLockError):
    """Signed in, but not allowed (403)."""


class NotFound(SeatLockError):
    """Does not exist, or belongs to someone else (404: ids do not leak)."""


class Conflict(SeatLockError):
    """The state does not allow it: seat taken, duplicate, payment id reused (409)."""


class PaymentRefused(SeatLockError):
    """The payment_id does not prove a payment for what it is asked to pay (402)."""


class PayloadTooLarge(SeatLockError):
    """An upload over the size limit (413)."""


class UnsupportedMedia(SeatLockError):
    """An upload of a type we do not accept (415)."""


class TooManyRequests(SeatLockError):
    """Throttled (429)."""

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(SeatLockError):
    """A backing service cannot answer right now (503); retrying later may work: after
    ``retry_after`` seconds when given (the Retry-After header; else api/errors.py's default)."""

    def __init__(self, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
