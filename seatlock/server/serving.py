"""How uvicorn serves the app: its httptools protocol, with a response's head and body in one send.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and the body on ``http.response.body``: two socket sends, two TCP
segments, and a second read for the client, for every small JSON response. Our endpoints send
both messages in the same event-loop iteration, so holding the head back until the body comes
(or until the end of the iteration, whichever is first) puts them in one send without delaying
anything. Only writes that are a whole response head are held; every other write, WebSocket
frames included, goes out at once, after a held head. ``http_protocol`` chooses between this and
uvicorn's own protocol.

WebSockets (``websocket_options``): uvicorn's sans-I/O websockets protocol, the one whose socket
api/websockets.py writes seat updates to directly, named rather than left to uvicorn's "auto" (a
dependency change must not switch it silently). permessage-deflate is off unless asked for: a
negotiated deflate context is zlib state of about 35 KB per connection, held for the connection's
life, which doubled a watcher's memory, for seat events of ~150 bytes that hardly compress (and
that the direct writer sends uncompressed anyway, as RFC 7692 allows). A seat-map watcher is idle
for hours, so what each connection keeps counts: ``WebSocketProtocol`` is uvicorn's protocol with
a lean inbox and write gate in place of an asyncio.Queue and an asyncio.Event (~3.5 KB of deques
between them), its keepalive pings sent by one sweep per event loop rather than a timer per
connection (``Keepalive``), and it lets go of the handshake's request and response once the
handshake is done (also the copy websockets' parser holds: ``restart_parser``). It also bounds
what a client may send (``WebSocketProtocol.handle_events``): uvicorn stops reading only after
whole messages, so pings and pieces of messages sent back to back held a worker's loop and grew
its memory; a client past WS_MAX_FRAMES frames in WS_FRAMES_WINDOW_S is closed (1008).

Slow clients (``Stalls``): uvicorn times a connection out only between two requests (its keep-alive
timeout), so a client that connects and sends nothing, or sends a request head a byte at a time, or
stops halfway through a body, held its connection (a file descriptor, and for a body the handler
waiting on it) for as long as it liked: a few thousand of them exhaust a worker's descriptors and
nobody else can connect. ``HttpProtocol`` closes such a connection once the client owes it something
for longer than SEATLOCK_REQUEST_READ_TIMEOUT_SECONDS: anything after connecting, the rest of a
request head after its first byte, the next piece of a body after the last (the head's end counts),
and, while the transport holds more of a response than it may, reading some of it (a client that
reads slowly keeps its connection; one that stopped reading left its handler waiting on the
transport). A client that has not sent a whole head gets a 408 first, and so does one whose body
stopped coming before its handler began an answer (the handler is told the client left, and what
it answers then is not sent). A handler's own time and an idle keep-alive connection (uvicorn's
timeout) are not timed here. A request line and headers over MAX_HEAD_BYTES get a 431, and bytes
that are not HTTP uvicorn's 400, both as JSON (``_refuse``) like every other error. A head is
measured whether it comes in one read or many: one still coming is refused once the reads surely
its own pass the limit (a read it shares with a request before it counts only for the check of the
whole head), one that came whole before the app sees it (``on_headers_complete``; uvicorn logs it
as an invalid request, as the parser is stopped there with an error). A refusal takes its turn:
the requests pipelined before it on the connection are answered first, in order, and nothing sent
after it is read into a request. The close after a 408, 431 or 400 lingers (LINGER_S), so that a
client still sending reads the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import inspect
import logging
import sys
import termios
import weakref
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
import uvicorn

try:  # uvicorn's private module: the one internal this module relies on (see http_protocol)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    IMPORTED = True
except ImportError:  # pragma: no cover - httptools missing, or uvicorn moved its protocol
    HttpToolsProtocol = asyncio.Protocol  # type: ignore[assignment, misc]
    IMPORTED = False

try:  # the same for WebSockets (see websocket_protocol)
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.protocol import Protocol

    WS_IMPORTED = True
except ImportError:  # pragma: no cover - websockets missing, or uvicorn moved its protocol
    WebSocketsSansIOProtocol = asyncio.Protocol  # type: ignore[assignment, misc]
    WS_IMPORTED = False

from api.observe import ANSWERED_INSTEAD
from seatlock.engine.watchers import reset
from seatlock.metrics import SLOW_CLIENTS, UNREAD_REQUESTS
from seatlock.settings import REQUEST_READ_TIMEOUT_S

logger = logging.getLogger(__name__)

HEAD_START = b"HTTP/1.1 "
HEAD_END = b"\r\n\r\n"
# A body at least this big goes out with its held head through ``writelines``: uvloop sends the
# two buffers in one writev, where ``head + body`` copied the body first (a 500-seat map's 71 KB:
# ~1.3 us of the server's CPU per read, measured); asyncio's own transport joins them at worst,
# as ``head + body`` did. A small body is cheaper to join than to hand over as a list.
GATHER_BYTES = 8 * 1024
FALLBACK = "auto"  # uvicorn's own choice (httptools when installed): head and body in two sends
WS_FALLBACK = "websockets-sansio"  # uvicorn's WebSocketsSansIOProtocol as it is
# Clients only send pings; a bigger message is refused (close 1009) before it is buffered whole.
WS_MAX_MESSAGE_BYTES = 64 * 1024
# What a client may send (``WebSocketProtocol.handle_events``): frames of any kind, its pings and
# pongs and messages and their pieces, WS_MAX_FRAMES in WS_FRAMES_WINDOW_S (a seat-map client
# sends one every 20 s or so), and a message in at most WS_MAX_PIECES pieces (browsers send one).
WS_MAX_FRAMES = 100
WS_FRAMES_WINDOW_S = 10.0
WS_MAX_PIECES = 32
WS_TOO_MANY_FRAMES = (1008, "Too many messages")
WS_TOO_MANY_PIECES = (1009, "Message in too many pieces")
WS_CUT_OFF_S = 10.0  # a client cut off is reset if it has not gone by then (it may not read)
# What WebSocketProtocol replaces: uvicorn's attributes, and the methods it calls on each.
WS_LEAN_PARTS = {"queue": ("put_nowait", "get", "empty"), "writable": ("set", "clear", "wait")}
# uvicorn's keepalive methods WebSocketProtocol overrides or calls (``Keepalive``), and those of
# its reading it overrides or calls (``WebSocketProtocol.handle_events``).
WS_KEEPALIVE = ("start_keepalive", "schedule_ping", "send_keepalive_ping")
WS_READING = ("handle_events", "handle_cont", "handle_parser_exception")
# uvicorn's httptools protocol methods HttpProtocol extends (the parser's callbacks among them).
HTTP_PARTS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_headers_complete",
    "handle_websocket_upgrade",
    "send_400_response",
    "pause_writing",
    "resume_writing",
    "_start_asgi_task",
)
# A request's line and headers (a signed-in request's are under 1 KB). httptools keeps no limit:
# it joins a header's pieces by concatenation, so a head of 40 MB held its worker's loop for
# more than a second, and its memory for as long as the client kept sending.
MAX_HEAD_BYTES = 64 * 1024
HEAD_TOO_LARGE = f"Request line and headers over {MAX_HEAD_BYTES} bytes"
TOO_SLOW = "Request not received in time"
# After a refusal of what a client may still be sending (a 408, 431, 400): the answer, then the end
# of our side, and what comes meanwhile read and dropped, up to these, before the close. A close
# with its input unread is a reset, which a client still sending sees instead of the answer.
LINGER_S = 2.0
LINGER_BYTES = 1024 * 1024


def websocket_options(per_message_deflate: bool) -> dict[str, Any]:
    """uvicorn's WebSocket options (``SEATLOCK_WS_PER_MESSAGE_DEFLATE``: see the module's doc)."""
    return {
        "ws": websocket_protocol(),
        "ws_per_message_deflate": per_message_deflate,
        "ws_max_size": WS_MAX_MESSAGE_BYTES,
    }


def websocket_protocol() -> type[asyncio.Protocol] | str:
    """uvicorn's ``ws`` option: ``WebSocketProtocol`` when uvicorn's sans-I/O protocol is the one
    it was written against, else that protocol as it is (with a warning: more memory per
    connection). tests/api/test_serving.py fails if the installed uvicorn changed what
    ``WebSocketProtocol`` relies on: the attributes of WS_LEAN_PARTS, made in ``__init__`` and
    used only through those methods; ``start_keepalive`` called once the handshake is sent, and
    ``schedule_ping`` the only place that arms the ping timer;
    ``request`` and ``response`` unused after it; ``handle_events`` taking the frames of a read
    from websockets' ``conn.events``, continuation frames kept in ``frames`` by ``handle_cont``,
    ``handle_parser_exception`` closing (tests/api/test_ws_audit.py checks these)."""
    known = (*WS_KEEPALIVE, *WS_READING)
    if not WS_IMPORTED or not all(hasattr(WebSocketsSansIOProtocol, m) for m in known):
        logger.warning(
            "uvicorn %s is not the one seatlock.server.serving knows: WebSockets are served by"
            " its own sans-I/O protocol (more memory per connection, and no bound on what a"
            " client sends but a message's size)",
            uvicorn.__version__,
        )
        return WS_FALLBACK
    return WebSocketProtocol


def http_protocol(
    read_timeout_s: float = REQUEST_READ_TIMEOUT_S,
) -> Callable[..., asyncio.Protocol] | str:
    """uvicorn's ``http`` option: ``HttpProtocol`` (with ``read_timeout_s``, see ``Stalls``)
    when uvicorn's httptools protocol is the one it was written against, else uvicorn's own
    (with a warning: one send more per response, and slow clients keep their connections).

    What ``HttpProtocol`` relies on: ``HttpToolsProtocol`` in
    ``uvicorn.protocols.http.httptools_impl``, whose ``connection_made(transport)`` keeps the
    transport it is given for every write, and which writes a response head in one
    ``transport.write``; the methods of HTTP_PARTS, its ``loop``, ``scope`` (None until a
    request begins, then made anew by each), ``url``, ``headers`` and ``parser`` (the head
    read so far), ``flow`` (``read_paused``), ``cycle`` (``scope``, ``more_body``,
    ``response_started``, ``response_complete``, ``disconnected``, ``message_event``),
    ``pipeline`` (the requests waiting their turn: uvicorn starts the next with
    ``_start_asgi_task(cycle, app)``, which runs ``cycle.run_asgi(app)``, once a response is
    complete) and ``server_state`` (``default_headers``).
    pyproject.toml bounds uvicorn below its next minor version and tests/api/test_serving.py
    fails if the installed one no longer does any of this.
    """
    if not _httptools_as_known():
        logger.warning(
            "uvicorn %s is not the one seatlock.server.serving knows: HTTP is served by"
            " uvicorn's own protocol (a response's head and body in two sends, and no"
            " SEATLOCK_REQUEST_READ_TIMEOUT_SECONDS)",
            uvicorn.__version__,
        )
        return FALLBACK
    # A partial, not a class made here: uvicorn's config goes to spawned workers by pickle.
    return functools.partial(HttpProtocol, read_timeout_s=read_timeout_s)


def _httptools_as_known() -> bool:
    if not IMPORTED or not all(hasattr(HttpToolsProtocol, name) for name in HTTP_PARTS):
        return False
    try:
        names = list(inspect.signature(HttpToolsProtocol.connection_made).parameters)
    except (TypeError, ValueError):  # pragma: no cover - not a Python function any more
        return False
    return names == ["self", "transport"]


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a transport that sends a response head with its body,
    closing the connection of a client too slow to send its request or read its answer
    (``Stalls``), and refusing a request head over MAX_HEAD_BYTES (``_refuse``)."""

    def __init__(
        self, *args: Any, read_timeout_s: float = REQUEST_READ_TIMEOUT_S, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._stalls = stalls_of(self.server_state, self.loop, read_timeout_s)
        self._owed = ""  # what the client owes (``Stalls``): idle, head or body; "" nothing
        self._head_bytes = 0  # read since the current request's head began, while not whole
        self._head_unsure = 0  # of those, the first read's when it may hold more than the head
        self._read = 0  # the length of the read being parsed
        self._unsent = -1  # while the client reads no more of a response: what it had left
        self._upgraded = False  # the socket went to a WebSocket protocol
        self._lingering = -1  # after a refusal: bytes still to read and drop (``_refuse``)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadWithBody(transport))  # type: ignore[arg-type]
        self._owe("idle")

    def connection_lost(self, exc: Exception | None) -> None:
        self._stalls.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, then what the client owes now, read from what uvicorn made of the bytes:
        one check per read (measured under 1 us of CPU a request more than uvicorn's own
        protocol, driving it in process, before ``on_headers_complete`` added a call and a
        comparison per head)."""
        if self._lingering >= 0:
            self._lingering -= len(data)
            if self._lingering < 0:
                self.transport.close()
            return
        before, owed = self.cycle, self._owed
        self._read = len(data)
        super().data_received(data)
        if self._upgraded or self._lingering >= 0:
            return
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # the last request's head is whole
            if cycle.more_body:
                self._owe("body")  # each read of a body sets a new deadline
            elif self._owed:
                self._owe("")
        elif self.scope is not None:  # a request began (its scope is made), its head is not whole
            if not self._head_bytes:  # its first read (a whole head sets the count back to 0)
                self._owe("head")  # the head's deadline runs from its first read
                # The read is all this head's when it began between two requests and no other
                # head came whole in it; else it may hold the end of a request before (a body,
                # pipelined requests), and only the reads after it count surely.
                self._head_unsure = 0 if cycle is before and owed != "body" else len(data)
            self._head_bytes += len(data)
            if (
                self._head_bytes - self._head_unsure > MAX_HEAD_BYTES
                and not self.transport.is_closing()
            ):
                self._refuse(431, HEAD_TOO_LARGE)

    def on_headers_complete(self) -> None:
        """The parser read a whole head: uvicorn's, unless the reads it came in are over
        MAX_HEAD_BYTES (a big read: a head, a body, requests pipelined) and it is too."""
        if self._head_bytes + self._read > MAX_HEAD_BYTES:
            self._limit_head()
        self._head_bytes = 0
        super().on_headers_complete()

    def _limit_head(self) -> None:
        """Refuse the head just read when it is over MAX_HEAD_BYTES, measured as the parser read
        it (its request line and header lines, the spaces around a value aside), and stop the
        parser there with an error: the app never sees it, nor anything after it."""
        size = len(self.parser.get_method()) + len(self.url) + 14  # " HTTP/1.1\r\n", "\r\n"
        for name, value in self.headers:
            size += len(name) + len(value) + 4  # ": ", "\r\n"
        if size > MAX_HEAD_BYTES:
            self._refuse(431, HEAD_TOO_LARGE)
            raise HeadTooLarge(size)  # uvicorn's data_received: send_400_response (refused)

    def handle_websocket_upgrade(self) -> None:
        self._upgraded = True
        self._owe("")
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not an HTTP request, as JSON like every error."""
        if self._lingering < 0:  # else refused already: a head too big stopped the parser
            self._refuse(400, msg)

    def pause_writing(self) -> None:
        """The transport holds more than it may of what the client has not read yet: the client
        owes the server reading some of it."""
        super().pause_writing()
        self._unsent = self._unread()
        self._stalls.expect(self)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unsent = -1
        if self._owed:
            self._stalls.expect(self)
        else:
            self._stalls.discard(self)

    def _owe(self, owed: str) -> None:
        if owed:
            self._stalls.expect(self)
        elif self._unsent < 0:  # a response held back keeps its own deadline
            self._stalls.discard(self)
        self._owed = owed

    def _unread(self) -> int:
        """Bytes of responses the client has not taken yet: the transport's buffer, and the
        socket's send queue (Linux's SIOCOUTQ: not sent, or not acknowledged). The kernel wakes
        the transport only once half its queue is free, so the buffer alone would not move for
        seconds under a client that reads, slowly but steadily, out of a queue of megabytes."""
        unread = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, ValueError, TypeError):
                queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))
                unread += int.from_bytes(queued, sys.byteorder, signed=True)
        return unread

    def stalled(self) -> None:
        """The client owes something past its deadline (``Stalls``): close the connection, with
        a 408 first when its request's head is not whole and no response is under way."""
        transport = self.transport
        if transport.is_closing() or self._upgraded:
            return
        if self._unsent >= 0:  # writing is paused: the client has not read what was sent
            unsent = self._unread()
            if unsent < self._unsent:  # it read some since: slow, not stalled
                self._unsent = unsent
                self._stalls.expect(self)
                return
            owed = "read"
        elif self.flow.read_paused:  # the server is not reading (its handler holds a big body)
            self._stalls.expect(self)
            return
        else:
            owed = self._owed or "idle"
        SLOW_CLIENTS.labels(stage=owed).inc()
        logger.debug("closing a connection from %s: no %s in time", self.client, owed)
        if owed == "read":
            self._reset()
            return
        cycle = self.cycle
        if owed == "head" or (owed == "body" and cycle is not None and not cycle.response_started):
            self._refuse(408, TOO_SLOW)  # a body's handler waits for it: told the client left
        else:
            transport.close()

    def _reset(self) -> None:
        """Close at once, dropping what the client did not read (``watchers.reset``)."""
        reset(self.transport)

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` with ``{"detail": ...}`` and close: a request the app never sees
        (not HTTP, a head too big, one not sent in time: counted as unread), or one whose body
        stopped coming or is not HTTP (``_refuse_body``). From here on nothing is read into a
        request. The refusal takes its turn after the requests before it (pipelined: answered
        first, in order): it waits in uvicorn's pipeline as the next request would."""
        self._lingering = LINGER_BYTES  # what comes now is read and dropped (``data_received``)
        self._owe("")
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            self._refuse_body(status, detail)
            return
        UNREAD_REQUESTS.labels(status=str(status)).inc()
        if cycle is None or cycle.response_complete:
            self._answer(status, detail)
        else:  # the last request read is answered, or waits in the pipeline: after it
            turn = Refusal(self, status, detail)
            self.pipeline.appendleft((turn, None))  # type: ignore[arg-type]

    def _refuse_body(self, status: int, detail: str) -> None:
        """What is refused is the rest of the last request's body: its handler, which may be
        waiting for it, is told the client left, as a lost connection tells it (what it answers
        then is not sent), and the refusal goes out in its place. A request still waiting its
        turn never begins; one whose answer began gets no other: the connection closes."""
        cycle = self.cycle
        cycle.disconnected = True
        cycle.message_event.set()
        for index, (queued, _) in enumerate(self.pipeline):
            if queued is cycle:  # not begun: the app never sees it
                UNREAD_REQUESTS.labels(status=str(status)).inc()
                turn = Refusal(self, status, detail)
                self.pipeline[index] = (turn, None)  # type: ignore[assignment]
                return
        if cycle.response_started:
            self.transport.close()
            return
        scope: dict[str, Any] = cycle.scope  # type: ignore[assignment]  # a TypedDict
        scope[ANSWERED_INSTEAD] = status  # the request's access line and count say so
        self._answer(status, detail)

    def _answer(self, status: int, detail: str) -> None:
        """Send a refusal (``_refuse``). The client may still be sending: our side ends after
        the answer, and the close waits until LINGER_S or LINGER_BYTES more, so that the client
        reads the answer rather than a reset."""
        transport = self.transport
        if transport.is_closing():
            return
        body = orjson.dumps({"detail": detail})
        head = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        transport.write(b"".join(head) + body)
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_S, transport.close)
        else:
            transport.close()


class HeadTooLarge(Exception):
    """Raised in a parser callback to stop the parser at a head over MAX_HEAD_BYTES."""


class Refusal:
    """A refusal waiting its turn in uvicorn's pipeline of requests (``HttpProtocol._refuse``):
    uvicorn starts it as it starts a request's cycle, once the responses before it are sent."""

    __slots__ = ("_detail", "_protocol", "_status")

    def __init__(self, protocol: HttpProtocol, status: int, detail: str) -> None:
        self._protocol = protocol
        self._status = status
        self._detail = detail

    async def run_asgi(self, app: object) -> None:
        """What uvicorn runs for a request in its turn: here the refusal."""
        self._protocol._answer(self._status, self._detail)


class Stalls:
    """One timer per server closes the connections (``HttpProtocol``) whose client owes the
    server something past its deadline: anything at all after connecting, the rest of a request
    head after its first byte, the next piece of a body after the last (the head's end counts),
    reading some of a response the transport holds back (a client that
    read some by its deadline gets another). A deadline is ``timeout_s`` after what it follows;
    the sweep runs every ``timeout_s / SWEEPS``, at most every second, so a connection is closed
    at most that much later. A connection owes nothing while its request is handled, while its
    response goes out unhindered and between two requests (uvicorn's keep-alive timeout closes
    it then)."""

    __slots__ = ("_due", "_every", "_loop", "_timeout", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self._loop = loop
        self._timeout = timeout_s
        self._every = min(1.0, timeout_s / SWEEPS)
        self._due: dict[HttpProtocol, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def expect(self, protocol: HttpProtocol) -> None:
        self._due[protocol] = self._loop.time() + self._timeout
        if self._timer is None:
            self._timer = self._loop.call_later(self._every, self._sweep)

    def discard(self, protocol: HttpProtocol) -> None:
        self._due.pop(protocol, None)

    def __len__(self) -> int:
        """Connections that owe the server something now."""
        return len(self._due)

    def _sweep(self) -> None:
        self._timer = None
        now = self._loop.time()
        for protocol in [p for p, due in self._due.items() if due <= now]:
            del self._due[protocol]
            protocol.stalled()
        if self._due:
            self._timer = self._loop.call_later(self._every, self._sweep)


# By uvicorn's ServerState: one per server (a server runs in one loop, its protocols share it).
_stalls: weakref.WeakKeyDictionary[Any, Stalls] = weakref.WeakKeyDictionary()


def stalls_of(server_state: Any, loop: asyncio.AbstractEventLoop, timeout_s: float) -> Stalls:
    """The server's ``Stalls`` (made with its first connection)."""
    stalls = _stalls.get(server_state)
    if stalls is None:
        stalls = _stalls[server_state] = Stalls(loop, timeout_s)
    return stalls


class HeadWithBody:
    """A transport proxy holding a response head back until the next write or the loop's turn."""

    __slots__ = ("_head", "_loop", "_real")

    def __init__(self, real: asyncio.Transport) -> None:
        self._real = real
        self._head: bytes | None = None
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) < GATHER_BYTES:
                self._real.write(head + data)
            else:  # a seat map: handed over as two buffers, one send that copies neither
                self._real.writelines((head, data))
        elif data[:9] == HEAD_START and data[-4:] == HEAD_END:
            self._head = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._real.write(data)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def flush(self) -> None:
        head, self._head = self._head, None
        if head is not None and not self._real.is_closing():
            self._real.write(head)

    def close(self) -> None:
        self.flush()
        self._real.close()

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size() + len(self._head or b"")

    @property
    def real(self) -> asyncio.Transport:
        """The socket's transport: for writers that never send a response head (WebSocket
        frames after the handshake), once ``flush`` sent any head held."""
        return self._real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol keeping less per connection (see the module's doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Gate()  # type: ignore[assignment]
        self._window_ends = 0.0  # what the client may still send (``_within_budget``)
        self._frames_left = WS_MAX_FRAMES

    def start_keepalive(self) -> None:
        # uvicorn calls this right after writing the handshake's response: from here on the
        # request and the response (their headers, ~3 KB) are never read again.
        self.request = self.response = None  # type: ignore[assignment]
        restart_parser(self.conn)
        if self.ping_interval is not None and self.ping_interval > 0:
            # The first ping is due ping_interval from now (uvicorn's timer would wait as long).
            self.ping_sent_at = self.loop.time()
            keepalive_of(self.loop, self.ping_interval).add(self)

    def schedule_ping(self) -> None:
        # uvicorn arms a timer per connection here (after the handshake, and after each pong):
        # ``Keepalive`` sends the next ping instead, ping_interval after the last one.
        return

    def handle_events(self) -> None:
        """uvicorn's, within what a client may send (WS_MAX_FRAMES, WS_MAX_PIECES).

        uvicorn stops reading after each whole message until the app took it, but not after a
        ping, a pong or a piece of a message: a client sending those back to back (tens of
        thousands in a read) held its worker's loop for seconds at a time, every other client
        of the worker waiting (tens of seconds for an answer), and the pongs of a client that
        does not read them, or the empty pieces of a message that never ends, grew the worker
        without bound (55 MB in 3 s). Such a client is closed (1008, or 1009 for the pieces),
        and reset WS_CUT_OFF_S later if it has not gone (it may not read the close)."""
        if self.handshake_complete and not self._within_budget(len(self.conn.events)):
            self.conn.events_received()  # not looked at (their pongs leave with the close)
            self._cut_off(*WS_TOO_MANY_FRAMES)
            return
        try:
            super().handle_events()
        except MessageInPieces:  # the events after it in this read are dropped unread
            self._cut_off(*WS_TOO_MANY_PIECES)

    def handle_cont(self, event: Any) -> None:
        if len(self.frames) >= WS_MAX_PIECES:
            raise MessageInPieces
        super().handle_cont(event)

    def _within_budget(self, frames: int) -> bool:
        """Count ``frames`` against the client's WS_MAX_FRAMES of this WS_FRAMES_WINDOW_S."""
        now = self.loop.time()
        if now >= self._window_ends:
            self._window_ends, self._frames_left = now + WS_FRAMES_WINDOW_S, WS_MAX_FRAMES
        self._frames_left -= frames
        return self._frames_left >= 0

    def _cut_off(self, code: int, reason: str) -> None:
        """Close the connection for what the client sent; the app hears ``code`` (access log)."""
        if not self.close_sent:
            self.conn.fail(code, reason)
            self.handle_parser_exception()  # uvicorn's: the app told, the close sent, closed
        else:  # the app's close went out already: nothing more is read
            self.transport.close()
        self.loop.call_later(WS_CUT_OFF_S, reset, self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        keepalive = _keepalives.get(self.loop)
        if keepalive is not None:
            keepalive.discard(self)


class MessageInPieces(Exception):
    """A client's message came in more than WS_MAX_PIECES pieces."""


class Keepalive:
    """One timer per event loop sends uvicorn's keepalive pings to every connection of our
    protocol, a sweep every ping_interval / SWEEPS: a timer per connection (uvicorn's) costs
    ~600 bytes of each. A ping goes ping_interval to (1 + 1/SWEEPS) ping_interval after the
    last; uvicorn's own code sends it and waits ping_timeout for the pong, as before."""

    __slots__ = ("_every", "_loop", "_protocols", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, ping_interval: float) -> None:
        self._loop = loop
        self._every = ping_interval / SWEEPS
        self._protocols: set[WebSocketProtocol] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, protocol: WebSocketProtocol) -> None:
        self._protocols.add(protocol)
        if self._timer is None:
            self._timer = self._loop.call_later(self._every, self._sweep)

    def discard(self, protocol: WebSocketProtocol) -> None:
        self._protocols.discard(protocol)

    def _sweep(self) -> None:
        self._timer = None
        if not self._protocols:
            del _keepalives[self._loop]  # the next connection makes a new one
            return
        now = self._loop.time()
        for protocol in list(self._protocols):
            interval = protocol.ping_interval or 0.0
            waiting = protocol.pending_ping_payload is not None  # its pong timer runs
            if not waiting and now - protocol.ping_sent_at >= interval:
                protocol.send_keepalive_ping()  # nothing when the connection is closing
        self._timer = self._loop.call_later(self._every, self._sweep)


SWEEPS = 4  # Keepalive (Stalls) looks for connections due a ping (late) this often per interval
_keepalives: dict[asyncio.AbstractEventLoop, Keepalive] = {}


def keepalive_of(loop: asyncio.AbstractEventLoop, ping_interval: float) -> Keepalive:
    """The loop's ``Keepalive`` (made with its first connection that pings)."""
    keepalive = _keepalives.get(loop)
    if keepalive is None:
        keepalive = _keepalives[loop] = Keepalive(loop, ping_interval)
    return keepalive


def restart_parser(conn: Any) -> bool:
    """Give websockets' connection a frame parser of its own when the handshake's is idle.

    ``ServerProtocol.parse`` reads the handshake's request into a local variable, then parses
    frames in the same generator (``Protocol.parse``) for the connection's life, so the request
    and its headers (~2.5 KB) stay referenced. When that generator waits in ``at_eof`` (nothing
    of a frame read: a client sends none before the 101, RFC 6455 4.1), a new ``Protocol.parse``
    started now is in exactly its state; websockets swaps its parser the same way
    (``discard``). Anywhere else the parser is left as it is. True when it was restarted."""
    inner = getattr(conn, "parser", None)
    while (deeper := getattr(inner, "gi_yieldfrom", None)) is not None:
        inner = deeper
    if getattr(getattr(inner, "gi_code", None), "co_name", "") != "at_eof":
        return False
    parser = Protocol.parse(conn)
    next(parser)
    conn.parser = parser
    return True


class Inbox:
    """What uvicorn's protocol uses of an asyncio.Queue (one reader), without its three deques."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class Gate:
    """What uvicorn's protocol uses of an asyncio.Event (set while the socket takes writes)."""

    __slots__ = ("_open", "_waiters")

    def __init__(self) -> None:
        self._open = True
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        self._open = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        while not self._open:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        return True
