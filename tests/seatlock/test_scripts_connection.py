"""The transports' own connections: replies in order, errors apart, outages survived."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from seatlock import keys
from seatlock.engine.errors import SeatsUnavailable
from seatlock.engine.scripts import Status
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import Transport, open_transport
from seatlock.engine.wire import MAX_BATCH, FastTransport
from seatlock.errors import Unavailable
from seatlock.server.embedded import EmbeddedRedis
from tests.lua.support import DictSource, Transports, engine_url, make_engine

S = 901
SEATS = list(range(1, 2001))


@pytest.fixture
def source() -> DictSource:
    source = DictSource()
    source.add(S, SEATS)
    return source


@pytest.fixture
def engine(transport: Transport, source: DictSource) -> SeatEngine:
    return make_engine(transport, source, max_seats_per_user=len(SEATS))


def pipelines(engine: SeatEngine) -> int:
    """Writes (fast) or pipelines (redis-py) sent so far: round trips."""
    sent: int = getattr(engine.transport, "pipelines")  # noqa: B009  (not in the interface)
    return sent


async def hold_or_taken(engine: SeatEngine, user: int, seat: int) -> int | str:
    """The seat held, or "taken": a reply handed to the wrong caller shows as a mismatch."""
    try:
        holds = await engine.hold(S, user, [seat])
    except SeatsUnavailable:
        return "taken"
    assert [h.user_id for h in holds] == [user]
    return holds[0].seat_id


async def answered_again(call: Any, within: float = 3.0) -> Any:
    """``call()``'s answer once Redis answers again: a transport that found Redis not answering
    fails calls at once until its probe gets through (a pause of PROBE_PAUSE_S at most)."""
    async with asyncio.timeout(within):
        while True:
            try:
                return await call()
            except (Unavailable, RedisConnectionError):
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def fast_transport(
    own_redis: EmbeddedRedis, socket_timeout: float, socket_connect_timeout: float
) -> AsyncIterator[tuple[FastTransport, int]]:
    """A fast transport to ``own_redis`` with a client's timeouts, and the server's pid to stop;
    on the way out the server goes on (SIGCONT) and both close."""
    assert own_redis.proc is not None
    client = Redis.from_url(
        own_redis.url, socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout
    )
    transport = FastTransport.like(client)
    try:
        yield transport, own_redis.proc.pid
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        await transport.aclose()
        await client.aclose()


async def refused_at_once_then_answered(transport: FastTransport, pid: int) -> None:
    """Redis (``pid``, stopped) known not to answer: a call fails at once, not after another
    timeout; once Redis goes on, the transport answers again."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RedisConnectionError, match="not answering"):
        await transport.command("PING")
    assert loop.time() - started < 0.1
    os.kill(pid, signal.SIGCONT)
    assert await answered_again(lambda: transport.command("PING")) == b"PONG"


def expected(seats: range, taken: set[int]) -> list[int | str]:
    return ["taken" if seat in taken else seat for seat in seats]


async def test_replies_reach_their_callers_under_many_concurrent_calls(
    engine: SeatEngine,
) -> None:
    taken = set(range(2, 2001, 3))
    await engine.hold(S, 1, sorted(taken))
    seats = range(1, 2001)
    before = pipelines(engine)
    got = await asyncio.gather(*(hold_or_taken(engine, 10 + s, s) for s in seats))
    assert got == expected(seats, taken)
    assert pipelines(engine) - before <= len(seats) // MAX_BATCH + 2


async def test_a_redis_error_fails_only_its_own_call(redis: Redis, engine: SeatEngine) -> None:
    await engine.seat_map(S)
    await redis.set("sl:test:not-a-hash", "x")  # HGET on it inside the script: WRONGTYPE
    broken = engine.transport.run("hold", ["sl:test:not-a-hash"], [S, 0])
    calls: list[Any] = [hold_or_taken(engine, 10 + s, s) for s in range(1, 301)]
    calls[100:100] = [broken]
    calls[200:200] = [engine.transport.run("no-such-script", [], [])]
    got = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(got[100], ResponseError)
    assert isinstance(got[200], ValueError)
    assert got[:100] + got[101:200] + got[201:] == list(range(1, 301))


async def test_calls_run_after_a_script_flush_on_the_open_connection(
    redis: Redis, engine: SeatEngine
) -> None:
    await engine.hold(S, 1, [1])  # hold is loaded on the transport's connection
    reloads = await _reload_calls(redis, engine.transport)
    await redis.script_flush()
    got = await asyncio.gather(*(hold_or_taken(engine, 10 + s, s) for s in range(1, 101)))
    assert got == expected(range(1, 101), {1})
    assert await _reload_calls(redis, engine.transport) > reloads  # NOSCRIPT was answered
    assert await hold_or_taken(engine, 9, 200) == 200  # and the script is loaded again


async def _reload_calls(redis: Redis, transport: Transport) -> int:
    """How the transport answers NOSCRIPT: the fast one sends EVAL, redis-py loads the script."""
    fast = isinstance(transport, FastTransport)
    names = {"cmdstat_eval"} if fast else {"cmdstat_script", "cmdstat_script|load"}  # Redis 7
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in names)


@pytest.mark.parametrize("turns", [1, 2], ids=["cancelled-queued", "cancelled-on-the-wire"])
async def test_a_cancelled_caller_does_not_shift_replies(engine: SeatEngine, turns: int) -> None:
    taken = set(range(1, 200, 2))
    await engine.hold(S, 1, sorted(taken))
    seats = range(1, 200)
    calls = [asyncio.ensure_future(hold_or_taken(engine, 10 + s, s)) for s in seats]
    for _ in range(turns):  # one turn: queued; two: written, its reply still to come
        await asyncio.sleep(0)
    calls[50].cancel()
    got = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(got[50], asyncio.CancelledError)
    assert got[:50] + got[51:] == expected(seats, taken)[:50] + expected(seats, taken)[51:]
    assert await hold_or_taken(engine, 9, 300) == 300  # the connection is still in step


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test alone, to stop and kill."""
    server = EmbeddedRedis(tmp_path / "redis", persistent=False)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture
async def own_engine(
    own_redis: EmbeddedRedis, source: DictSource, transports: Transports
) -> AsyncIterator[SeatEngine]:
    client = Redis.from_url(own_redis.url)
    yield make_engine(transports(client), source, max_seats_per_user=len(SEATS))
    await client.aclose()


async def test_redis_killed_mid_run_fails_pending_calls_then_later_calls_reconnect(
    own_redis: EmbeddedRedis, own_engine: SeatEngine
) -> None:
    assert own_redis.proc is not None
    assert await hold_or_taken(own_engine, 9, 1) == 1
    os.kill(own_redis.proc.pid, signal.SIGSTOP)  # the calls below reach the socket, unanswered
    pending = [asyncio.ensure_future(hold_or_taken(own_engine, 10 + s, s)) for s in range(2, 50)]
    await asyncio.sleep(0.1)
    assert not any(call.done() for call in pending)
    os.kill(own_redis.proc.pid, signal.SIGKILL)
    async with asyncio.timeout(5):
        got = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(g, Unavailable) for g in got), got
    own_redis.proc.wait()
    with pytest.raises(Unavailable):  # refused while down
        await own_engine.hold(S, 9, [60])
    await asyncio.to_thread(own_redis.start)  # same port, empty: the screening is reloaded
    got = await asyncio.gather(*(hold_or_taken(own_engine, 10 + s, s) for s in range(2, 50)))
    assert got == list(range(2, 50))


async def test_a_hung_redis_fails_the_waiting_calls_after_the_socket_timeout(
    own_redis: EmbeddedRedis, source: DictSource, transports: Transports
) -> None:
    assert own_redis.proc is not None
    client = Redis.from_url(own_redis.url, socket_timeout=0.3)
    engine = make_engine(transports(client), source, max_seats_per_user=len(SEATS))
    try:
        assert await hold_or_taken(engine, 9, 1) == 1
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        pending = [asyncio.ensure_future(hold_or_taken(engine, 10 + s, s)) for s in range(2, 9)]
        async with asyncio.timeout(2):
            got = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(g, Unavailable) for g in got), got
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        assert await answered_again(lambda: hold_or_taken(engine, 10, 20)) == 20  # a new connection
    finally:
        await client.aclose()


async def test_calls_queued_behind_a_silent_redis_fail_with_the_calls_it_owes(
    own_redis: EmbeddedRedis,
) -> None:
    """The calls made while a write waits for its replies are held back (one write in flight);
    when the watchdog drops the connection of a Redis that stopped answering, they have waited
    as long and fail with the written ones, instead of waiting a whole timeout again on the
    next connection."""
    async with fast_transport(own_redis, socket_timeout=0.3, socket_connect_timeout=2) as (
        transport,
        pid,
    ):
        assert await transport.command("PING") == b"PONG"
        os.kill(pid, signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        failed: list[tuple[float, BaseException | None]] = []

        async def ping() -> None:
            try:
                await transport.command("PING")
            except RedisConnectionError as exc:
                failed.append((loop.time(), exc))

        first = asyncio.ensure_future(ping())
        await asyncio.sleep(0.05)  # written, its reply owed
        behind = [asyncio.ensure_future(ping()) for _ in range(3)]
        async with asyncio.timeout(5):
            await asyncio.gather(first, *behind)
        assert len(failed) == 4
        assert all("no reply from Redis" in str(exc) for _, exc in failed), failed
        assert max(t for t, _ in failed) - min(t for t, _ in failed) < 0.1
        await refused_at_once_then_answered(transport, pid)


async def test_a_connection_to_a_silent_redis_is_not_taken_for_a_working_one(
    own_redis: EmbeddedRedis,
) -> None:
    """The kernel accepts a connection for a stopped Redis: the connection counts as open only
    once Redis has answered its handshake (PING), so calls fail within the connect timeout,
    not after another watchdog period on a connection that was never working."""
    async with fast_transport(own_redis, socket_timeout=5, socket_connect_timeout=0.3) as (
        transport,
        pid,
    ):
        os.kill(pid, signal.SIGSTOP)
        async with asyncio.timeout(3):  # the watchdog would take 5 to 10 s
            with pytest.raises(RedisConnectionError, match="Cannot connect"):
                await transport.command("PING")
        await refused_at_once_then_answered(transport, pid)


async def test_a_closed_transport_connects_again_on_the_next_call(engine: SeatEngine) -> None:
    assert await hold_or_taken(engine, 9, 1) == 1
    await engine.transport.aclose()
    assert await hold_or_taken(engine, 9, 2) == 2


async def test_auth_and_select_come_from_the_client(
    redis: Redis, backend_urls: tuple[str, str], transport_kind: str
) -> None:
    # the scripts publish seat events: since Redis 7 a new user may publish to no channel unless
    # granted (acl-pubsub-default resetchannels)
    user = {
        "enabled": True,
        "passwords": ["+s3cret"],
        "keys": "*",
        "channels": "*",
        "commands": ["+@all"],
    }
    await redis.acl_setuser("scripts-test", **user)
    url = engine_url(backend_urls[0]).replace("redis://", "redis://scripts-test:s3cret@")
    try:
        assert (await run_load(url, transport_kind))[0] == Status.OK
        assert await redis.hget(keys.screening_meta(S), "ready")  # in ENGINE_DB: SELECT ran
        with pytest.raises(RedisConnectionError, match=r"AUTH|password"):
            await run_load(url.replace("s3cret", "wrong"), transport_kind)
    finally:
        await redis.acl_deluser("scripts-test")


async def run_load(url: str, kind: str) -> list[Any]:
    """The load script for one seat, through a transport like a client made from ``url``."""
    client = Redis.from_url(url)
    transport = open_transport(kind, client)
    try:
        load_keys = [*keys.script_keys(S), keys.screening_deleted(S), keys.screening_rows(S)]
        return await transport.run("load", load_keys, [S, 0, 0, 500, 1, 0, 0, 1])
    finally:
        await transport.aclose()
        await client.aclose()


async def test_a_silent_server_times_out_the_connect() -> None:
    """The fast transport bounds connect and handshake together (redis-py bounds the connect
    alone: its handshake waits as long as ``socket_timeout``)."""

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(2):
            with pytest.raises(RedisConnectionError):
                await run_load(f"redis://127.0.0.1:{port}/3?socket_connect_timeout=0.2", "fast")
    finally:
        server.close()
        await server.wait_closed()
