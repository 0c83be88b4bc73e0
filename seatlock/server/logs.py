"""One logging configuration for the supervisor and every worker, uvicorn's loggers included.

``log_config`` builds the ``logging.config.dictConfig`` dict: the supervisor applies it in
``cli.main`` and uvicorn applies it in every worker (its ``log_config`` option), so uvicorn's
loggers (``uvicorn``, ``uvicorn.error``, ``uvicorn.access``) and ours write the same lines to
stderr. ``SEATLOCK_LOG_FORMAT`` picks the lines: ``text``, or ``json`` (one object per line: time,
level, logger, message, pid and the record's extra fields: request_id, route, status ...).

A text line is one line whatever a client sent: control characters in its message and request id
(a path may carry ``%0A``) are written escaped (``\\n``), so nobody can start a forged line of their
own. A traceback keeps its lines. JSON lines are escaped by JSON itself.

Secrets never reach the output: the ``Redact`` filter of the handler that writes rewrites every
record (message, extra fields, traceback) before it is formatted: ``token=`` and other secret
parameters of query strings and forms, secret fields of JSON and reprs, Bearer values, JWTs.

A worker must not wait for stderr (a slow pipe, a paused terminal) on its event loop: its
handler (``background_handler``) only puts each record on a queue, and a thread renders and
writes it (QueueHandler + QueueListener); the request id of the request being served is read
into the record before it is queued (``request_context``).
"""

from __future__ import annotations

import functools
import logging
import logging.config
import re
import sys
import time
from collections import deque
from logging.handlers import QueueHandler, QueueListener
from select import PIPE_BUF
from typing import Any, TextIO

import orjson

from seatlock.settings import Settings

ACCESS_LOGGER = "seatlock.access"  # api/observe.py: one line per request and WebSocket
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
REDACTED = "[redacted]"
# Records waiting for the writer thread past which new ones are dropped (and counted): memory
# stays bounded when stderr blocks for good.
MAX_BACKLOG = 100_000
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
POLL_S = 0.05  # how often the writer thread of a worker looks for records

# What counts as a secret: a parameter or field named like one (access_token, refresh_token,
# token, password, new_password, payment_secret, api_key ...), a Bearer credential, a JWT.
_SECRET_NAME = r"[\w-]*(?:token|password|passwd|secret|api_key|apikey)"
_PATTERNS = (
    # token=eyJ... in a query string or form (a WebSocket URL, a reset link)
    (re.compile(rf"(?i)\b({_SECRET_NAME}=)[^&\s\"'#;,)]+"), rf"\1{REDACTED}"),
    # "password": "...", 'refresh_token': '...', password='...' (JSON, dict and dataclass reprs)
    (
        re.compile(rf"""(?i)(\b{_SECRET_NAME}["']?\s*[:=]\s*b?)(["'])(?:\\.|(?!\2).)*\2"""),
        rf"\1\2{REDACTED}\2",
    ),
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',)]+"), rf"\1{REDACTED}"),
    (re.compile(r"\beyJ[\w-]*\.[\w-]+\.[\w-]*"), REDACTED),  # a JWT wherever it appears
    (re.compile(r"(\b[a-z][\w+.-]*://[^:/@\s]+:)[^@\s]+@"), rf"\1{REDACTED}@"),  # URL password
)


# Something a secret would come with (lower case): most lines have none and cost a few scans.
_HINTS = ("token", "passw", "secret", "key", "bearer", "eyj", "@")


def redact(text: str) -> str:
    """``text`` with every secret value replaced by ``[redacted]``."""
    lower = text.lower()
    for hint in _HINTS:
        if hint in lower:
            break
    else:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# A LogRecord's own attributes; any other attribute is an extra field (``extra=``).
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# uvicorn's coloured copy of the message; the mark and the raw values of an access line's record
# (api/observe.py)
_NOT_EXTRA = _STANDARD | {"color_message", "access", "access_raw"}
# The free-text fields of an access line (its message is made from its fields); the others are
# the route's template, a method, numbers and the client's address.
_ACCESS_TEXT = ("path", "request_id")
ACCESS_FIELDS = (
    *("method", "route", "path", "event", "status"),
    *("duration_ms", "user_id", "request_id", "client"),
)


def finish(record: logging.LogRecord) -> None:
    """Render an access record's fields from its raw values (api/observe.py ``AccessRecord``):
    done here, on the writer's thread, not on the event loop."""
    finishing = getattr(record, "finish", None)
    if finishing is not None:
        finishing()


def extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _NOT_EXTRA}


class Redact(logging.Filter):
    """Rewrites a record so that no secret is in its message, extra fields or traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        if fields.get("access"):  # its message is made from its fields
            finish(record)
            for name in _ACCESS_TEXT:
                value = fields[name]
                if isinstance(value, str):
                    fields[name] = redact(value)
            return True
        record.msg = redact(record.getMessage())
        record.args = None
        for name in fields.keys() - _NOT_EXTRA:
            value = fields[name]
            if isinstance(value, str):
                fields[name] = redact(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


# C0 controls but tab, DEL, C1 controls and Unicode's line and paragraph separators: what a
# reader or a log shipper could take for the end of a line, or that makes grep call a file binary.
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with its control characters escaped as Python writes them (``\\n``, ``\\x00``)."""
    if _CONTROLS.search(text) is None:  # nearly every line: one scan
        return text
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


# What uvicorn logs at ERROR, with a traceback, for something a client did wrong and that it
# answered as the protocol says (a text frame that is not UTF-8: closed with 1007). ERROR is kept
# for this server's own failures (every 500): a client must not be able to fill the log with them.
CLIENT_FAULTS = frozenset({"Invalid UTF-8 sequence received from client."})


class ClientFaults(logging.Filter):
    """Logs uvicorn's ERRORs of ``CLIENT_FAULTS`` as a WARNING line, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.msg in CLIENT_FAULTS:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


# uvicorn's INFO lines for each WebSocket that our access log (api/observe.py) already has:
# one line per WebSocket at accept and one at close, as for a request, not three more.
WEBSOCKET_CHATTER = frozenset(
    {'%s - "WebSocket %s" [accepted]', "connection open", "connection closed"}
)


class WebSocketChatter(logging.Filter):
    """Drops uvicorn's per-WebSocket INFO lines (``WEBSOCKET_CHATTER``) at their logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.msg in WEBSOCKET_CHATTER)


class TextFormatter(logging.Formatter):
    """``time LEVEL [pid] logger: message``, then ``request_id=...`` on lines of a request; the
    message and request id on one line (``one_line``), a traceback below them."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``2026-12-05 10:09:28,859`` (local time), as logging writes it, with the part before
        the milliseconds made once per second rather than once per line."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return f"{_local_second(int(record.created))},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        if record.__dict__.get("access"):  # a line per request: the same text, made directly
            line = f"{self.formatTime(record)} INFO [{record.process}] {record.name}: "
            line += one_line(record.getMessage())
        else:
            line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return line if request_id is None else f"{line} request_id={one_line(str(request_id))}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The first line (``format`` adds a traceback below it)."""
        return one_line(super().formatMessage(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, pid, extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.__dict__.get("access"):  # no traceback nor stack: its fields, as they are
            finish(record)
            fields = record.__dict__
            line.update((name, fields[name]) for name in ACCESS_FIELDS if name in fields)
            return orjson.dumps(line, default=str).decode()
        line.update(extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def iso_utc(created: float) -> str:
    """``2026-12-05T10:09:28.859Z``"""
    whole = int(created)
    return f"{_utc_second(whole)}.{int((created - whole) * 1000):03d}Z"


@functools.lru_cache(maxsize=4)
def _utc_second(whole: int) -> str:  # the lines of one second share it
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


@functools.lru_cache(maxsize=4)
def _local_second(whole: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(whole))


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else TextFormatter()


def stderr_handler(kind: str) -> logging.Handler:
    """The handler that writes: redacted lines of ``kind`` on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(kind))
    handler.addFilter(ClientFaults())
    handler.addFilter(Redact())
    return handler


class Backlog(deque[Any]):
    """The records between the event loop and the writer thread (deque: thread-safe appends)."""

    def put_nowait(self, item: Any) -> None:  # what QueueHandler and QueueListener call
        self.append(item)


class LineWriter(logging.Handler):
    """Writes formatted lines in batches: one write per batch, of whole lines, at most PIPE_BUF
    bytes (a write to a pipe that size is atomic, so the lines of several worker processes
    sharing stderr never cut into each other)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.lines: list[str] = []
        self.size = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            if self.lines and self.size + len(line) > PIPE_BUF:
                self.flush()
            self.lines.append(line)
            self.size += len(line)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        if self.lines:
            text = "".join(self.lines)
            self.lines.clear()
            self.size = 0
            self.stream.write(text)
            self.stream.flush()


class Writer(QueueListener):
    """The writer thread. It looks at the backlog every POLL_S instead of being woken for each
    record: at thousands of lines a second, a wake-up per line cost more CPU than the line (a
    thread switch, the GIL handed over and back). Lines are written at most POLL_S late."""

    def dequeue(self, block: bool) -> Any:
        backlog: Backlog = self.queue  # type: ignore[assignment]
        while True:
            try:
                return backlog.popleft()
            except IndexError:
                for handler in self.handlers:
                    handler.flush()
                time.sleep(POLL_S)

    def stop(self) -> None:
        super().stop()  # handles what is queued, up to the sentinel
        for handler in self.handlers:
            handler.flush()


class BackgroundHandler(QueueHandler):
    """Queues records for a thread that redacts, formats and writes them on stderr.

    The record is queued as it is: its message is rendered on the thread a moment later, so the
    event loop pays for an append and nothing more. (The standard QueueHandler renders it first,
    to pickle it for another process; this queue never leaves the process.)
    """

    def __init__(self, kind: str) -> None:
        backlog = Backlog()
        super().__init__(backlog)  # type: ignore[arg-type]
        self.backlog = backlog
        self.dropped = 0
        writer = LineWriter(sys.stderr)
        writer.setFormatter(formatter(kind))
        writer.addFilter(ClientFaults())
        writer.addFilter(Redact())
        self.listener = Writer(backlog, writer)  # type: ignore[arg-type]
        self.listener.start()
        self.running = True
        # Lines name the process (pid), never the thread: the event loop's records skip the
        # thread and process-name lookups of every LogRecord.
        logging.logThreads = False
        logging.logMultiprocessing = False

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter and queue the record, without the handler's lock (Handler.handle takes it
        around every emit): the queue is a deque, whose appends are thread-safe, and nothing
        else here needs the lock (a drop count racing another thread may be off by one)."""
        passed = self.filter(record)
        if isinstance(passed, logging.LogRecord):  # Python 3.12: a filter may replace it
            record = passed
        if passed:
            self.enqueue(record)
        return passed

    def enqueue(self, record: logging.LogRecord) -> None:
        if len(self.backlog) >= MAX_BACKLOG:  # stderr is stuck: lose lines, not memory
            self.dropped += 1
            return
        if self.dropped:
            lost, self.dropped = self.dropped, 0
            note = logging.makeLogRecord(
                {"name": __name__, "levelno": logging.WARNING, "levelname": "WARNING"}
            )
            note.msg = f"{lost} log lines dropped: stderr did not keep up"
            self.backlog.append(note)
        self.backlog.append(record)

    def close(self) -> None:
        """Write what is queued, then stop the thread (logging.shutdown calls it at exit)."""
        if self.running:  # stop() fails when called twice
            self.running = False
            self.listener.stop()
            for handler in self.listener.handlers:
                handler.close()
        super().close()


def background_handler(kind: str) -> logging.Handler:
    return BackgroundHandler(kind)


def request_context() -> logging.Filter:
    """The filter putting the request id of the request being served into each record.

    Imported here, when a worker's logging is configured, not when this module is: the
    supervisor never loads the api (nor prometheus-client, which reads its multi-process
    directory once, when first imported).
    """
    from api.observe import RequestContext

    return RequestContext()


def log_config(settings: Settings, *, background: bool) -> dict[str, Any]:
    """The dictConfig dict: ``background`` for a worker (queued records, the request id)."""
    level = settings.log_level.upper()
    kind = settings.log_format
    handler: dict[str, Any]
    if background:
        handler = {"()": background_handler, "kind": kind, "filters": ["request"]}
    else:
        handler = {"()": stderr_handler, "kind": kind}
    uvicorn: dict[str, Any] = {"handlers": [], "propagate": True, "level": level}
    # Off: above every level. On: the root's level decides (a level above info silences it).
    access = {"level": "NOTSET" if settings.access_log else logging.CRITICAL + 1}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "websocket": {"()": WebSocketChatter},
            **({"request": {"()": request_context}} if background else {}),
        },
        "handlers": {"stderr": handler},
        "loggers": {
            **{name: dict(uvicorn) for name in UVICORN_LOGGERS},
            "uvicorn.error": {**uvicorn, "filters": ["websocket"]},
            ACCESS_LOGGER: access,
        },
        "root": {"level": level, "handlers": ["stderr"]},
    }


def configure(settings: Settings, *, background: bool = False) -> None:
    """Apply ``log_config`` to this process (the supervisor: lines written as they come)."""
    logging.config.dictConfig(log_config(settings, background=background))
