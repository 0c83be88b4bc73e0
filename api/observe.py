"""The request middleware: request ids, the request metrics and the access log.

Outermost of our middleware (api/app.py ``middleware``), so it sees every answer: CORS
preflights, 404s and 405s included. For each HTTP request it

- takes the client's ``X-Request-ID`` (printable ASCII, at most 128 characters) or makes one,
  echoes it on the response, and keeps it in the scope (``request_id``) and in ``REQUEST_ID``,
  so every log line written while the request is served carries it (``RequestContext``);
- counts the request in ``seatlock_http_requests`` and times it in
  ``seatlock_http_request_duration_seconds``, labelled with the route's template (never the raw
  path: a client cannot grow the label set) or ``unmatched``: tallied in the process and added to
  the metrics every second (seatlock/metrics.py ``RequestTally``);
- writes one INFO line on the ``seatlock.access`` logger: method, route, path (secret query
  parameters redacted), status, duration, user id (the endpoint puts it in the scope), request
  id, client. Nothing is formatted when that logger is off (``SEATLOCK_ACCESS_LOG``).

A WebSocket gets a line when it is accepted and one when it ends. Its ``send`` is never wrapped:
the hub writes seat updates straight to the socket only when no middleware wraps it
(api/websockets.py ``server_protocol``), and the fan-out is the hottest path of all.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seatlock.metrics import RequestTally

ACCESS = logging.getLogger("seatlock.access")
INFO = logging.INFO
HEADER = b"x-request-id"
MAX_ID_CHARS = 128
UNMATCHED = "unmatched"  # the route label of a request no route matched (404)
# Scope key: the status the server's HTTP protocol sent in the app's stead (a 408 for a body that
# stopped coming, seatlock/server/serving.py), which the request's line and count then carry.
ANSWERED_INSTEAD = "seatlock.answered_instead"
# Other methods are counted as "other": a client cannot grow the label set with made-up ones.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SECRET_PARAMETERS = ("token", "password", "secret", "key")  # names ending so: values redacted

# The request id of the request this task serves (None outside one).
REQUEST_ID: ContextVar[str | None] = ContextVar("seatlock_request_id", default=None)

# Request ids made here: this process's random prefix, then a counter. Unique across processes
# and restarts (48 random bits per process), and a tenth of uuid4's cost.
_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_PREFIX}-{next(_COUNTER):x}"


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when it is usable, else a new one."""
    for name, value in headers:  # ASGI header names are lower-case
        if name == HEADER:
            if 0 < len(value) <= MAX_ID_CHARS and value.isascii():
                text = value.decode()
                if text.isprintable():
                    return text
            break
    return new_request_id()


class RequestContext(logging.Filter):
    """Puts the request id of the request being served into every record (``request_id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


class Observe:
    """The request middleware (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.tally = RequestTally()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        rid = scope["request_id"] = request_id(scope["headers"])
        echo = (HEADER, rid.encode())
        context = REQUEST_ID.set(rid)
        status = 0

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echo]
            await send(message)

        try:
            await self.app(scope, receive, answer)
        except Exception:
            # Starlette's ServerErrorMiddleware (around us) answers 500 and logs the error: the
            # request id stays set for that line (this task serves only this request). A
            # cancelled request (the server stopping) is neither counted nor logged.
            self._done(scope, status or 500, started)
            raise
        self._done(scope, status, started)
        REQUEST_ID.reset(context)

    def _done(self, scope: Scope, status: int, started: float) -> None:
        seconds = time.perf_counter() - started
        status = scope.get(ANSWERED_INSTEAD, status)
        template = route_template(scope)
        method = scope["method"]
        if method not in METHODS:
            method = "other"
        self.tally.record(template, method, status, seconds)
        if ACCESS.isEnabledFor(INFO):
            access_line(scope, method, template, status, seconds)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        scope["request_id"] = rid = request_id(scope["headers"])
        REQUEST_ID.set(rid)  # the connection's task serves only it: never reset
        close_code: int | None = None

        async def listen() -> Message:
            nonlocal close_code
            message = await receive()
            kind = message["type"]
            if kind == "websocket.connect" and ACCESS.isEnabledFor(INFO):
                websocket_line(scope, "accepted", 101, started)
            elif kind == "websocket.disconnect":
                close_code = message.get("code", 1005)
            return message

        try:
            await self.app(scope, listen, send)
        finally:
            if ACCESS.isEnabledFor(INFO):
                websocket_line(scope, "closed", close_code, started)


def access_line(scope: Scope, method: str, template: str, status: int, seconds: float) -> None:
    """The access log line of an HTTP request."""
    write_access(scope, method, template, status, seconds)


def write_access(
    scope: Scope,
    method: str,
    template: str,
    status: int | None,
    seconds: float,
    event: str | None = None,
) -> None:
    """An access line: the record's fields (``event`` on a WebSocket's lines only). Made on the
    event loop from what is at hand; the path, client and duration are rendered from the raw
    values on the log writer's thread (``AccessRecord.finish``)."""
    record = AccessRecord.blank()
    fields = record.__dict__
    fields["method"] = method
    fields["route"] = template
    fields["status"] = status
    fields["user_id"] = scope.get("user_id")
    fields["request_id"] = scope.get("request_id")
    fields["access_raw"] = (
        scope["path"],
        scope.get("query_string", b""),
        scope.get("client"),
        seconds,
    )
    if event is not None:
        fields["event"] = event
    ACCESS.handle(record)


class AccessRecord(logging.LogRecord):
    """An access line's record: its fields (method, route, path, status, duration_ms, user_id,
    request_id, client; ``event`` on a WebSocket's) are the record's extra attributes, and its
    message is made from them (``getMessage``).

    Made without LogRecord's constructor, which at a line per request cost more than the rest
    of the request's logging: it looks up the caller's file, module, thread and process name and
    checks ``extra``'s names (ours are fixed). What the formatters read is set (``relativeCreated``
    is 0). ``access`` marks it for the log writer (seatlock/server/logs.py), which redacts only
    its two free-text fields, path and request id, since the message is made from the fields.
    A record of a request carries ``access_raw`` values until ``finish`` renders them: whoever reads
    path, client or duration_ms calls it first (the log writer's filter and formatters do).
    """

    @classmethod
    def blank(cls) -> AccessRecord:
        """A record made now, its fields still to be set."""
        record = cls.__new__(cls)
        attributes = record.__dict__
        attributes.update(_RECORD_TEMPLATE)
        now = time.time()
        attributes["created"] = now
        attributes["msecs"] = (now - int(now)) * 1000
        attributes["process"] = _PROCESS[0]
        return record

    @classmethod
    def of(cls, fields: dict[str, Any]) -> AccessRecord:
        """A record of fields already rendered."""
        record = cls.blank()
        record.__dict__.update(fields)
        return record

    def finish(self) -> None:
        """Render path (secrets of its query redacted), client and duration_ms from the raw
        values. Idempotent, and safe when two threads' handlers race: both write the same."""
        fields = self.__dict__
        raw = fields.get("access_raw")
        if raw is None:
            return
        path, query, client, seconds = raw
        fields["path"] = target(path, query)
        fields["client"] = peer(client)
        fields["duration_ms"] = round(seconds * 1000, 3)
        fields["access_raw"] = None  # after the fields: a reader that sees None finds them set

    def getMessage(self) -> str:
        """``client "METHOD path" status 1.2ms user 7`` (a WebSocket: ``accepted 101``)."""
        self.finish()
        fields = self.__dict__
        status = "-" if fields["status"] is None else fields["status"]
        event = fields.get("event")
        shown = status if event is None else f"{event} {status}"
        user = "-" if fields["user_id"] is None else fields["user_id"]
        method, path, duration_ms = fields["method"], fields["path"], fields["duration_ms"]
        return f'{fields["client"]} "{method} {path}" {shown} {duration_ms:.1f}ms user {user}'


# This process's id, read once (os.getpid() is a system call, ~1 µs) and again in a forked child.
_PROCESS = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PROCESS.__setitem__(0, os.getpid()))

_RECORD_TEMPLATE: dict[str, Any] = {
    "name": ACCESS.name,
    "msg": "",
    "args": None,
    "levelname": "INFO",
    "levelno": INFO,
    "pathname": __file__,
    "filename": os.path.basename(__file__),
    "module": __name__.rpartition(".")[2],
    "lineno": 0,
    "funcName": None,
    "exc_info": None,
    "exc_text": None,
    "stack_info": None,
    "relativeCreated": 0.0,
    "thread": None,
    "threadName": None,
    "processName": None,
    "taskName": None,
    "access": True,
}


def websocket_line(scope: Scope, event: str, status: int | None, started: float) -> None:
    """A WebSocket's access line: when it is accepted (status 101) and when it ends (the close
    code the client sent, None when the server closed first)."""
    seconds = time.perf_counter() - started
    write_access(scope, "WEBSOCKET", route_template(scope), status, seconds, event)


def route_template(scope: Scope) -> str:
    """The matched route's path template (what Starlette and FastRouter put in the scope), or
    ``unmatched``: never the raw path, so a client cannot grow a label set or a log field."""
    route = scope.get("route")
    return UNMATCHED if route is None else getattr(route, "path", UNMATCHED)


def target(path: str, query: bytes) -> str:
    """The path and query of a request, values of secret parameters (``token=``) redacted."""
    if not query:
        return path
    return f"{path}?{redact_query(query.decode('latin-1'))}"


def redact_query(query: str) -> str:
    parts = query.split("&")
    for index, part in enumerate(parts):
        name, equals, _ = part.partition("=")
        if equals and name.lower().endswith(SECRET_PARAMETERS):
            parts[index] = f"{name}=[redacted]"
    return "&".join(parts)


def peer(client: tuple[str, int] | None) -> str | None:
    return None if not client else f"{client[0]}:{client[1]}"
