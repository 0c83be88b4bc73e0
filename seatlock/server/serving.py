"""How uvicorn serves the app: its httptools protocol, with a response's head and body in one send.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and the body on ``http.response.body``: two socket sends, two TCP
segments, and a second read for the client, for every small JSON response. Our endpoints send
both messages in the same event-loop iteration, so holding the head back until the body comes
(or until the end of the iteration, whichever is first) puts them in one send without delaying
anything. Only writes that are a whole response head are held; every other write, WebSocket
frames included, goes out at once, after a held head.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_START = b"HTTP/1.1 "
HEAD_END = b"\r\n\r\n"


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
