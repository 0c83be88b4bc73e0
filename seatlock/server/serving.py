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
that the direct writer sends uncompressed anyway, as RFC 7692 allows).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import uvicorn

try:  # uvicorn's private module: the one internal this module relies on (see http_protocol)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    IMPORTED = True
except ImportError:  # pragma: no cover - httptools missing, or uvicorn moved its protocol
    HttpToolsProtocol = asyncio.Protocol  # type: ignore[assignment, misc]
    IMPORTED = False

logger = logging.getLogger(__name__)

HEAD_START = b"HTTP/1.1 "
HEAD_END = b"\r\n\r\n"
FALLBACK = "auto"  # uvicorn's own choice (httptools when installed): head and body in two sends
WS_PROTOCOL = "websockets-sansio"  # uvicorn's WebSocketsSansIOProtocol (api/websockets.py)
# Clients only send pings; a bigger message is refused (close 1009) before it is buffered whole.
WS_MAX_MESSAGE_BYTES = 64 * 1024


def websocket_options(per_message_deflate: bool) -> dict[str, Any]:
    """uvicorn's WebSocket options (``SEATLOCK_WS_PER_MESSAGE_DEFLATE``: see the module's doc)."""
    return {
        "ws": WS_PROTOCOL,
        "ws_per_message_deflate": per_message_deflate,
        "ws_max_size": WS_MAX_MESSAGE_BYTES,
    }


def http_protocol() -> type[asyncio.Protocol] | str:
    """uvicorn's ``http`` option: ``HttpProtocol`` when uvicorn's httptools protocol is the one
    it was written against, else uvicorn's own (with a warning: one send more per response).

    What ``HttpProtocol`` relies on: ``HttpToolsProtocol`` in
    ``uvicorn.protocols.http.httptools_impl``, whose ``connection_made(transport)`` keeps the
    transport it is given for every write, and which writes a response head in one
    ``transport.write``. pyproject.toml bounds uvicorn below its next minor version and
    tests/api/test_serving.py fails if the installed one no longer does any of this.
    """
    if not _httptools_as_known():
        logger.warning(
            "uvicorn %s is not the one seatlock.server.serving knows: HTTP is served by"
            " uvicorn's own protocol (a response's head and body in two sends)",
            uvicorn.__version__,
        )
        return FALLBACK
    return HttpProtocol


def _httptools_as_known() -> bool:
    if not IMPORTED:
        return False
    try:
        names = list(inspect.signature(HttpToolsProtocol.connection_made).parameters)
    except (TypeError, ValueError):  # pragma: no cover - not a Python function any more
        return False
    return names == ["self", "transport"]


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a transport that sends a response head with its body."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadWithBody(transport))  # type: ignore[arg-type]


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
            self._real.write(head + data)
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

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)
