"""A backing service that cannot answer is a 503 with Retry-After on every route, never a 500.

The server under test reaches PostgreSQL or Redis through a ``Gate``: a TCP relay that can be
shut like a host that died (every open connection cut, new ones refused), or muted like a server
that hangs (nothing passed on, connections kept open: the 503 then comes after the dependency's
timeout), while the real servers stay up for the rest of the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis.exceptions

from db.pool import DATABASE_DOWN
from seatlock.engine.transport import REDIS_DOWN
from seatlock.settings import Settings
from tests import factories as make
from tests.support import RESERVE, Account, LiveServer, make_account

BOOK = "/api/v1/tickets/book"
T = TypeVar("T")


class Gate:
    """A loopback TCP relay to ``target`` on a loop of its own (the live server blocks the
    test's loop while it starts); ``shut()`` cuts every connection and refuses new ones."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 0)
        self._parts = parts
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._writers: set[asyncio.StreamWriter] = set()
        self._open = self._call(_event())  # cleared: nothing is relayed either way (``mute``)
        self._server = self._call(asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.port: int = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """The target's URL with the gate's address in place of the target's."""
        netloc = self._parts.netloc.rsplit("@", 1)
        address = f"127.0.0.1:{self.port}"
        host = f"{netloc[0]}@{address}" if len(netloc) == 2 else address
        return urlunsplit(self._parts._replace(netloc=host))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            _pipe(reader, up_writer, self._open), _pipe(up_reader, writer, self._open)
        )

    def mute(self) -> None:
        """Relay nothing more, either way, connections kept open: a server that answers nothing
        (hung, or its packets dropped), unlike a dead host's refusals. ``unmute`` relays what
        waited."""
        self._loop.call_soon_threadsafe(self._open.clear)

    def unmute(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def shut(self) -> None:
        async def close() -> None:
            self._server.close()
            for writer in self._writers:
                writer.transport.abort()

        self._call(close())

    def cut(self) -> None:
        """End every open connection, as a restarting server does; new ones are let through."""

        async def cut() -> None:
            for writer in self._writers:
                writer.transport.abort()
            self._writers.clear()

        self._call(cut())

    def stop(self) -> None:
        self.shut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _event() -> asyncio.Event:
    opened = asyncio.Event()
    opened.set()
    return opened


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opened: asyncio.Event
) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            await opened.wait()
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


def _expect_503(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.request.method, r.request.url.path, r.status_code, r.text)
    assert r.headers["retry-after"] == "1"
    assert "detail" in r.json()


@pytest.fixture
def gated(
    make_server: Callable[..., LiveServer], base_settings: Settings
) -> Iterator[Callable[..., tuple[LiveServer, Gate]]]:
    """A server whose PostgreSQL (``"database_url"``) or Redis (``"redis_url"``) is behind a
    gate, which the test shuts or mutes; other settings as given."""
    gates: list[Gate] = []

    def start(setting: str, **changes: Any) -> tuple[LiveServer, Gate]:
        gate = Gate(getattr(base_settings, setting))
        gates.append(gate)
        return make_server(**{setting: gate.url}, **changes), gate

    yield start
    for gate in gates:
        gate.stop()


async def test_postgres_down_is_503_with_retry_after(
    gated: Callable[..., tuple[LiveServer, Gate]], db: asyncpg.Connection
) -> None:
    live, gate = gated("database_url")
    show = await make.show(db, 4)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        user = await make_account(client, "down@example.com", "Down")
        assert (await client.get("/api/v1/movies/")).status_code == 200
        gate.shut()
        login = {"email": user.email, "password": user.password}
        replies = [
            await client.get("/api/v1/movies/"),
            await client.get(f"/api/v1/screenings/{show.id}"),
            await client.post("/api/v1/auth/login", json=login),
            await client.get("/api/v1/tickets/my-tickets", headers=user.headers),
            await client.get("/api/v1/auth/me", headers=user.headers),
            await client.post(
                BOOK,
                json={"screening_id": show.id, "seat_ids": show.seat_ids[:1], "payment_id": "p1"},
                headers=user.headers,
            ),
        ]
    for r in replies:
        _expect_503(r)


async def test_a_postgresql_that_turned_read_only_is_503_with_retry_after(
    gated: Callable[..., tuple[LiveServer, Gate]], db: asyncpg.Connection, admin: Account
) -> None:
    # A failover demoted the primary that SEATLOCK_DATABASE_URL still names: it comes back as a
    # standby, which answers reads and refuses every write ("cannot execute INSERT in a
    # read-only transaction") until the URL leads to the new primary.
    live, gate = gated("database_url")
    show = await make.show(db, 4)
    database = await db.fetchval("SELECT current_database()")
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        user = await make_account(client, "standby@example.com", "Standby")
        await db.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        try:
            gate.cut()  # the server's connections end; the ones it opens next are read-only
            async with asyncio.timeout(10):  # reads work again, on read-only connections
                while True:
                    if (await client.get("/api/v1/movies/")).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
            login = {"email": "new@example.com", "password": "A-good-pass-1", "full_name": "N"}
            book = {"screening_id": show.id, "seat_ids": show.seat_ids[:1], "payment_id": "p1"}
            movie = {"title": "X", "duration_minutes": 90}
            replies = [
                await client.post("/api/v1/auth/register", json=login),
                await client.post("/api/v1/movies/", json=movie, headers=admin.headers),
                await client.put("/api/v1/users/me", json={"full_name": "Y"}, headers=user.headers),
                await client.post(BOOK, json=book, headers=user.headers),
            ]
        finally:
            await db.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
    for r in replies:
        _expect_503(r)


async def test_redis_down_is_503_with_retry_after(
    gated: Callable[..., tuple[LiveServer, Gate]], db: asyncpg.Connection
) -> None:
    live, gate = gated("redis_url")
    show = await make.show(db, 4)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        user = await make_account(client, "gone@example.com", "Gone")
        availability = f"/api/v1/seat-reservations/screening/{show.id}/availability"
        assert (await client.get(availability)).status_code == 200
        gate.shut()
        hold = {"screening_id": show.id, "seat_ids": show.seat_ids[:2]}
        replies = [
            await client.post(RESERVE, json=hold, headers=user.headers),
            await client.get(availability),
            await client.get(f"/api/v1/seat-reservations/screening/{show.id + 1}/availability"),
        ]
    for r in replies:
        _expect_503(r)


async def test_sessions_are_checked_in_postgresql_while_redis_is_down(
    gated: Callable[..., tuple[LiveServer, Gate]], db: asyncpg.Connection
) -> None:
    """A session's state is cached in Redis; while Redis does not answer (or, on a cluster, the
    node of the session's key fails over) PostgreSQL, which decides, answers instead: what needs
    no seat is served, a revoked session is still refused, a hold is a 503."""
    live, gate = gated("redis_url")
    show = await make.show(db, 4)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        user = await make_account(client, "sessions@example.com", "Sessions")
        revoked = await make_account(client, "revoked@example.com", "Revoked")
        await db.execute(
            "UPDATE auth_sessions SET revoked_at = now() WHERE user_id = $1", revoked.id
        )
        gate.shut()
        me = await client.get("/api/v1/auth/me", headers=user.headers)
        assert me.status_code == 200, me.text
        assert me.json()["email"] == user.email
        tickets = await client.get("/api/v1/tickets/my-tickets", headers=user.headers)
        assert tickets.status_code == 200, tickets.text
        r = await client.get("/api/v1/auth/me", headers=revoked.headers)
        assert r.status_code == 401, r.text
        hold = {"screening_id": show.id, "seat_ids": show.seat_ids[:1]}
        _expect_503(await client.post(RESERVE, json=hold, headers=user.headers))


async def test_a_redis_that_answers_nothing_is_503_within_its_timeout(
    gated: Callable[..., tuple[LiveServer, Gate]], db: asyncpg.Connection
) -> None:
    """Redis hung or cut off (no answer, no refusal): its calls fail after about
    SEATLOCK_REDIS_TIMEOUT_SECONDS (the connection is dropped), not never; then a request is
    refused at once; once Redis answers again, a new connection serves."""
    live, gate = gated("redis_url", redis_timeout_seconds=0.5)
    show = await make.show(db, 4)
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
        user = await make_account(client, "mute@example.com", "Mute")
        availability = f"/api/v1/seat-reservations/screening/{show.id}/availability"
        assert (await client.get(availability)).status_code == 200
        hold = {"screening_id": show.id, "seat_ids": show.seat_ids[:2]}
        gate.mute()
        started = asyncio.get_running_loop().time()
        replies = await asyncio.gather(
            client.post(RESERVE, json=hold, headers=user.headers),
            client.get(f"/api/v1/seat-reservations/screening/{show.id + 1}/availability"),
            client.delete(  # the session is checked in PostgreSQL: the cancel's script waits
                f"/api/v1/seat-reservations/cancel/{show.id}",
                params={"seat_ids": ",".join(map(str, show.seat_ids[:2]))},
                headers=user.headers,
            ),
        )
        waited = asyncio.get_running_loop().time() - started
        for r in replies:
            _expect_503(r)
        assert waited < 10, waited  # without a socket timeout: never
        # Known not to answer: refused at once until the transport's probe gets through.
        await _refused_at_once(lambda: client.post(RESERVE, json=hold, headers=user.headers), 0.25)
        gate.unmute()
        await _answered_again(lambda: client.post(RESERVE, json=hold, headers=user.headers), 201)


async def test_a_postgresql_that_answers_nothing_is_503_within_its_timeout(
    gated: Callable[..., tuple[LiveServer, Gate]],
) -> None:
    """PostgreSQL hung or cut off: a request costs about SEATLOCK_DB_TIMEOUT_SECONDS, then 503
    (asyncpg's own connect timeout made it a minute); once it answers again, so does the server.
    Eight times more requests at once than the pool has connections: some wait on a statement
    sent on a connection they got, some on a new connection, most for a connection of the pool
    (asyncpg's own wait there has no end: they were answered in waves, one timeout each). Then,
    PostgreSQL known not to answer, a request is refused at once."""
    timeout = 0.5
    live, gate = gated("database_url", db_timeout_seconds=timeout, db_pool_min=1, db_pool_max=2)
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
        user = await make_account(client, "mute-db@example.com", "Mute")
        gate.mute()
        started = asyncio.get_running_loop().time()
        replies = await asyncio.gather(
            *(client.get("/api/v1/auth/me", headers=user.headers) for _ in range(8)),
            *(client.get("/api/v1/tickets/my-tickets", headers=user.headers) for _ in range(8)),
        )
        waited = asyncio.get_running_loop().time() - started
        for r in replies:
            _expect_503(r)
        assert waited < 6 * timeout, waited  # in waves it took 9 timeouts; now 2
        # Known not to answer: refused at once until the pool's probe has an answer.
        tickets = "/api/v1/tickets/my-tickets"
        await _refused_at_once(lambda: client.get(tickets, headers=user.headers), timeout / 2)
        gate.unmute()
        await _answered_again(lambda: client.get("/api/v1/auth/me", headers=user.headers), 200)


async def _refused_at_once(send: Callable[[], Awaitable[httpx.Response]], within: float) -> None:
    """A dependency known not to answer: ``send()`` is answered 503 within ``within`` seconds."""
    started = asyncio.get_running_loop().time()
    _expect_503(await send())
    assert asyncio.get_running_loop().time() - started < within


async def _answered_again(send: Callable[[], Awaitable[httpx.Response]], status: int) -> None:
    """``send()`` is answered ``status`` within 15 s (503 with Retry-After until then)."""
    async with asyncio.timeout(15):
        while True:
            again = await send()
            if again.status_code == status:
                return
            _expect_503(again)
            await asyncio.sleep(0.2)


def test_the_down_sets_name_what_a_dead_backend_raises() -> None:
    """The errors of a server shutting down, in recovery or out of connections, of a connection
    broken while a pool releases it, and of Redis loading or failing over are all "down"."""
    for kind in (
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.CrashShutdownError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.ConnectionDoesNotExistError,
        asyncpg.exceptions.ConnectionFailureError,
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.InterfaceError,
        asyncpg.exceptions.InternalClientError,
        asyncpg.exceptions.ReadOnlySQLTransactionError,
        ConnectionRefusedError,
        TimeoutError,
    ):
        assert issubclass(kind, DATABASE_DOWN), kind
    assert not issubclass(asyncpg.exceptions.UniqueViolationError, DATABASE_DOWN)
    for name in ("ConnectionError", "TimeoutError", "BusyLoadingError", "ReadOnlyError"):
        assert issubclass(getattr(redis.exceptions, name), REDIS_DOWN), name
    assert issubclass(redis.exceptions.TryAgainError, REDIS_DOWN)
    assert issubclass(redis.exceptions.ClusterDownError, REDIS_DOWN)
    assert not issubclass(redis.exceptions.NoScriptError, REDIS_DOWN)
