"""The one place that maps errors to HTTP statuses and WebSocket close codes."""

from __future__ import annotations

import logging
import time

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.rendering import JSON, dumps
from db.pool import DATABASE_DOWN
from seatlock import errors
from seatlock.engine.transport import REDIS_DOWN

logger = logging.getLogger(__name__)

# A backing service cannot answer (PostgreSQL or Redis down, restarting, failing over): 503 with
# Retry-After, as for Unavailable; WebSockets close with 1013 (try again later).
BACKEND_DOWN: tuple[type[Exception], ...] = (*REDIS_DOWN, *DATABASE_DOWN)
RETRY_AFTER_S = 1
RETRY_AFTER = (b"retry-after", str(RETRY_AFTER_S).encode())
UNAVAILABLE = "Service temporarily unavailable"

STATUS: dict[type[errors.SeatLockError], int] = {
    errors.InvalidInput: 400,
    errors.NotAuthenticated: 401,
    errors.PaymentRefused: 402,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMedia: 415,
    errors.ValidationFailed: 422,
    errors.TooManyRequests: 429,
    errors.Unavailable: 503,
}

# WebSocket close codes (RFC 6455 and the 4xxx private range).
WS_POLICY_VIOLATION = 1008
WS_TRY_AGAIN_LATER = 1013
WS_CLOSE: dict[type[errors.SeatLockError], int] = {
    errors.NotAuthenticated: WS_POLICY_VIOLATION,
    errors.Forbidden: WS_POLICY_VIOLATION,
    errors.NotFound: 4404,
    errors.Unavailable: WS_TRY_AGAIN_LATER,
}


def status_of(exc: errors.SeatLockError) -> int:
    status = _STATUS_BY_CLASS.get(type(exc))
    if status is None:
        status = _STATUS_BY_CLASS[type(exc)] = _first_status(type(exc))
    return status


def _first_status(kind: type[errors.SeatLockError]) -> int:
    for base in kind.__mro__:
        if base in STATUS:
            return STATUS[base]
    return 400


# Every SeatLockError class seen, with its status: one lookup instead of a walk of its MRO.
_STATUS_BY_CLASS: dict[type[errors.SeatLockError], int] = {}


def ws_close_code(exc: errors.SeatLockError) -> int:
    for kind in type(exc).__mro__:
        if kind in WS_CLOSE:
            return WS_CLOSE[kind]
    return WS_POLICY_VIOLATION


def error_reply(exc: errors.SeatLockError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, extra headers and JSON body of a refusal."""
    status = status_of(exc)
    if status >= 500:
        warn_unavailable(exc)
    headers = [(b"www-authenticate", b"Bearer")] if status == 401 else []
    if isinstance(exc, errors.TooManyRequests):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    elif isinstance(exc, errors.Unavailable):
        later = exc.retry_after
        headers.append(RETRY_AFTER if later is None else (b"retry-after", b"%d" % later))
    if isinstance(exc, errors.RequestInvalid):  # FastAPI's list of every problem
        return status, headers, dumps({"detail": exc.errors})
    return status, headers, detail_body(exc.detail)


def detail_body(detail: str) -> bytes:
    """``{"detail": ...}`` as JSON, rendered once per distinct short detail.

    The same few refusals ("Seats [7] are currently reserved ...", "Not authenticated") answer
    most requests on release day. Bounded: emptied when full, long details are not kept.
    """
    body = _BODIES.get(detail)
    if body is None:
        body = dumps({"detail": detail})
        if len(detail) <= MAX_KEPT_DETAIL:
            if len(_BODIES) >= MAX_KEPT_BODIES:
                _BODIES.clear()
            _BODIES[detail] = body
    return body


MAX_KEPT_BODIES = 4096
MAX_KEPT_DETAIL = 200
_BODIES: dict[str, bytes] = {}


# A dependency that is down turns every request into a 503: one line per dependency (or per
# reason, when no dependency is named) every WARN_EVERY_S, with the count of those not logged.
WARN_EVERY_S = 5.0
_WARNED: dict[str, tuple[float, int]] = {}  # key -> (when last logged, 503s since)


def warn_unavailable(exc: errors.SeatLockError) -> None:
    """Log a 503 at WARNING, rate-limited per dependency (redis, postgresql) or reason."""
    dependency = dependency_of(exc)
    key = dependency or exc.detail
    now = time.monotonic()
    last, since = _WARNED.get(key, (-WARN_EVERY_S, 0))
    if now - last < WARN_EVERY_S:
        _WARNED[key] = (last, since + 1)
        return
    _WARNED[key] = (now, 0)
    cause = exc.__cause__ or exc.__context__
    logger.warning(
        "503 %s: %s (%r); %d more in the last %.0fs",
        dependency or "unavailable",
        exc.detail,
        cause,
        since,
        WARN_EVERY_S,
        extra={"dependency": dependency},
    )


def dependency_of(exc: BaseException) -> str | None:
    """``redis`` or ``postgresql`` when a BACKEND_DOWN error of one caused ``exc``."""
    seen: BaseException | None = exc
    for _ in range(8):  # a cause chain is short; never loop on a cycle
        if seen is None:
            return None
        if isinstance(seen, REDIS_DOWN):
            return "redis"
        if isinstance(seen, DATABASE_DOWN):
            return "postgresql"
        seen = seen.__cause__ or seen.__context__
    return None


async def seatlock_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.SeatLockError)
    status, headers, body = error_reply(exc)
    response = Response(body, status_code=status, media_type="application/json")
    response.raw_headers += headers
    return response


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return JSON({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def backend_unavailable(request: Request, exc: Exception) -> Response:
    """A BACKEND_DOWN error, answered as the Unavailable refusal it means (logged, rate-limited,
    by ``error_reply``)."""
    unavailable = errors.Unavailable(UNAVAILABLE)
    unavailable.__cause__ = exc
    return await seatlock_error(request, unavailable)


async def unexpected(request: Request, exc: Exception) -> Response:
    """A 500: a bug. Every one is logged with its traceback and the request id."""
    logger.exception(
        "500 on %s %s",
        request.method,
        request.url.path,
        extra={"request_id": request.scope.get("request_id")},
    )
    return JSON({"detail": "Internal server error"}, status_code=500)


HANDLERS = {
    errors.SeatLockError: seatlock_error,
    HTTPException: http_error,
    **{kind: backend_unavailable for kind in BACKEND_DOWN},
    Exception: unexpected,
}


async def error_response(request: Request, exc: Exception) -> Response:
    """The response of the first handler in ``HANDLERS`` for the exception's class (or a base)."""
    for kind in type(exc).__mro__:
        handler = HANDLERS.get(kind)
        if handler is not None:
            return await handler(request, exc)
    raise exc  # a BaseException that is not an Exception never gets here
