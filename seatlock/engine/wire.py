"""The fast transport: our own auto-pipelining RESP connection (``SEATLOCK_REDIS_TRANSPORT=fast``).

Every call (script or plain command) made in one event-loop iteration is queued, and a single
flush at the end of that iteration packs them all into one socket write on a dedicated
connection, scripts as EVALSHA; while a write is unanswered, new calls wait for its replies and
then go out together, so a busy process makes one large write per round trip. The connection is
an ``asyncio.Protocol`` fed to ``hiredis.Reader`` directly: no task, parser layer or timeout per
reply. Redis answers one connection in the order it was written to, so replies are handed to the
waiting calls first in, first out, and the calls of one process reach Redis in the order they
were made (per screening and overall). Subscriptions get a connection of their own each.

Error replies become redis-py's public exceptions (``reply_error``); no redis-py internals.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import RedisSSLContext, SSLConnection
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    ExecAbortError,
    MasterDownError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from seatlock.engine.scripts import NAMES, PUBLISH, sha, source
from seatlock.engine.transport import (
    HEALTH_S,
    Arg,
    OnMessage,
    Replicas,
    ScriptTimer,
    replicated,
    settle,
    wait_command,
)
from seatlock.failfast import FailFast
from seatlock.metrics import REDIS_NOT_ANSWERING

logger = logging.getLogger(__name__)

_NAMES = frozenset(NAMES)
MAX_BATCH = 512  # calls per socket write: bounds the size of one buffer
MAX_QUEUE = 20_000  # calls waiting (queued or on the wire); beyond this, callers get an error
CONNECT_TIMEOUT = 5.0  # seconds for connect + AUTH/SELECT when the client names none
WATCH_STEPS = 4  # the stall watchdog's looks per socket timeout
MORE = object()  # hiredis: no complete reply buffered yet
UNANSWERED = object()  # a call run with replicas, its reply not yet come
_MAX_BULKS = 10_000

# The error code an error reply starts with -> redis-py's public exception for it (the classes
# redis-py's own parser raises for these codes). Anything else is a ResponseError.
ERRORS: dict[str, type[RedisError]] = {
    "NOSCRIPT": NoScriptError,
    "READONLY": ReadOnlyError,
    "LOADING": BusyLoadingError,
    "OOM": OutOfMemoryError,
    "NOPERM": NoPermissionError,
    "NOAUTH": AuthenticationError,
    "WRONGPASS": AuthenticationError,
    "EXECABORT": ExecAbortError,
    "TRYAGAIN": TryAgainError,
    "CROSSSLOT": ClusterCrossSlotError,
    "CLUSTERDOWN": ClusterDownError,
    "MASTERDOWN": MasterDownError,
}


def reply_error(message: str | bytes) -> RedisError:
    """The exception for one error reply, as redis-py raises it: a mapped code is cut from the
    message (``NOSCRIPT No matching script`` -> ``NoScriptError("No matching script")``)."""
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    code, _, rest = text.partition(" ")
    kind = ERRORS.get(code)
    return ResponseError(text) if kind is None else kind(rest)


class _Waiter(Protocol):
    """Whoever gets the reply of one command written to the wire."""

    def answer(self, reply: Any) -> _Call | None:
        """Take the reply; return a call to send again as EVAL (NOSCRIPT), else None."""

    def fail(self, error: Exception) -> None:
        """The reply will never come (connection lost)."""


class _Call:
    """A script call (``name``), or a plain command (``name`` None, ``args`` the command)."""

    __slots__ = ("args", "future", "held", "keys", "name", "replicas", "retried")

    def __init__(
        self,
        name: str | None,
        keys: Sequence[str],
        args: Sequence[Arg],
        future: asyncio.Future[Any],
        replicas: Replicas | None = None,
    ) -> None:
        self.name = name
        self.keys = keys
        self.args = args
        self.future = future
        self.retried = False
        self.replicas = replicas  # set: the reply waits for the WAIT written after the call
        self.held: Any = UNANSWERED

    def command(self, verb: str, publish: str) -> tuple[Any, ...]:
        """The command to write: EVALSHA or EVAL for a script of the ``publish`` catalogue,
        else the command itself."""
        name = self.name
        if name is None:
            return tuple(self.args)
        script = sha(name, publish) if verb == "EVALSHA" else source(name, publish)
        return (verb, script, len(self.keys), *self.keys, *self.args)

    def answer(self, reply: Any) -> _Call | None:
        if isinstance(reply, NoScriptError) and self.name is not None and not self.retried:
            self.retried = True
            return self
        if self.replicas is not None:
            self.held = reply  # handed out by the _Wait after it
        else:
            self.settle(reply)
        return None

    def fail(self, error: Exception) -> None:
        self.settle(error)

    def settle(self, reply: Any) -> None:
        settle(self.future, reply)


class _Wait:
    """The reply to the WAIT written after the calls run with replicas: it hands them their
    replies. A call sent again as EVAL (NOSCRIPT) has none yet: the WAIT after the EVAL covers it.
    """

    __slots__ = ("calls",)

    def __init__(self, calls: list[_Call]) -> None:
        self.calls = calls

    def answer(self, reply: Any) -> None:
        for call in self.calls:
            if call.held is not UNANSWERED:
                assert call.replicas is not None
                call.settle(replicated(call.held, reply, call.replicas))

    def fail(self, error: Exception) -> None:
        for call in self.calls:
            call.settle(error)


class _Load:
    """The reply to SCRIPT LOAD: on an error the script is not known on this connection."""

    __slots__ = ("known", "name")

    def __init__(self, name: str, known: set[str]) -> None:
        self.name = name
        self.known = known

    def answer(self, reply: Any) -> None:
        if isinstance(reply, BaseException):
            self.known.discard(self.name)

    def fail(self, error: Exception) -> None:
        pass


class _Reply:
    """The reply to a handshake command, awaited by the connecting task."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future

    def answer(self, reply: Any) -> None:
        if not self.future.done():
            self.future.set_result(reply)

    def fail(self, error: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class Sender(asyncio.Protocol):
    """A Redis connection of ours, made by ``open_connection``: commands go out with ``send``,
    replies are parsed by hiredis as bytes arrive, and each reply to a command goes to its waiter
    in order. ``_Wire`` (the calls) and ``_Subscriber`` (a subscription) build on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=reply_error, notEnoughData=MORE)
        self.waiting: deque[_Waiter] = deque()  # one per command written, in write order
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.trouble = ""  # why we dropped the connection ourselves

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, data: bytes, waiters: Sequence[_Waiter]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            # The bytes would be dropped and the replies never come: fail them now.
            error = RedisConnectionError("Connection to Redis closed")
            for waiter in waiters:
                waiter.fail(error)
            return
        transport.write(data)
        self.waiting.extend(waiters)

    def ended(self, error: Exception) -> None:
        """The connection is gone: every reply still owed fails with ``error``."""
        while self.waiting:
            self.waiting.popleft().fail(error)
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self, trouble: str) -> None:
        self.trouble = trouble
        if self.transport is not None:
            self.transport.abort()


class _Wire(Sender):
    """The calls' connection: each reply settles the oldest call, NOSCRIPT ones are sent again as
    EVAL."""

    def __init__(self, owner: FastTransport) -> None:
        super().__init__()
        self.owner = owner
        self.known: set[str] = set()  # scripts loaded (or being loaded) on this connection
        self.writable = True
        self.reads = 0  # data_received calls: progress, for the stall watchdog
        self.silent = False  # dropped by the watchdog: Redis stopped answering
        self.lost_reason = ""
        self._watchdog: asyncio.TimerHandle | None = None

    def watch(self, timeout: float, reads: int = -1, silent: int = 0) -> None:
        """Drop the connection when replies were owed for a whole ``timeout`` with no data in
        between (Redis hung, or the peer vanished without a reset): their calls fail. It looks
        WATCH_STEPS times per ``timeout`` (``silent``: how many looks in a row found replies
        owed and nothing read since the last), so that is noticed within 1 + 1/WATCH_STEPS of
        it."""
        if self.waiting and self.reads == reads:
            silent += 1
            if silent > WATCH_STEPS:
                self.silent = True
                self.abort(f"no reply from Redis for {timeout:g} s")
                return
        else:
            silent = 0
        loop = asyncio.get_running_loop()
        step = timeout / WATCH_STEPS
        self._watchdog = loop.call_later(step, self.watch, timeout, self.reads, silent)

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        self.reads += 1
        reader.feed(data)
        retry: list[_Call] = []
        try:
            while (reply := reader.gets()) is not MORE:
                again = waiting.popleft().answer(reply)
                if again is not None:
                    retry.append(again)
        except (hiredis.ProtocolError, IndexError):  # garbage, or a reply nobody asked for
            self.abort("Redis sent a reply out of protocol")
            return
        if retry:
            self.owner._resend(self, retry)
        elif not waiting:
            self.owner._flush()  # the calls held back while this write was answered

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable = False
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.owner._lost(self)
        reason = self.trouble or f"Lost the connection to Redis ({exc or 'closed'})"
        self.lost_reason = reason
        self.ended(RedisConnectionError(reason))

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self.owner._flush()


class _Subscriber(Sender):
    """A subscription: a connection of its own, parsed by hiredis as bytes arrive.

    Replies to our own commands (the handshake) go to their waiters; once subscribed, every
    message is a push: payloads go to ``on_message``, the subscription's confirmation to
    ``on_live``. A connection that stays silent for ``health_s`` gets a PING; one that answers
    nothing for another ``health_s`` is dropped (its owner resubscribes and resyncs).
    """

    def __init__(
        self, on_message: OnMessage, on_live: Callable[[], None] | None, health_s: float
    ) -> None:
        super().__init__()
        self.on_message = on_message
        self.on_live = on_live
        self.health_s = health_s
        self.trouble = "closed by Redis"
        self.heard = True
        self.pinged = False
        self._health: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._health = asyncio.get_running_loop().call_later(self.health_s, self._check)

    def data_received(self, data: bytes) -> None:
        self.heard = True
        reader, on_message = self.reader, self.on_message
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not MORE:
                kind = reply[0] if isinstance(reply, list) and reply else None
                if kind == b"pmessage":
                    on_message(reply[3])
                elif kind == b"message":
                    on_message(reply[2])
                elif kind in (b"psubscribe", b"subscribe"):
                    # Redis has the subscription: no message published from now on is missed.
                    if self.on_live is not None:
                        self.on_live()
                elif self.waiting:
                    self.waiting.popleft().answer(reply)
        except hiredis.ProtocolError:
            self.abort("Redis sent a reply out of protocol")

    def _check(self) -> None:
        if self.heard:
            self.heard = self.pinged = False
        elif not self.pinged:
            self.pinged = True
            self.send(pack([("PING",)]), [])  # answered as a push while subscribed
        else:
            self.abort(f"no answer from Redis for {self.health_s * 2:g} s")
            return
        self._health = asyncio.get_running_loop().call_later(self.health_s, self._check)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._health is not None:
            self._health.cancel()
        self.ended(RedisConnectionError(f"Lost the connection to Redis ({exc or self.trouble})"))


class FastTransport:
    """Every call of the process on one dedicated connection; concurrent calls share writes.

    The connection settings are a redis-py client's (``like``); replies come as Redis sends
    them, bulk strings as bytes, whatever the client's ``decode_responses``.

    A Redis that stops answering (the watchdog dropped the connection, or a new connection's
    handshake timed out) fails every call at once until a probe (a new connection, its
    handshake ending with a PING) gets through (seatlock/failfast.py): each request would
    otherwise wait a whole timeout for it. A Redis that refuses connections is asked again by
    the next call as before: a refusal costs nothing to wait for.

    ``publish``: the catalogue of the scripts (``scripts.source``); the cluster transport gives
    each primary a connection of this kind (``ClusterTransport``), with its own catalogue.
    """

    def __init__(
        self, options: Mapping[str, Any], tls: bool, publish: str = PUBLISH, name: str = "Redis"
    ) -> None:
        self._options, self._tls = options, tls
        self._publish = publish
        self._queue: deque[_Call] = deque()  # made, not yet written
        self._timer = ScriptTimer()
        self._wire: _Wire | None = None
        self._opening = False
        self._flush_soon = False
        self._life: asyncio.Task[None] | None = None  # the current connection's lifetime
        self._lost_at: float | None = None  # when the last connection was lost (monotonic)
        self._fail_fast = FailFast(name, self._open_and_close, logger)
        self.db = int(options.get("db") or 0)
        self.pipelines = 0  # socket writes so far (tests and stats)
        self.calls = 0  # commands written so far

    @classmethod
    def like(cls, redis: Redis) -> FastTransport:
        return cls(*client_options(redis))

    async def run(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[int | str],
        replicas: Replicas | None = None,
    ) -> list[Any]:
        if name not in _NAMES:
            raise ValueError(f"no script {name!r}")
        if self._timer.due():
            return list(await self._timer.time(name, self.submit(name, keys, args, replicas)))
        return list(await self.submit(name, keys, args, replicas))

    async def command(self, *args: Arg) -> Any:
        return await self.submit(None, (), args)

    @property
    def answering(self) -> bool:
        """False from a timeout (Redis went silent) until a probe gets an answer again."""
        return self._fail_fast.answering

    def submit(
        self,
        name: str | None,
        keys: Sequence[str],
        args: Sequence[Arg],
        replicas: Replicas | None = None,
    ) -> asyncio.Future[Any]:
        """A script call (``name``) or a plain command (``name`` None, ``args`` the command),
        queued: the future of its reply, which is an error reply's exception when Redis refused
        it. Raises RedisConnectionError at once while Redis is not answering or too many calls
        wait."""
        if not self._fail_fast.answering:
            REDIS_NOT_ANSWERING.inc()
            raise RedisConnectionError("Redis is not answering")
        wire = self._wire
        if len(self._queue) + (len(wire.waiting) if wire else 0) >= MAX_QUEUE:
            raise RedisConnectionError("Too many calls waiting for Redis")
        loop = asyncio.get_running_loop()
        call = _Call(name, keys, args, loop.create_future(), replicas)
        self._queue.append(call)
        if not self._flush_soon:
            self._schedule_flush(loop)
        return call.future

    async def subscribe(
        self,
        channel: str,
        on_message: OnMessage,
        *,
        pattern: bool = False,
        on_live: Callable[[], None] | None = None,
        health_s: float = HEALTH_S,
    ) -> _Subscriber:
        feed = await open_connection(
            self._options, self._tls, lambda: _Subscriber(on_message, on_live, health_s)
        )
        feed.send(pack([("PSUBSCRIBE" if pattern else "SUBSCRIBE", channel)]), [])
        return feed

    async def aclose(self) -> None:
        """Close the connection; pending calls fail, the next call connects again."""
        await self._fail_fast.aclose()
        wire, life = self._wire, self._life
        if life is not None:
            life.cancel()
            await asyncio.gather(life, return_exceptions=True)
        if wire is not None:
            await wire.closed  # the socket is closed once connection_lost has run

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        # Runs after every callback already ready: the calls made in this iteration go out in
        # one write.
        self._flush_soon = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        wire = self._wire
        if wire is None:
            if self._queue and not self._opening:
                self._opening = True
                self._life = asyncio.get_running_loop().create_task(self._connection())
            return
        queue = self._queue
        # One write in flight at a time: calls made meanwhile wait for its replies and go out
        # together (data_received flushes them). Under load this makes a few large writes per
        # round trip instead of one small write per loop iteration, which costs both sides a
        # socket write and Redis a read per write.
        while queue and wire.writable and not wire.waiting:
            size = min(len(queue), MAX_BATCH)
            batch = [c for c in (queue.popleft() for _ in range(size)) if not c.future.done()]
            if batch:
                self._send(wire, batch)

    def _send(self, wire: _Wire, batch: list[_Call]) -> None:
        # Scripts not yet known on this connection are loaded at the head of the same write:
        # a NOSCRIPT retry would run its call after later calls.
        known = wire.known
        fresh = sorted({c.name for c in batch if c.name is not None} - known)
        commands = [("SCRIPT", "LOAD", source(name, self._publish)) for name in fresh]
        commands += [c.command("EVALSHA", self._publish) for c in batch]
        waiters: list[_Waiter] = [_Load(name, known) for name in fresh]
        waiters += batch
        known.update(fresh)  # loads in flight precede every later command on this connection
        _add_wait(batch, commands, waiters)
        self._write(wire, commands, waiters)

    def _resend(self, wire: _Wire, calls: list[_Call]) -> None:
        # NOSCRIPT: SCRIPT FLUSH while connected (a restart drops the connection, and a new
        # connection knows no script). EVAL sends the text again; only these calls run late.
        wire.known.clear()
        commands = [c.command("EVAL", self._publish) for c in calls]
        waiters: list[_Waiter] = list(calls)
        _add_wait(calls, commands, waiters)
        self._write(wire, commands, waiters)

    def _write(
        self, wire: _Wire, commands: list[tuple[Any, ...]], waiters: Sequence[_Waiter]
    ) -> None:
        self.pipelines += 1
        self.calls += len(commands)
        wire.send(pack(commands), waiters)

    def _lost(self, wire: _Wire) -> None:
        if wire.silent:  # Redis went silent: refused from now on, its calls' errors included
            self._fail_fast.timed_out()
        if self._wire is wire:
            self._wire = None
            if self._queue and not self._flush_soon:  # calls held back while writing paused
                self._schedule_flush(asyncio.get_running_loop())

    async def _connection(self) -> None:
        """Connect, send what waits, and hold the connection until it closes."""
        try:
            wire = await self._open()
        except Exception as exc:
            self._opening = False
            if self._lost_at is None:  # the first failed attempt of an outage is logged
                self._lost_at = time.monotonic()
                logger.warning("cannot connect to Redis: %r", exc)
            self._fail_queue(_refused(exc))
            if isinstance(exc, TimeoutError):  # no answer, where a refusal would be quick
                self._fail_fast.timed_out()
            return
        except BaseException:  # cancelled (loop shutting down)
            self._opening = False
            self._fail_queue(RedisConnectionError("Redis transport stopped"))
            raise
        self._opening = False
        self._wire = wire
        if self._lost_at is not None:
            down_s, self._lost_at = time.monotonic() - self._lost_at, None
            logger.warning("connection to Redis restored after %.1f s", down_s)
        if timeout := self._options.get("socket_timeout"):
            wire.watch(timeout)
        try:
            self._flush()
            await asyncio.shield(wire.closed)  # a cancel of this task leaves it to others
            if wire.silent:  # the calls queued behind the unanswered ones waited as long: 503
                self._fail_queue(RedisConnectionError(wire.lost_reason))
        except BaseException:  # cancelled: the loop is shutting down, or aclose()
            self._fail_queue(RedisConnectionError("Redis transport stopped"))
            raise
        finally:
            self._lost(wire)
            wire.close()  # never leave the socket open
        # Lost, not closed by us: calls fail (503) until a call connects again, or at once until
        # the probe gets through when Redis went silent. One line per lost connection; the
        # attempts in between are not logged (api/errors.py logs the 503s).
        self._lost_at = time.monotonic()
        logger.warning("lost the connection to Redis: %s", wire.lost_reason or "closed")

    async def _open_and_close(self) -> None:
        """The probe: a connection whose handshake (ending with a PING) Redis answers; the next
        call connects as usual."""
        (await self._open()).close()

    def _fail_queue(self, error: Exception) -> None:
        while self._queue:
            self._queue.popleft().settle(error)

    async def _open(self) -> _Wire:
        return await open_connection(self._options, self._tls, lambda: _Wire(self))


def _add_wait(batch: list[_Call], commands: list[tuple[Any, ...]], waiters: list[_Waiter]) -> None:
    """One WAIT after the batch when some of its calls were run with replicas. This connection
    carries every call of the process, so the WAIT counts each write of the batch (and of the
    batches before it, already answered)."""
    wanted = [c.replicas for c in batch if c.replicas is not None]
    if wanted:
        commands.append(wait_command(wanted))
        waiters.append(_Wait([c for c in batch if c.replicas is not None]))


SenderT = TypeVar("SenderT", bound=Sender)


def client_options(redis: Redis) -> tuple[Mapping[str, Any], bool]:
    """The connection settings of a redis-py client, and whether it uses TLS."""
    pool = redis.connection_pool
    return pool.connection_kwargs, issubclass(pool.connection_class, SSLConnection)


async def open_connection(
    options: Mapping[str, Any], tls: bool, factory: Callable[[], SenderT]
) -> SenderT:
    """A connection like the client's (address, TLS, credentials, db, name), handshake done."""
    timeout = options.get("socket_connect_timeout") or CONNECT_TIMEOUT
    async with asyncio.timeout(timeout):
        wire = await _dial(options, tls, factory)
        try:
            await _handshake(wire, options)
        except BaseException:
            wire.close()
            raise
    return wire


async def _dial(options: Mapping[str, Any], tls: bool, factory: Callable[[], SenderT]) -> SenderT:
    loop = asyncio.get_running_loop()
    path = options.get("path")
    if path:
        _, wire = await loop.create_unix_connection(factory, path)
        return wire
    host, port = options.get("host", "localhost"), int(options.get("port", 6379))
    context = _tls_context(options) if tls else None
    transport, wire = await loop.create_connection(factory, host, port, ssl=context)
    sock = transport.get_extra_info("socket")
    if sock is not None:  # a dead peer is noticed even while no call waits
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return wire


async def _handshake(wire: Sender, options: Mapping[str, Any]) -> None:
    """AUTH, SELECT and CLIENT SETNAME as the redis-py client would, then PING: a connection is
    open once Redis has answered on it (the kernel accepts a connection for a Redis that is
    stopped or hung, which then answers nothing). Any error refuses."""
    commands: list[tuple[Any, ...]] = []
    username, password = await _credentials(options)
    if password:
        commands.append(("AUTH", username, password) if username else ("AUTH", password))
    if options.get("db"):
        commands.append(("SELECT", int(options["db"])))
    if options.get("client_name"):
        commands.append(("CLIENT", "SETNAME", options["client_name"]))
    commands.append(("PING",))
    loop = asyncio.get_running_loop()
    replies = [_Reply(loop.create_future()) for _ in commands]
    wire.send(pack(commands), replies)
    for command, reply in zip(commands, replies, strict=True):
        answer = await reply.future
        if isinstance(answer, BaseException):
            raise RedisConnectionError(f"Redis refused {command[0]}: {answer}")


async def _credentials(options: Mapping[str, Any]) -> tuple[str | None, str | None]:
    provider = options.get("credential_provider")
    if provider is None:
        return options.get("username"), options.get("password")
    given = await provider.get_credentials_async()
    return (None, given[0]) if len(given) == 1 else (given[0], given[1])


def _tls_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    """The context redis-py's SSLConnection would build from the same ``ssl_*`` options."""
    settings: dict[str, Any] = {"cert_reqs": "required", "check_hostname": True}
    settings.update((k[4:], v) for k, v in options.items() if k.startswith("ssl_"))
    return RedisSSLContext(**settings).get()


def _refused(exc: Exception) -> Exception:
    if isinstance(exc, RedisConnectionError):
        return exc
    return RedisConnectionError(f"Cannot connect to Redis: {exc!r}")


class _Bulks(dict[Any, bytes]):
    """Arguments seen lately (key names, SHAs, ids) and their RESP bulk strings, made on a miss.

    Looked up through ``map`` in ``pack``, so a command's arguments cost no Python-level loop:
    ~40 % less CPU per hold script than a loop of ``get`` calls. A key equal to another (1, 1.0,
    True) packs the same: every argument goes through int() or is a str/bytes.
    """

    def __missing__(self, arg: Any) -> bytes:
        bulk = _bulk(arg)
        if len(self) >= _MAX_BULKS:  # clock readings never repeat: start over
            self.clear()
        self[arg] = bulk
        return bulk


_BULKS = _Bulks()


def pack(commands: list[tuple[Any, ...]]) -> bytes:
    """RESP arrays of bulk strings (our arguments are only str, bytes and int): one buffer, built
    several times faster than the client's general-purpose packer."""
    out: list[bytes] = []
    append, extend, bulk = out.append, out.extend, _BULKS.__getitem__
    for command in commands:
        append(b"*%d\r\n" % len(command))
        extend(map(bulk, command))
    return b"".join(out)


def _bulk(arg: str | bytes | int) -> bytes:
    if isinstance(arg, str):
        data = arg.encode()
    elif isinstance(arg, bytes):
        data = arg
    else:
        data = b"%d" % int(arg)  # ints only: a float or bool is a caller's bug
    return b"$%d\r\n%s\r\n" % (len(data), data)
