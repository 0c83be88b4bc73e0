"""HTTP caching and compression: content codings, strong ETags, 304s and Cache-Control.

``Compression`` is the middleware that gzips or brotli-compresses answers above MIN_SIZE for
clients that ask (``Accept-Encoding``). Like ``api/app.py`` BrowserCors it engages only then:
the load generator and the servers that call the hot routes send no Accept-Encoding, and a
refused hold (a tiny 409) pays one scan of the request headers, not a wrapped ``send``.

An endpoint declared with ``cache=Caching(...)`` (``api/routing.py``) sends its 200 answers with
a strong ETag over the body and answers a matching ``If-None-Match`` with a 304 and no body. It
compresses them itself, so that each coding has its own strong ETag and a 304 repeats the tag
the client holds. The seat maps (``api/seatmaps.py``) build their ETag from the screening's
version instead of the body, and keep their compressed bodies next to the rendered map. Both
set ``Content-Encoding`` themselves, and ``Compression`` passes any answer that has one as it is.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

import brotli
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.rendering import Encoded

Headers = list[tuple[bytes, bytes]]

MIN_SIZE = 1024  # bytes: below this a compressed answer saves less than its headers cost
THREAD_SIZE = 128 * 1024  # bytes: larger bodies are compressed off the event loop
# Fast levels: a 500-seat map (73 KB) takes gzip 1 ~3x less CPU than gzip 6 for 14% more
# bytes (4.0 KB against 3.5 KB), br 3 less than br 5 for 2.7 KB against 2.4 KB. A hot screening
# changes with every hold, so even the stored seat maps are compressed again and again.
GZIP_LEVEL = 1
BROTLI_QUALITY = 3
CODINGS = ("br", "gzip")  # in order of preference when the client accepts both
# Content types worth compressing (text); images, archives and uploads are left alone.
COMPRESSIBLE = (b"application/json", b"text/", b"application/javascript", b"image/svg+xml")
VARY_ENCODING = b"Accept-Encoding"


def compress(body: bytes, coding: str) -> bytes:
    """``body`` in the content coding ``coding`` ("br" or "gzip"), in one piece."""
    if coding == "br":
        packed: bytes = brotli.compress(body, quality=BROTLI_QUALITY)
        return packed
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: the gzip format
    return packer.compress(body) + packer.flush()


def negotiate(scope: Scope) -> tuple[str | None, bytes | None]:
    """The coding to answer in (br, gzip or None: identity) and the If-None-Match header, in
    one pass over the request headers."""
    coding: str | None = None
    tags: bytes | None = None
    value: bytes
    for name, value in scope["headers"]:  # ASGI header names are lower-case
        if name == b"accept-encoding":
            coding = choose_coding(value)
        elif name == b"if-none-match":
            tags = value
    return coding, tags


_chosen: dict[bytes, str | None] = {}  # Accept-Encoding value -> its coding
CHOSEN_SIZE = 256  # distinct values kept; browsers send a handful
# Nor is a longer value kept (browsers send ~30 bytes): one of up to 64 KB, the head's limit,
# made each entry that large, 16 MB a process for 256 made-up values.
CHOSEN_MAX_BYTES = 256


def choose_coding(header: bytes) -> str | None:
    """The preferred coding that ``Accept-Encoding: header`` allows (``q=0`` refuses one)."""
    try:
        return _chosen[header]  # ~50 ns instead of ~3 µs of parsing
    except KeyError:
        pass
    coding = parse_accept_encoding(header)
    if len(header) <= CHOSEN_MAX_BYTES:
        if len(_chosen) >= CHOSEN_SIZE:
            _chosen.clear()
        _chosen[header] = coding
    return coding


def parse_accept_encoding(header: bytes) -> str | None:
    allowed: dict[str, bool] = {}
    for item in header.decode("latin-1").lower().split(","):
        coding, _, params = item.partition(";")
        allowed[coding.strip()] = not _refused(params)
    for coding in CODINGS:
        if allowed.get(coding, allowed.get("*", False)):
            return coding
    return None


def _refused(params: str) -> bool:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                return float(value) <= 0
            except ValueError:
                return True  # a malformed weight: not a clear yes
    return False


# -- validators -----------------------------------------------------------------------------------


def etag_of(body: bytes, coding: str | None = None) -> bytes:
    """A strong ETag over ``body`` (SHA-256 cut to 128 bits: about twice as fast as BLAKE2b
    where the CPU has SHA instructions, ~1 µs per KB at worst), sent in ``coding``: each
    content coding is a representation of its own, with its own strong ETag (RFC 9110 8.8.3.3).
    """
    digest = sha256(body).hexdigest()[:32].encode()
    return b'"%s.%s"' % (digest, coding.encode()) if coding else b'"%s"' % digest


def matches(header: bytes | None, etag: bytes) -> bool:
    """Whether ``If-None-Match: header`` names ``etag``: a list of tags or ``*``, compared
    weakly as RFC 9110 13.1.2 says (``W/"x"`` matches ``"x"``)."""
    if header is None:
        return False
    if header == etag:  # the usual revalidation: the one tag the client was given
        return True
    if header.strip() == b"*":
        return True
    return any(tag.strip().removeprefix(b"W/") == etag for tag in header.split(b","))


class Reply(Encoded):
    """Encoded JSON that brings its own headers (ETag, Content-Encoding...) and status: a 200,
    or a 304 (its body is not sent). ``headers`` may be shared between replies: never changed."""

    __slots__ = ("headers", "status")

    def __init__(self, body: bytes, headers: Headers, status: int = 200) -> None:
        self.body = body  # Encoded's one field, set here: a seat map read saves a call
        self.headers = headers
        self.status = status


@dataclass(frozen=True, slots=True)
class Caching:
    """An endpoint's caching declaration: strong ETags and 304s always; ``max_age`` seconds of
    reuse for anonymous answers (``public``), none for answers to a signed-in caller."""

    max_age: int = 30


CATALOG = Caching(max_age=30)
PRIVATE = b"private, no-cache"
REVALIDATE = b"no-cache"
# Answers differ by origin (CORS headers, see api/app.py BrowserCors), coding and caller.
VARY_ALL = b"Origin, Accept-Encoding, Authorization"
VARY_PUBLIC = b"Origin, Accept-Encoding"
# What a 304 repeats of the 200 it stands for (RFC 9110 15.4.5).
KEPT_BY_304 = frozenset((b"etag", b"cache-control", b"vary", b"expires", b"content-location"))


def cache_headers(scope: Scope, caching: Caching, by_caller: bool) -> Headers:
    """Cache-Control and Vary of a catalog answer. ``by_caller``: the route reads the caller's
    token when there is one (access optional/user/admin), so a signed-in answer is private."""
    signed_in = by_caller and any(name == b"authorization" for name, _ in scope["headers"])
    control = PRIVATE if signed_in else b"public, max-age=%d" % caching.max_age
    return [(b"cache-control", control), (b"vary", VARY_ALL if by_caller else VARY_PUBLIC)]


async def send_validated(
    scope: Scope, send: Send, status: int, body: bytes, headers: Headers
) -> None:
    """A 200 with a strong ETag over ``body``, compressed when the client asks, or a 304 when
    the client already has it (nothing compressed then).

    ``headers``: the answer's own but Content-Length. Compressing here rather than in the
    middleware gives each coding its own ETag, and a 304 the tag the client has.
    """
    coding, tags = negotiate(scope)
    if len(body) < MIN_SIZE:
        coding = None
    etag = etag_of(body, coding)
    headers = [*headers, (b"etag", etag)]
    if matches(tags, etag):
        await send_not_modified(send, headers)
        return
    if coding is not None:
        body = await in_thread_if_large(compress, body, coding)
        headers.append((b"content-encoding", coding.encode()))
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_not_modified(send: Send, headers: Iterable[tuple[bytes, bytes]]) -> None:
    kept = [(name, value) for name, value in headers if name in KEPT_BY_304]
    await send({"type": "http.response.start", "status": 304, "headers": kept})
    await send({"type": "http.response.body", "body": b""})


def merged(first: Headers, defaults: Headers) -> Headers:
    """``first`` plus each header of ``defaults`` that ``first`` does not have."""
    names = {name for name, _ in first}
    return first + [(name, value) for name, value in defaults if name not in names]


# -- the middleware -------------------------------------------------------------------------------


class Compression:
    """Compress answers of MIN_SIZE bytes or more for clients that accept br or gzip.

    Requests without Accept-Encoding go straight on, so the hot paths of servers and load
    generators pay nothing. WebSockets and lifespan go straight on. Answers that already have a
    Content-Encoding (the seat maps' stored bodies), 206s, 204s and 304s, and content types
    that do not compress (images, archives) pass as they are. A streamed answer is compressed
    chunk by chunk and flushed each time, so nothing waits for the end of the stream.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"accept-encoding":
                    coding = choose_coding(value)
                    if coding is not None:
                        await self.app(scope, receive, Compressing(send, coding).send)
                        return
                    break
        await self.app(scope, receive, send)


class Compressing:
    """The ``send`` of one answer being compressed."""

    __slots__ = ("coding", "inner", "packer", "start")

    def __init__(self, send: Send, coding: str) -> None:
        self.inner = send
        self.coding = coding
        self.start: Message | None = None  # held back until the first body message
        self.packer: Any = None  # the streaming compressor, once a streamed body starts

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if compressible(message):
                self.start = message
                return
        elif kind == "http.response.body" and (self.start is not None or self.packer):
            await self._body(message)
            return
        elif self.start is not None:  # pathsend, trailers...: what cannot be compressed here
            await self.inner(self.start)
            self.start = None
        await self.inner(message)

    async def _body(self, message: Message) -> None:
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        start, self.start = self.start, None
        if start is not None and not more:  # the whole body in one message: the usual case
            if len(body) >= MIN_SIZE:
                body = await in_thread_if_large(compress, body, self.coding)
                _mark_encoded(start, self.coding, len(body))
                message = {**message, "body": body}
            await self.inner(start)
            await self.inner(message)
            return
        if start is not None:
            self.packer = Packer(self.coding)
            _mark_encoded(start, self.coding, None)
            await self.inner(start)
        message = {**message, "body": await in_thread_if_large(self.packer.pack, body, more)}
        await self.inner(message)


class Packer:
    """A streaming compressor: each chunk is flushed, so a client sees it at once."""

    def __init__(self, coding: str) -> None:
        self.brotli = brotli.Compressor(quality=BROTLI_QUALITY) if coding == "br" else None
        self.zlib = None if self.brotli else zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def pack(self, chunk: bytes, more: bool) -> bytes:
        if self.brotli is not None:
            out: bytes = self.brotli.process(chunk)
            end: bytes = self.brotli.flush() if more else self.brotli.finish()
            return out + end
        assert self.zlib is not None
        return self.zlib.compress(chunk) + self.zlib.flush(
            zlib.Z_SYNC_FLUSH if more else zlib.Z_FINISH
        )


async def in_thread_if_large(func: Any, body: bytes, arg: Any) -> bytes:
    if len(body) >= THREAD_SIZE:  # ~1 ms of CPU and more: off the event loop
        return bytes(await asyncio.to_thread(func, body, arg))
    return bytes(func(body, arg))


def compressible(start: Message) -> bool:
    if start["status"] in (204, 206, 304) or start["status"] < 200:
        return False
    for name, value in start.get("headers", ()):
        if name == b"content-encoding":
            return False
        if name == b"content-type" and not value.lower().startswith(COMPRESSIBLE):
            return False
    return True


def _mark_encoded(start: Message, coding: str, length: int | None) -> None:
    """Content-Encoding, the new Content-Length (dropped while streaming), Vary; a strong ETag
    made weak."""
    headers: Headers = []
    vary: bytes | None = None
    for name, value in start.get("headers", ()):
        if name == b"vary":
            vary = value
        elif name == b"etag" and not value.startswith(b"W/"):
            # The tag was made for the identity bytes: equivalent, no longer the same bytes.
            headers.append((name, b"W/" + value))
        elif name != b"content-length":
            headers.append((name, value))
    headers.append((b"content-encoding", coding.encode()))
    if length is not None:
        headers.append((b"content-length", b"%d" % length))
    headers.append((b"vary", with_vary(vary, VARY_ENCODING)))
    start["headers"] = headers


def with_vary(vary: bytes | None, name: bytes) -> bytes:
    """``vary`` with ``name`` in it once (``*`` already covers it)."""
    if not vary:
        return name
    present = {part.strip().lower() for part in vary.split(b",")}
    if name.lower() in present or b"*" in present:
        return vary
    return vary + b", " + name


class AssetCaching:
    """Adds ``Cache-Control: <policy>`` and ``Vary: Origin`` to the 200s and 304s of ``app``, a
    Starlette StaticFiles (whose ETag and 304s stay as they are): a year for versioned assets
    (/docs' Swagger UI and ReDoc), ``no-cache`` for the web app's, revalidated on every load.
    ``Vary: Origin``: a cached answer must not serve another origin (api/app.py BrowserCors)."""

    def __init__(self, app: ASGIApp, policy: str) -> None:
        self.app = app
        self.headers = [(b"cache-control", policy.encode()), (b"vary", b"Origin")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_cached(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (200, 304):
                message["headers"] = [*message.get("headers", ()), *self.headers]
            await send(message)

        await self.app(scope, receive, send_cached)
