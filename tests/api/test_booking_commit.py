"""Booking commits: a 201 after the commit whatever Redis does, holds kept when PostgreSQL fails,
the group-commit writer (savepoints per booking, answers after COMMIT), documented shapes."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from db import tickets as repo
from seatlock import keys
from seatlock.errors import Unavailable
from seatlock.services.container import Services
from tests import factories as make
from tests.support import (
    Account,
    LiveServer,
    active_tickets,
    availability,
    book_held,
    held_in_redis,
    reserve,
)

TICKET_KEYS = [
    "id",
    "user_id",
    "screening_id",
    "seat_id",
    "price",
    "status",
    "booked_at",
    "confirmed_at",
    "payment_id",
]


def services_of(live: LiveServer) -> Services:
    """The running app's services (the live server runs in this process, in a thread)."""
    app: Any = live._server.config.app
    services: Services = app.state.services
    return services


async def refuse_ticket_inserts(db: asyncpg.Connection) -> None:
    """A trigger that fails the insert stands in for PostgreSQL failing at commit time."""
    await db.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'down' USING ERRCODE = '57P01'; END $$;"
        " CREATE TRIGGER refuse BEFORE INSERT ON tickets FOR EACH ROW EXECUTE FUNCTION refuse()"
    )


async def allow_ticket_inserts(db: asyncpg.Connection) -> None:
    await db.execute("DROP TRIGGER refuse ON tickets; DROP FUNCTION refuse()")


async def test_redis_refusing_the_sell_after_the_commit_still_answers_201(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    user: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    show = await make.show(db, 3)
    seats = show.seat_ids[:2]
    assert (await reserve(client, user, show, seats)).status_code == 201

    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise Unavailable("Seat service temporarily unavailable")

    monkeypatch.setattr(services_of(server).engine, "sell", refuse)
    r = await book_held(client, user, show, seats, "pay_sell_fails")
    assert r.status_code == 201, r.text
    assert [t["seat_id"] for t in r.json()] == seats
    assert [t["seat_id"] for t in await active_tickets(db, show)] == seats
    monkeypatch.undo()
    # PostgreSQL stays the judge: the same seats cannot be sold again, and a retry is idempotent.
    again = await book_held(client, user, show, seats, "pay_sell_fails")
    assert again.status_code == 201
    assert [t["id"] for t in again.json()] == [t["id"] for t in r.json()]
    assert await db.fetchval("SELECT count(*) FROM bookings") == 1


async def test_failed_commit_keeps_the_holds_for_a_retry(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    make_server: Callable[..., LiveServer],
    user: Account,
) -> None:
    live = make_server(hold_seconds=2)
    show = await make.show(db, 2)
    seats = show.seat_ids
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as short:
        assert (await reserve(short, user, show, seats)).status_code == 201
        await refuse_ticket_inserts(db)
        try:
            r = await book_held(short, user, show, seats, "pay_retry")
        finally:
            await allow_ticket_inserts(db)
        assert r.status_code == 503, r.text
        assert await db.fetchval("SELECT count(*) FROM bookings") == 0
        assert await held_in_redis(redis, show) == dict.fromkeys(seats, user.id)
        # Pinned for the commit: past the 2 s hold, but only by the short commit pin.
        ttl = await redis.pttl(keys.seat_hold(show.id, seats[0]))
        assert 2_000 < ttl <= 15_000
        seen = await availability(short, show, user)
        assert {s["status"] for s in seen.values()} == {"reserved"}
        r = await book_held(short, user, show, seats, "pay_retry")
        assert r.status_code == 201, r.text
    assert [t["seat_id"] for t in await active_tickets(db, show)] == seats


def kill_connection_at(stage: str, database_url: str) -> Callable[[str, Any], Awaitable[None]]:
    """A commit hook that terminates the batch's PostgreSQL backend at ``stage``: "commit" (what
    commits the batch then goes out on a dead connection: not committed) or "committed" (after
    it: the answer and the release fail, the tickets are committed)."""

    async def hook(at: str, conn: Any) -> None:
        if at != stage:
            return
        killer = await asyncpg.connect(database_url)
        try:
            await killer.execute("SELECT pg_terminate_backend($1, 5000)", conn.get_server_pid())
        finally:
            await killer.close()
        if at == "committed":
            await conn.fetchval("SELECT 1")  # the writer learns of it here, as on release

    return hook


async def test_a_commit_whose_answer_is_lost_is_looked_up_and_answers_201(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    server: LiveServer,
    user: Account,
) -> None:
    show = await make.show(db, 3)
    seats = show.seat_ids[:2]
    assert (await reserve(client, user, show, seats)).status_code == 201
    writer = services_of(server).booking_writer
    looked_up = writer.looked_up
    writer.commit_hook = kill_connection_at("committed", server.settings.database_url)
    try:
        r = await book_held(client, user, show, seats, "pay_lost_answer")
    finally:
        writer.commit_hook = None
    assert r.status_code == 201, r.text
    assert writer.looked_up == looked_up + 1
    rows = await active_tickets(db, show)
    assert [t["id"] for t in r.json()] == [t["id"] for t in rows]
    assert [t["seat_id"] for t in rows] == seats
    sold = await redis.hgetall(keys.screening_sold(show.id))
    assert {int(seat): int(u) for seat, u in sold.items()} == dict.fromkeys(seats, user.id)
    seen = await availability(client, show)
    assert [seen[seat]["status"] for seat in show.seat_ids] == ["booked", "booked", "available"]


async def test_a_commit_that_went_out_on_a_dead_connection_is_503_and_keeps_the_holds(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    server: LiveServer,
    user: Account,
) -> None:
    show = await make.show(db, 2)
    seats = show.seat_ids
    assert (await reserve(client, user, show, seats)).status_code == 201
    writer = services_of(server).booking_writer
    writer.commit_hook = kill_connection_at("commit", server.settings.database_url)
    try:
        r = await book_held(client, user, show, seats, "pay_dead_commit")
    finally:
        writer.commit_hook = None
    assert r.status_code == 503, r.text
    assert r.json() == {"detail": "Booking could not be saved right now; please try again"}
    assert await db.fetchval("SELECT count(*) FROM bookings") == 0
    assert await held_in_redis(redis, show) == dict.fromkeys(seats, user.id)
    r = await book_held(client, user, show, seats, "pay_dead_commit")
    assert r.status_code == 201, r.text


async def test_the_sabotage_switch_brings_back_the_guess(
    db: asyncpg.Connection,
    redis: Redis,
    make_server: Any,
    user: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LOOK_UP_OUTCOME = False (the fault suite's control run) answers a committed booking with
    an error, as before the lookup: what the fault suite's checker must catch. The server runs no
    reconciler, which would repair Redis within its period and hide the guess."""
    live: LiveServer = make_server(reconcile_interval_seconds=0)
    show = await make.show(db, 1)
    writer = services_of(live).booking_writer
    monkeypatch.setattr(repo, "LOOK_UP_OUTCOME", False)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
        assert (await reserve(client, user, show, show.seat_ids)).status_code == 201
        writer.commit_hook = kill_connection_at("committed", live.settings.database_url)
        try:
            r = await book_held(client, user, show, show.seat_ids, "pay_guessed")
        finally:
            writer.commit_hook = None
    # An error (503 for a lost connection, 500 for asyncpg's InternalClientError), although ...
    assert r.status_code >= 500, r.text
    assert len(await active_tickets(db, show)) == 1  # ... the ticket is committed, and ...
    assert await redis.hgetall(keys.screening_sold(show.id)) == {}  # ... Redis never learns


@pytest.fixture
async def writer(server: LiveServer) -> AsyncIterator[repo.BookingWriter]:
    pool = await asyncpg.create_pool(server.settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    writer = repo.BookingWriter(pool)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    await asyncio.sleep(0)
    yield writer
    stop.set()
    await task
    await pool.close()


async def test_one_batch_commits_the_good_bookings_and_refuses_the_bad(
    writer: repo.BookingWriter, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    show = await make.show(db, 6, price="8.00", seat_types=["standard", "vip"] * 3)
    s = show.seat_ids
    await repo.create_booking(writer._db, other_user.id, show.id, [s[5]], "pay_old")
    results: list[Any] = await asyncio.gather(
        writer.book(user.id, show.id, [s[1], s[0]], "pay_a"),
        writer.book(user.id, show.id, [s[5]], None),  # seat sold: unique index
        writer.book(user.id, show.id, [s[2]], "pay_old"),  # payment id taken
        writer.book(user.id, show.id, [s[3], 10**12], None),  # unknown seat
        writer.book(other_user.id, show.id, [s[3]], "pay_b"),
        writer.book(user.id, show.id, [s[4]], "pay_b"),  # same payment, same batch
        writer.book(user.id, show.id, [s[4]], None),
        return_exceptions=True,
    )
    assert (writer.batches, writer.retried) == (1, 1)  # one savepoint per booking
    a, sold, taken, unknown, b, dup, pending = results
    assert [(t["seat_id"], t["price"], t["status"]) for t in a] == [
        (s[0], 8, "confirmed"),
        (s[1], 12, "confirmed"),
    ]
    assert isinstance(sold, repo.SeatAlreadySold)
    assert isinstance(taken, asyncpg.UniqueViolationError)
    assert isinstance(unknown, repo.SeatsNotInScreening)
    assert [(t["seat_id"], t["user_id"]) for t in b] == [(s[3], other_user.id)]
    assert isinstance(dup, asyncpg.UniqueViolationError)
    assert [(t["seat_id"], t["status"]) for t in pending] == [(s[4], "pending")]
    rows = await active_tickets(db, show)
    assert [(r["seat_id"], r["user_id"]) for r in rows] == [
        (s[0], user.id),
        (s[1], user.id),
        (s[3], other_user.id),
        (s[4], user.id),
        (s[5], other_user.id),
    ]
    assert await db.fetchval("SELECT count(*) FROM bookings") == 4


async def test_a_clean_batch_gives_each_caller_its_own_tickets(
    writer: repo.BookingWriter, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    show = await make.show(db, 20, price="10.00", seat_types=["premium", "couple"] * 10)
    pairs = [show.seat_ids[i : i + 2] for i in range(0, 20, 2)]
    users = [user.id, other_user.id] * 5
    payments = [f"pay_{n}" if n % 3 else None for n in range(10)]
    results = await asyncio.gather(
        *(
            writer.book(u, show.id, list(reversed(seats)), pay)
            for u, seats, pay in zip(users, pairs, payments, strict=True)
        )
    )
    assert (writer.batches, writer.retried) == (1, 0)  # one statement did it all
    for rows, u, seats, pay in zip(results, users, pairs, payments, strict=True):
        assert [(r["seat_id"], r["user_id"], r["payment_id"]) for r in rows] == [
            (seat, u, pay) for seat in seats
        ]
        assert [r["price"] for r in rows] == [Decimal("12.50"), Decimal("20.00")]
        assert {r["status"] for r in rows} == {"confirmed" if pay else "pending"}
        assert [r["confirmed_at"] is not None for r in rows] == [pay is not None] * 2
        booking = await db.fetchrow(
            "SELECT user_id, screening_id, payment_id, seat_ids FROM bookings WHERE id = $1",
            rows[0]["booking_id"],
        )
        assert booking is not None and tuple(booking) == (u, show.id, pay, seats)
    assert await db.fetchval("SELECT count(*) FROM bookings") == 10


async def test_answers_come_only_after_the_commit(
    writer: repo.BookingWriter, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 40)
    seen_committed: list[bool] = []
    one_at_a_time = asyncio.Lock()

    async def book(seat: int) -> None:
        rows = await writer.book(user.id, show.id, [seat], None)
        # Another connection sees the tickets as soon as the caller has its answer.
        async with one_at_a_time:
            count = await db.fetchval("SELECT count(*) FROM tickets WHERE id = $1", rows[0]["id"])
        seen_committed.append(count == 1)

    await asyncio.gather(*(book(seat) for seat in show.seat_ids))
    assert seen_committed == [True] * 40
    assert writer.batches <= 2


async def test_the_usual_batch_commits_in_one_statement_without_a_transaction(
    writer: repo.BookingWriter, db: asyncpg.Connection, user: Account
) -> None:
    """No BEGIN and no COMMIT around the usual batch: its one statement commits on its own (one
    round trip), with the booking ids drawn beforehand."""
    show = await make.show(db, 4)
    stages: list[tuple[str, bool]] = []

    async def note(stage: str, conn: Any) -> None:
        stages.append((stage, conn.is_in_transaction()))

    writer.commit_hook = note
    results = await asyncio.gather(
        *(writer.book(user.id, show.id, [seat], None) for seat in show.seat_ids)
    )
    assert stages == [("commit", False), ("committed", False)]
    assert (writer.batches, writer.retried) == (1, 0)
    ids = [rows[0]["booking_id"] for rows in results]
    assert len(set(ids)) == 4
    assert await db.fetchval("SELECT count(*) FROM bookings WHERE id = ANY($1)", ids) == 4


async def test_a_replayed_payment_id_is_refused_as_a_payment_not_as_a_sold_seat(
    writer: repo.BookingWriter, db: asyncpg.Connection, user: Account
) -> None:
    """The same booking again (same payment id, same seats, its seats now sold) fails on the
    payment id, which the booking flow answers as a replay (invariant 6), not as a sold seat: the
    batch statement, whose two INSERTs run in no set order, is not what answers it."""
    show = await make.show(db, 3)
    s = show.seat_ids
    first = await writer.book(user.id, show.id, [s[0], s[1]], "pay_twice")
    with pytest.raises(asyncpg.UniqueViolationError) as refused:
        await writer.book(user.id, show.id, [s[0], s[1]], "pay_twice")
    assert refused.value.constraint_name != repo.SEAT_CONSTRAINT
    with pytest.raises(repo.SeatAlreadySold):
        await writer.book(user.id, show.id, [s[1]], None)
    with pytest.raises(repo.SeatsNotInScreening):
        await writer.book(user.id, show.id, [s[2], 10**12], None)
    assert (writer.batches, writer.retried) == (4, 3)  # each refusal: its own savepoint
    assert [t["id"] for t in await active_tickets(db, show)] == [t["id"] for t in first]


async def test_booking_ids_are_drawn_a_block_at_a_time_and_never_twice(
    server: LiveServer,
) -> None:
    conn = await asyncpg.connect(server.settings.database_url)
    try:
        first, second = repo.BookingIds(block=5), repo.BookingIds(block=5)
        a = await first.take(conn, 3)  # draws 5
        b = await second.take(conn, 2)  # another process's writer: ids of its own
        c = await first.take(conn, 4)  # 2 left over, then 5 more
        assert len(set(a + b + c)) == 9 and a == sorted(a)
        assert c[:2] == [a[-1] + 1, a[-1] + 2]  # the rest of the first block first
    finally:
        await conn.close()


class CuttingProxy:
    """A TCP proxy to PostgreSQL that can lose an answer: after ``cut_next()``, the next
    execution a client sends (a Bind message, after its statement was prepared) goes through,
    then the connection is closed and whatever PostgreSQL answers is dropped, as when a network
    fails right after a statement was sent."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.cutting = False
        self.cuts = 0
        self.server: asyncio.Server | None = None
        self.streams: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def cut_next(self) -> None:
        self.cutting = True

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for stream in self.streams:
            stream.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.streams += [writer, up_writer]
        muted: list[bool] = []

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if muted:
                        continue  # the answer is lost
                    dst.write(data)
                    await dst.drain()
                    if up and self.cutting and data[:1] == b"B":
                        self.cutting = False
                        muted.append(True)
                        await asyncio.sleep(0.5)  # PostgreSQL runs and commits it meanwhile
                        self.cuts += 1
                        writer.close()
                        up_writer.close()
                        return
            dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))


async def test_a_batch_statement_whose_answer_is_lost_is_answered_from_what_it_committed(
    server: LiveServer, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    """The batch statement commits, its answer never arrives: the writer reads its tickets back
    by the booking ids it drew, and each caller gets its own (invariant 5: no 201 is lost)."""
    url = server.settings.database_url
    parts = urllib.parse.urlsplit(url)
    proxy = CuttingProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await proxy.start()
    via_proxy = parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}").geturl()
    # One connection: the batch statement, prepared by a first booking, is then sent as one
    # execution (the proxy cuts the next one). The lookup gets the pool's new connection.
    pool = await asyncpg.create_pool(via_proxy, min_size=1, max_size=1)
    assert pool is not None
    writer = repo.BookingWriter(pool)

    async def lose_the_answer(stage: str, conn: Any) -> None:
        if stage == "commit":
            proxy.cut_next()

    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        show = await make.show(db, 5)
        s = show.seat_ids
        await writer.book(user.id, show.id, [s[4]], None)
        writer.commit_hook = lose_the_answer
        mine, theirs = await asyncio.gather(
            writer.book(user.id, show.id, [s[1], s[0]], "pay_lost_1"),
            writer.book(other_user.id, show.id, [s[2]], None),
        )
        writer.commit_hook = None
    finally:
        stop.set()
        await task
        await pool.close()
        await proxy.close()
    assert proxy.cuts == 1 and writer.looked_up == 1 and writer.batches == 2
    assert [(t["seat_id"], t["user_id"], t["status"]) for t in mine] == [
        (s[0], user.id, "confirmed"),
        (s[1], user.id, "confirmed"),
    ]
    assert [(t["seat_id"], t["user_id"], t["status"]) for t in theirs] == [
        (s[2], other_user.id, "pending")
    ]
    rows = await active_tickets(db, show)
    assert sorted(t["id"] for t in mine + theirs) == sorted(r["id"] for r in rows[:3])


async def test_batches_back_to_back_keep_one_connection_and_an_idle_writer_holds_none(
    server: LiveServer, db: asyncpg.Connection, user: Account
) -> None:
    """While bookings keep coming the writer keeps its connection (no reset between batches);
    once none wait, it is back in the pool."""
    pool = await asyncpg.create_pool(server.settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    writer = repo.BookingWriter(pool, max_batch=1)  # one booking a batch: batches in a row
    marks: list[str] = []

    async def note(stage: str, conn: Any) -> None:
        # A session setting survives from batch to batch unless the pool's reset (RESET ALL,
        # on each return to the pool) comes in between.
        if stage == "committed":
            marks.append(await conn.fetchval("SELECT current_setting('seatlock.mark', true)"))
            await conn.execute("SELECT set_config('seatlock.mark', 'kept', false)")

    writer.commit_hook = note
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        await asyncio.sleep(0)
        show = await make.show(db, 4)
        await asyncio.gather(*(writer.book(user.id, show.id, [s], None) for s in show.seat_ids))
        assert writer.batches == 4
        assert marks[1:] == ["kept"] * 3  # one connection, never reset between the batches
        # Returned once none wait (just after the answers: they do not wait for its reset).
        for _ in range(100):
            if pool.get_idle_size() == pool.get_size():
                break
            await asyncio.sleep(0.01)
        assert pool.get_idle_size() == pool.get_size()
    finally:
        stop.set()
        await task
        await pool.close()


async def test_a_failed_batch_fails_every_booking_in_it(
    writer: repo.BookingWriter, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 3)
    # A deferred check fails at COMMIT, after every booking of the batch went through.
    await db.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'late' USING ERRCODE = '57P01'; END $$;"
        " CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON tickets DEFERRABLE INITIALLY DEFERRED"
        " FOR EACH ROW EXECUTE FUNCTION refuse()"
    )
    try:
        results = await asyncio.gather(
            *(writer.book(user.id, show.id, [seat], None) for seat in show.seat_ids),
            return_exceptions=True,
        )
    finally:
        await allow_ticket_inserts(db)
    # The COMMIT was sent and refused: looked up, not committed, a 503 for every booking.
    assert all(isinstance(r, repo.BookingNotSaved) for r in results), results
    assert all(isinstance(r.__cause__, asyncpg.PostgresError) for r in results), results
    assert await db.fetchval("SELECT count(*) FROM tickets") == 0
    assert await db.fetchval("SELECT count(*) FROM bookings") == 0
    ok = await writer.book(user.id, show.id, show.seat_ids, None)
    assert len(ok) == 3


async def test_stopped_writer_refuses_with_503_class(server: LiveServer) -> None:
    writer = repo.BookingWriter(services_of(server).db)
    with pytest.raises(Unavailable):
        await writer.book(1, 1, [1], None)


async def test_ticket_routes_document_their_shapes(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    doc = (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert list(schemas["TicketOut"]["properties"]) == TICKET_KEYS
    assert schemas["TicketOut"]["properties"]["price"]["type"] == "number"
    routes = [
        ("/api/v1/tickets/book", "post", "201"),
        ("/api/v1/tickets/book-from-reservation", "post", "201"),
        ("/api/v1/tickets/my-tickets", "get", "200"),
        ("/api/v1/tickets/", "get", "200"),
        ("/api/v1/tickets/{ticket_id}", "get", "200"),
        ("/api/v1/tickets/{ticket_id}", "delete", "200"),
        ("/api/v1/tickets/{ticket_id}/confirm-payment", "post", "200"),
        ("/api/v1/tickets/{ticket_id}/status", "put", "200"),
        ("/api/v1/tickets/{ticket_id}/resend", "post", "200"),
    ]
    for path, method, status in routes:
        response = doc["paths"][path][method]["responses"][status]
        assert "content" in response, (path, method)
    # And the JSON itself is the guide's ticket, unchanged.
    show = await make.show(db, 1)
    r = await client.post(
        "/api/v1/tickets/book",
        json={"screening_id": show.id, "seat_ids": show.seat_ids},
        headers=user.headers,
    )
    assert r.status_code == 201, r.text
    (ticket,) = r.json()
    assert list(ticket) == TICKET_KEYS
    assert ticket["price"] == 10.0 and ticket["confirmed_at"] is None
    assert ticket["booked_at"].endswith(("Z", "+00:00"))


async def test_quick_book_replays_and_refuses_a_reused_payment_without_holding(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    user: Account,
    other_user: Account,
) -> None:
    show = await make.show(db, 3)
    a, b, c = show.seat_ids

    async def quick(account: Account, seats: list[int]) -> httpx.Response:
        body = {"screening_id": show.id, "seat_ids": seats, "payment_id": "pay_q"}
        return await client.post("/api/v1/tickets/book", json=body, headers=account.headers)

    results = await asyncio.gather(*(quick(user, [a]) for _ in range(20)))
    assert {r.status_code for r in results} == {201}, {r.text for r in results}
    assert len({r.json()[0]["id"] for r in results}) == 1
    assert (await quick(user, [b])).status_code == 409
    assert (await quick(other_user, [c])).status_code == 409
    assert await held_in_redis(redis, show) == {}
    seen = await availability(client, show)
    assert [seen[seat]["status"] for seat in (a, b, c)] == ["booked", "available", "available"]
    assert await db.fetchval("SELECT count(*) FROM bookings") == 1
