"""Anonymous catalog answers kept in-process for a moment (SEATLOCK_CATALOG_CACHE_SECONDS).

A catalog GET (``cache=CATALOG``, api/routing.py) makes its strong ETag from its whole body, so
a revalidation that ends in a 304 still runs the query. Anonymous answers are already
``Cache-Control: public, max-age=30``: serving the same bytes for a second or so more is within
that promise. An ``AnswerCache`` keeps, per process, the 200s of anonymous GETs and HEADs by
method, path and query string (what they vary on besides Origin and Accept-Encoding, which the
middleware and ``send_answer`` handle); a request with an Authorization header never reads or
fills it, since its answer may depend on who asks (``Vary: Authorization``).

Races, and what keeps them right:
- A burst of misses of one key shares one computation (a single-flight future): the first
  request computes, the others wait for its answer. When it has no answer to share (an error, a
  redirect, a cancelled request), each waiter computes its own, so errors are never shared.
- A catalog write calls ``catalog_changed``: this process's answers go at once, and so do the
  flights already running (they may have read the old rows): such a flight still answers the
  requests that joined it before the write, but keeps nothing. Other processes and hosts keep
  their copies until they age out: an admin's change shows everywhere within the TTL.
- An answer's age counts from the start of its computation, so none is served more than the TTL
  after the rows it was made from were read (from the replica for anonymous callers, which may
  lag as api/reads.py says, as without this cache). An answer that took longer than the TTL to
  compute (a search over many movies) is shared with the requests that waited for it, and kept
  no longer.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.types import Scope, Send

from api.caching import (
    MIN_SIZE,
    Headers,
    compress,
    etag_of,
    in_thread_if_large,
    matches,
    negotiate,
    send_not_modified,
)

MAX_ENTRIES = 2048  # answers kept per process, least recently used dropped first
MAX_BYTES = 32 * 1024 * 1024  # bodies kept per process, with the compressed copies made of them
MAX_ANSWER_BYTES = MAX_BYTES // 16  # a larger body is served but not kept
# Nor is an answer to a longer path and query: the catalog's own are short, and a query string
# of unknown parameters (which the lists ignore) once made each entry's key up to 64 KB.
MAX_KEY_BYTES = 1024
SHARED_METHODS = frozenset(("GET", "HEAD"))

Key = tuple[str, str, bytes]


@dataclass(slots=True)
class Answer:
    """One kept 200: its status, body and headers but ETag, Content-Encoding, Content-Length."""

    status: int
    body: bytes
    headers: Headers
    born: float  # time.monotonic() when its computation started
    # coding (None: identity) -> (strong ETag, body in that coding), made on first use.
    variants: dict[str | None, tuple[bytes, bytes]] = field(default_factory=dict)
    size: int = 0  # bytes of the body and of its compressed copies, counted by the cache
    owner: AnswerCache | None = None  # the cache that counts them, while it keeps this answer

    async def variant(self, coding: str | None) -> tuple[bytes, bytes]:
        known = self.variants.get(coding)
        if known is None:
            body = self.body
            if coding is not None:
                body = await in_thread_if_large(compress, body, coding)
            known = self.variants.get(coding)  # two concurrent first uses: one copy is kept
            if known is None:
                known = self.variants[coding] = (etag_of(self.body, coding), body)
                if coding is not None and self.owner is not None:
                    self.owner.grown(self, len(body))
        return known


class Flight:
    """One computation of a key's answer; ``keep`` shares it with the requests that wait."""

    __slots__ = ("born", "cache", "future", "generation", "key")

    def __init__(self, cache: AnswerCache | None, key: Key, generation: int) -> None:
        self.cache = cache
        self.key = key
        self.generation = generation
        self.born = time.monotonic()
        self.future: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()

    def keep(self, status: int, body: bytes, headers: Headers) -> Answer | None:
        """The answer to send, shared and stored; None when this flight keeps nothing."""
        if self.cache is None or len(body) > MAX_ANSWER_BYTES or not _keepable(self.key):
            return None
        answer = Answer(status, body, headers, self.born)
        self.cache.store(self, answer)
        if not self.future.done():
            self.future.set_result(answer)
        return answer


def _keepable(key: Key) -> bool:
    return len(key[1]) + len(key[2]) <= MAX_KEY_BYTES


# An endpoint's computation of its answer, kept through the flight it is given (a flight of no
# cache keeps nothing: a waiter whose flight had no answer computes its own with one).
Compute = Callable[[Flight], Awaitable[None]]


class AnswerCache:
    """Anonymous catalog answers of this process, for ``seconds`` (0: off)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.answers: OrderedDict[Key, Answer] = OrderedDict()
        self.flights: dict[Key, Flight] = {}
        self.bytes = 0
        self.generation = 0  # raised by every clear: flights started before keep nothing

    def fresh(self, key: Key) -> Answer | None:
        answer = self.answers.get(key)
        if answer is None:
            return None
        if time.monotonic() - answer.born >= self.seconds:
            self._drop(key)
            return None
        self.answers.move_to_end(key)
        return answer

    def store(self, flight: Flight, answer: Answer) -> None:
        if flight.generation != self.generation:
            return  # a write happened while it computed: it may show the old rows
        if flight.key in self.answers:
            self._drop(flight.key)
        self.answers[flight.key] = answer
        answer.owner, answer.size = self, len(answer.body)
        self.bytes += answer.size
        self._trim()

    def grown(self, answer: Answer, extra: int) -> None:
        """A kept answer made a compressed copy of ``extra`` bytes."""
        answer.size += extra
        self.bytes += extra
        self._trim()

    def _trim(self) -> None:
        while len(self.answers) > MAX_ENTRIES or self.bytes > MAX_BYTES:
            self._drop(next(iter(self.answers)))

    def _drop(self, key: Key) -> None:
        answer = self.answers.pop(key)
        answer.owner = None
        self.bytes -= answer.size

    def clear(self) -> None:
        """Forget every answer and every running flight (a catalog write happened)."""
        for answer in self.answers.values():
            answer.owner = None
        self.answers.clear()
        self.flights.clear()
        self.bytes = 0
        self.generation += 1

    async def serve(self, scope: Scope, send: Send, compute: Compute) -> None:
        """Answer from the cache, from a running flight, or by ``compute`` (which keeps its
        answer through the flight it is given)."""
        key: Key = (scope["method"], scope["path"], scope.get("query_string", b""))
        answer = self.fresh(key)
        if answer is not None:
            await send_answer(scope, send, answer)
            return
        flight = self.flights.get(key)
        if flight is not None:
            # shield: a waiter that goes away must not cancel the answer of the others.
            answer = await asyncio.shield(flight.future)
            if answer is not None:
                await send_answer(scope, send, answer)
            else:
                await compute(Flight(None, key, self.generation))
            return
        await self._lead(key, compute)

    async def _lead(self, key: Key, compute: Compute) -> None:
        flight = self.flights[key] = Flight(self, key, self.generation)
        try:
            await compute(flight)
        finally:
            if not flight.future.done():  # no answer to share: the waiters compute their own
                flight.future.set_result(None)
            if self.flights.get(key) is flight:
                del self.flights[key]


async def send_answer(scope: Scope, send: Send, answer: Answer) -> None:
    """What ``api.caching.send_validated`` sends for this answer's body, from kept bytes."""
    coding, tags = negotiate(scope)
    if len(answer.body) < MIN_SIZE:
        coding = None
    etag, body = await answer.variant(coding)
    headers = [*answer.headers, (b"etag", etag)]
    if matches(tags, etag):
        await send_not_modified(send, headers)
        return
    if coding is not None:
        headers.append((b"content-encoding", coding.encode()))
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def shared_answers(scope: Scope) -> AnswerCache | None:
    """The app's answer cache when this request may use it: on, a GET or HEAD, anonymous."""
    answers: AnswerCache | None = getattr(scope["app"].state, "answers", None)
    if answers is None or answers.seconds <= 0 or scope["method"] not in SHARED_METHODS:
        return None
    for name, _ in scope["headers"]:
        if name == b"authorization":
            return None
    return answers


def catalog_changed(scope: Scope) -> None:
    """A catalog write succeeded: this process serves no answer computed before it."""
    answers: AnswerCache | None = getattr(scope["app"].state, "answers", None)
    if answers is not None:
        answers.clear()
