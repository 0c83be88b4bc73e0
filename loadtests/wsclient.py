"""A lean WebSocket client for the bench's watchers: thousands of them in one process.

The websockets library spends tens of microseconds of Python on every frame it reads (its
parser's generators, a queue, UTF-8 checks). With 5,000 watchers of a screening that changes
fifty times a second, the bench's watcher processes used more CPU than the server they measure,
on the same two cores, and their own backlog showed up as the server's delay. This client does
the opening handshake (RFC 6455 section 4), then cuts the server's frames (never masked) straight
out of each read and hands every message to a callback with the time of that read. It answers
pings and the closing handshake, and sends nothing else.

The server writes the very same bytes to every watcher of a screening (seatlock/engine/
watchers.py), so connections given one ``Reads`` cut a read only the first time they get it:
a read of whole plain text frames is remembered with its messages (a ``Known`` list), and the
same read on any of them hands over that very list. On a release day's fan-out (a hundred
changes in one write to 5,000 watchers) that is a dict lookup per read instead of a hundred
frames cut in Python per watcher.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
import zlib
from collections.abc import Callable
from typing import Any, cast

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_HEAD = 16_384  # a handshake answer longer than this is not one

OnMessages = Callable[[list[bytes], float], None]  # messages in order, the time of their read
MAX_READS = 1024  # distinct reads a Reads keeps (it starts over when full)


class Known(list[bytes]):
    """The messages of a read, handed over as one object to every connection that got it."""


class Reads(dict[bytes, Known]):
    """Reads already cut into messages, shared by connections (see the module's doc)."""

    def remember(self, read: bytes, messages: list[bytes]) -> Known:
        if len(self) >= MAX_READS:
            self.clear()
        known = self[read] = Known(messages)
        return known


class HandshakeFailed(Exception):
    """The server did not switch protocols."""


class Watch(asyncio.Protocol):
    """One client connection; ``first`` is its first message, the others go to
    ``on_messages``."""

    def __init__(
        self, request: bytes, accept: bytes, on_messages: OnMessages, reads: Reads | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        self.request, self.accept, self.on_messages = request, accept, on_messages
        self.reads = reads
        self.opened: asyncio.Future[None] = loop.create_future()
        self.first: asyncio.Future[bytes] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        for future in (self.opened, self.first):  # a failure nobody waited for is no warning
            future.add_done_callback(_retrieve)
        self.buffer = b""
        self.fragments: list[bytes] = []
        self.compressed = False  # the message being read was deflated (RSV1 on its first frame)
        self.inflate: zlib._Decompress | None = None  # permessage-deflate, if the server chose it
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        received = time.time()
        reads = self.reads
        if reads is not None and not self.buffer and not self.fragments and self.first.done():
            known = reads.get(data)
            if known is not None:  # another connection cut this read already
                self.on_messages(known, received)
                return
        buffer = self.buffer + data if self.buffer else data
        if not self.opened.done():
            buffer = self._handshake(buffer)
        self.buffer = self._frames(buffer, received, data)

    def _handshake(self, buffer: bytes) -> bytes:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                self._fail(HandshakeFailed("no end of the handshake answer"))
            return buffer
        head = buffer[:end].split(b"\r\n")
        headers = dict(line.split(b":", 1) for line in head[1:] if b":" in line)
        accept = {k.strip().lower(): v.strip() for k, v in headers.items()}.get(
            b"sec-websocket-accept"
        )
        if not head[0].startswith(b"HTTP/1.1 101") or accept != self.accept:
            self._fail(HandshakeFailed(head[0].decode("latin-1")))
            return b""
        self.opened.set_result(None)
        return buffer[end + 4 :]

    def _frames(self, buffer: bytes, received: float, read: bytes = b"") -> bytes:
        """Every whole frame of ``buffer`` handled; what is left of it (a frame's start).

        Whole plain text messages after the first (``0x81``: final, no compression) are
        gathered and handed over together: the bench's watchers read millions of them, so
        the common case costs a few bytecodes a frame. Anything else goes through ``_frame``.
        A ``read`` that is the whole buffer and nothing but such messages is remembered in
        ``reads``.
        """
        at, size = 0, len(buffer)
        plain = self.first.done() and not self.fragments
        whole = plain and buffer is read and self.reads is not None
        messages: list[bytes] = []
        while size - at >= 2:
            head, length = 2, buffer[at + 1] & 0x7F
            if length == 126:
                if size - at < 4:
                    break
                head, length = 4, int.from_bytes(buffer[at + 2 : at + 4], "big")
            elif length == 127:
                if size - at < 10:
                    break
                head, length = 10, int.from_bytes(buffer[at + 2 : at + 10], "big")
            end = at + head + length
            if end > size:
                break
            if plain and buffer[at] == 0x81:
                messages.append(buffer[at + head : end])
            else:
                whole = False
                if messages:  # in order: those before this frame first
                    self.on_messages(messages, received)
                    messages = []
                self._frame(buffer[at], buffer[at + head : end], received)
                plain = self.first.done() and not self.fragments
            at = end
        if messages:
            if whole and at == size and self.reads is not None:
                messages = self.reads.remember(read, messages)
            self.on_messages(messages, received)
        return buffer[at:]

    def _frame(self, first: int, payload: bytes, received: float) -> None:
        opcode = first & 0x0F
        if opcode in (TEXT, BINARY, CONTINUATION):
            if opcode != CONTINUATION:
                self.compressed = bool(first & 0x40)
            if not first & 0x80:  # a fragment: the message ends with a FIN frame
                self.fragments.append(payload)
                return
            if self.fragments:
                payload = b"".join([*self.fragments, payload])
                self.fragments.clear()
            if self.compressed:
                self.inflate = self.inflate or zlib.decompressobj(-zlib.MAX_WBITS)
                payload = self.inflate.decompress(payload + b"\x00\x00\xff\xff")
            if self.first.done():
                self.on_messages([payload], received)
            else:
                self.first.set_result(payload)
        elif opcode == PING:
            self.send(PONG, payload)
        elif opcode == CLOSE:
            self.send(CLOSE, payload[:2])
            self.close()

    def send(self, opcode: int, payload: bytes) -> None:
        """A client frame (masked, as RFC 6455 5.3 requires); control frames only here."""
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes((0x80 | opcode, 0x80 | len(masked))) + mask + masked)

    def close(self) -> None:
        """Say goodbye (status 1000) and drop the connection without waiting for the answer."""
        if self.transport is not None and not self.transport.is_closing():
            self.send(CLOSE, (1000).to_bytes(2, "big"))
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        for future in (self.opened, self.first):
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def connect(
    host: str,
    port: int,
    path: str,
    on_messages: OnMessages,
    extensions: str = "",
    reads: Reads | None = None,
) -> Watch:
    """An open connection to ``ws://host:port/path``, past the handshake; ``extensions``: the
    Sec-WebSocket-Extensions offered (``permessage-deflate`` is understood); ``reads``: shared
    with other connections (see the module's doc)."""
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{offer}"
        f"Sec-WebSocket-Key: {key.decode()}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    _, watch = await loop.create_connection(
        lambda: Watch(request, accept, on_messages, reads), host, port
    )
    try:
        await watch.opened
    except BaseException:
        watch.close()
        raise
    return watch
