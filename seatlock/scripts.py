"""The Lua scripts of ``lua/``, called by SHA through an auto-pipelining dispatcher.

Every script call made while the previous pipeline is on the wire (or in the same event-loop
iteration) is queued and sent by a single flusher as one pipeline of EVALSHA commands on one
connection, so N concurrent holds cost one round trip and one socket write instead of N. Redis
runs a pipeline's commands in the order sent and there is one flusher per ``Scripts``, so the
calls of one process reach Redis in the order they were made (per screening and overall).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections import deque
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

NAMES = (
    "hold",
    "extend",
    "release",
    "claim",
    "sell",
    "unsell",
    "expire",
    "sweep",
    "load",
    "refresh",
    "forget",
    "seatmap",
)
PRELUDE = "lib"
MAX_BATCH = 512  # calls per pipeline: bounds one write and the replies read before the next
MAX_QUEUE = 20_000  # calls waiting; beyond this, callers get an error (Redis cannot keep up)


class Status(IntEnum):
    """The first element of every script's reply (the constants at the top of ``lua/lib.lua``)."""

    OK = 0
    NOT_LOADED = 1
    STARTED = 2
    UNKNOWN = 3
    BOOKED = 4
    TAKEN = 5
    TOO_MANY = 6
    NOT_HELD = 7
    EXPIRED = 8


def lua_dir() -> Path:
    """``lua/`` next to the package in a checkout, ``seatlock/lua`` in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "lua", here.parent / "lua"):
        if (candidate / f"{PRELUDE}.lua").is_file():
            return candidate
    raise FileNotFoundError(f"no Lua scripts next to {here}")


@functools.cache
def source(name: str) -> str:
    """The text sent to Redis: the shared prelude, then the script itself."""
    folder = lua_dir()
    prelude = (folder / f"{PRELUDE}.lua").read_text()
    return prelude + "\n" + (folder / f"{name}.lua").read_text()


@functools.cache
def sha(name: str) -> str:
    return hashlib.sha1(source(name).encode()).hexdigest()


class _Call:
    __slots__ = ("args", "future", "keys", "name")

    def __init__(
        self, name: str, keys: Sequence[str], args: Sequence[int | str], future: asyncio.Future[Any]
    ) -> None:
        self.name = name
        self.keys = keys
        self.args = args
        self.future = future

    def command(self, verb: str, script: str) -> tuple[Any, ...]:
        return (verb, script, len(self.keys), *self.keys, *self.args)

    def settle(self, reply: Any) -> None:
        if self.future.done():  # the caller was cancelled
            return
        if isinstance(reply, BaseException):
            self.future.set_exception(reply)
        else:
            self.future.set_result(reply)


class Scripts:
    """Every script of ``lua/`` on one client; concurrent calls share pipelines."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queue: deque[_Call] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._conn: AbstractConnection | None = None
        self._known: set[str] = set()  # scripts loaded since self._conn connected
        self.pipelines = 0  # round trips sent so far (tests and stats)
        self.calls = 0

    async def run(self, name: str, keys: Sequence[str], args: Sequence[int | str]) -> list[Any]:
        if len(self._queue) >= MAX_QUEUE:
            raise RedisConnectionError("Too many script calls waiting for Redis")
        if name not in NAMES:
            raise ValueError(f"no script {name!r}")
        loop = asyncio.get_running_loop()
        call = _Call(name, keys, args, loop.create_future())
        self._queue.append(call)
        if self._flusher is None:
            # Started now, it first runs in the next loop iteration: every call made in this one
            # is already queued by then and goes out in the same pipeline.
            self._flusher = loop.create_task(self._flush())
        return list(await call.future)

    async def _flush(self) -> None:
        try:
            while self._queue:
                size = min(len(self._queue), MAX_BATCH)
                batch = [self._queue.popleft() for _ in range(size)]
                await self._send(batch)
        except BaseException:  # cancelled (loop shutting down): nobody will send the rest
            error = RedisConnectionError("Script dispatcher stopped")
            while self._queue:
                self._queue.popleft().settle(error)
            raise
        finally:
            # No await between the emptiness check above and this: a call queued later finds
            # no flusher and starts one.
            self._flusher = None

    async def _send(self, batch: list[_Call]) -> None:
        try:
            conn = await self._connection()
            # Scripts not yet known on this connection are loaded at the head of the same
            # pipeline: a NOSCRIPT retry would run its call after later calls of the batch.
            fresh = sorted({c.name for c in batch} - self._known)
            commands = [("SCRIPT", "LOAD", source(name)) for name in fresh]
            commands += [c.command("EVALSHA", sha(c.name)) for c in batch]
            await self._write(conn, commands)
            for name in fresh:
                if _ok(await _read(conn)):
                    self._known.add(name)
            missing = await self._settle(conn, batch)
            if missing:
                # SCRIPT FLUSH while connected (a restart drops the connection, which resets
                # _known): EVAL sends the text again. Only these calls run late, out of order.
                self._known.clear()
                await self._write(conn, [c.command("EVAL", source(c.name)) for c in missing])
                await self._settle(conn, missing)
        except BaseException as exc:
            # Calls already answered keep their answer; the rest get the error (their scripts
            # may or may not have run, as with any lost reply).
            await self._drop_connection()
            error = exc if isinstance(exc, Exception) else RedisConnectionError("Cancelled")
            for call in batch:  # errors go to the callers, never out of the flusher
                call.settle(error)
            if not isinstance(exc, Exception):
                raise

    async def _write(self, conn: AbstractConnection, commands: list[tuple[Any, ...]]) -> None:
        self.pipelines += 1
        self.calls += len(commands)
        await conn.send_packed_command(pack(commands), check_health=False)

    async def _settle(self, conn: AbstractConnection, calls: list[_Call]) -> list[_Call]:
        """Read one reply per call and hand it over at once; returns the calls Redis refused
        with NOSCRIPT (not run)."""
        missing: list[_Call] = []
        for call in calls:
            reply = await _read(conn)
            if isinstance(reply, NoScriptError):
                missing.append(call)
            else:
                call.settle(reply)
        return missing

    async def _connection(self) -> AbstractConnection:
        if self._conn is None:
            pool = self._redis.connection_pool
            self._conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        return self._conn

    async def _drop_connection(self) -> None:
        # After a failure mid-pipeline, replies may still be in flight: never reuse the socket.
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._known.clear()
            await conn.disconnect(nowait=True)
            await self._redis.connection_pool.release(conn)


def pack(commands: list[tuple[Any, ...]]) -> bytes:
    """RESP arrays of bulk strings (our arguments are only str and int): one buffer, built several
    times faster than the client's general-purpose packer."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, bytes):
                data = arg
            else:
                data = str(int(arg)).encode()  # ints only: a float or bool is a caller's bug
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def _read(conn: AbstractConnection) -> Any:
    try:
        return await conn.read_response()
    except ResponseError as exc:  # this command's own error; the connection stays in sync
        return exc


def _ok(reply: Any) -> bool:
    return not isinstance(reply, BaseException)
