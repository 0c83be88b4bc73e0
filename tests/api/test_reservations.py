"""Seat reservations over real HTTP: hold, extend, cancel, my-reservations, cleanup, seat maps."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from api.rendering import dumps
from api.reservations import ReservationOut
from db.layouts import Layouts
from db.reservations import Closed, HistoryWriter, ReservationIds
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import open_transport
from seatlock.services.holds import Reservation, utc
from tests import factories as make
from tests.api.test_metrics import scrape, value
from tests.support import (
    RESERVE,
    Account,
    LiveServer,
    availability,
    held_in_redis,
    reserve,
)

# --- tests ----------------------------------------------------------------------------------------


async def test_a_hold_under_a_minute_is_told_in_seconds(
    db: asyncpg.Connection, make_server: Any, user: Account
) -> None:
    """SEATLOCK_HOLD_SECONDS=30: not "Reserved 1 seat for 0 minutes"."""
    live: LiveServer = make_server(hold_seconds=30)
    show = await make.show(db, 1)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as c:
        r = await reserve(c, user, show, show.seat_ids)
    assert r.status_code == 201, r.text
    assert r.json()["message"] == "Reserved 1 seat for 30 seconds"


async def test_reserve_returns_the_guide_body(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db)
    r = await reserve(client, user, show, show.seat_ids[:3])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["message"] == "Reserved 3 seats for 5 minutes"
    assert body["expires_in_minutes"] == 5
    rows = body["reservations"]
    assert [x["seat_id"] for x in rows] == show.seat_ids[:3]
    assert {x["status"] for x in rows} == {"active"}
    assert {x["user_id"] for x in rows} == {user.id}
    assert len({x["id"] for x in rows}) == 3
    mine = (
        await client.get("/api/v1/seat-reservations/my-reservations", headers=user.headers)
    ).json()
    assert sorted(x["id"] for x in mine) == sorted(x["id"] for x in rows)
    assert await db.fetchval("SELECT count(*) FROM reservations WHERE user_id = $1", user.id) == 3


async def test_availability_hides_the_holder_from_others(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    show = await make.show(db, 4)
    assert (await reserve(client, user, show, show.seat_ids[:1])).status_code == 201
    seat = show.seat_ids[0]
    mine = await availability(client, show, user)
    theirs = await availability(client, show, other_user)
    anonymous = await availability(client, show)
    assert mine[seat]["reserved_by"] == user.id
    assert mine[seat]["expires_at"] is not None
    for view in (theirs, anonymous):
        assert view[seat]["status"] == "reserved"
        assert view[seat]["reserved_by"] is None
        assert view[seat]["expires_at"] == mine[seat]["expires_at"]
    assert anonymous[show.seat_ids[1]]["status"] == "available"
    assert anonymous[seat]["seat"] == {
        "id": seat,
        "room_id": show.room_id,
        "row_label": "A",
        "seat_number": 1,
        "seat_type": "standard",
    }


async def test_seat_taken_by_another_user_is_409_and_all_or_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    user: Account,
    other_user: Account,
) -> None:
    show = await make.show(db, 5)
    a, b, c = show.seat_ids[:3]
    assert (await reserve(client, user, show, [a, b])).status_code == 201
    r = await reserve(client, other_user, show, [b, c])
    assert r.status_code == 409
    assert r.json() == {"detail": f"Seats [{b}] are currently reserved by other users"}
    assert await held_in_redis(redis, show) == {a: user.id, b: user.id}
    # Re-holding your own seats is fine.
    assert (await reserve(client, user, show, [a])).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"seat_ids": [1]},
        {"screening_id": "x", "seat_ids": [1]},
        {"screening_id": 1, "seat_ids": []},
        {"screening_id": 1, "seat_ids": ["a"]},
        {"screening_id": 1, "seat_ids": [1.5]},
        {"screening_id": 1, "seat_ids": list(range(1, 52))},
        {"screening_id": 1, "seat_ids": [0]},
    ],
)
async def test_malformed_reserve_is_422(
    client: httpx.AsyncClient, user: Account, body: dict[str, Any]
) -> None:
    r = await client.post(RESERVE, json=body, headers=user.headers)
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


async def test_bad_input_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    show = await make.show(db, 3)
    elsewhere = await make.show(db, 2)
    a = show.seat_ids[0]
    cases = [
        ({"screening_id": show.id, "seat_ids": [a, a]}, 422),
        ({"screening_id": show.id, "seat_ids": [a, elsewhere.seat_ids[0]]}, 404),
        ({"screening_id": show.id, "seat_ids": [a, 10**12]}, 404),
        ({"screening_id": 10**12, "seat_ids": [a]}, 404),
    ]
    for body, status in cases:
        r = await client.post(RESERVE, json=body, headers=user.headers)
        assert r.status_code == status, (body, r.text)
    r = await client.post(
        RESERVE,
        content=b'{"screening_id": 1,',
        headers={**user.headers, "content-type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json() == {
        "detail": [
            {
                "type": "json_invalid",
                "loc": ["body", 19],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": "Input data was truncated"},
            }
        ]
    }
    assert await held_in_redis(redis, show) == {}
    assert (await availability(client, show))[a]["status"] == "available"
    assert (await client.post(RESERVE, json=cases[0][0])).status_code == 401


async def test_past_screening_is_400(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 2, starts_in=timedelta(hours=-1))
    r = await reserve(client, user, show, show.seat_ids[:1])
    assert r.status_code == 400
    assert r.json() == {"detail": "Cannot reserve seats for past screenings"}


async def test_extend_cancel_and_history(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    redis: Redis,
    user: Account,
    other_user: Account,
) -> None:
    show = await make.show(db, 4)
    a, b, c = show.seat_ids[:3]
    held = (await reserve(client, user, show, [a, b, c])).json()["reservations"]
    url = "/api/v1/seat-reservations/extend"
    body = {"screening_id": show.id, "seat_ids": [a, b]}
    r = await client.post(url, params={"additional_minutes": 3}, json=body, headers=user.headers)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["message"] == "Extended reservation for 2 seats by 3 minutes"
    assert out["expires_in_minutes"] == 3
    assert [x["id"] for x in out["reservations"]] == [held[0]["id"], held[1]["id"]]
    assert out["reservations"][0]["expires_at"] > held[0]["expires_at"]
    for minutes in (0, 16, "x"):
        r = await client.post(
            url, params={"additional_minutes": minutes}, json=body, headers=user.headers
        )
        assert r.status_code == 422
    r = await client.post(url, json=body, headers=other_user.headers)
    assert r.status_code == 404
    cancel = f"/api/v1/seat-reservations/cancel/{show.id}"
    for bad in ("x", "1,,2", f"{a},{a}", "-1", "²", "9" * 4301):
        r = await client.delete(cancel, params={"seat_ids": bad}, headers=user.headers)
        assert r.status_code == 422, bad
    assert await held_in_redis(redis, show) == {a: user.id, b: user.id, c: user.id}
    r = await client.delete(cancel, params={"seat_ids": f"{a}"}, headers=user.headers)
    assert r.status_code == 204
    assert await held_in_redis(redis, show) == {b: user.id, c: user.id}
    # Another user's cancel touches nothing of ours.
    assert (await client.delete(cancel, headers=other_user.headers)).status_code == 204
    assert await held_in_redis(redis, show) == {b: user.id, c: user.id}
    assert (await client.delete(cancel, headers=user.headers)).status_code == 204
    assert await held_in_redis(redis, show) == {}
    mine_url = "/api/v1/seat-reservations/my-reservations"
    assert (await client.get(mine_url, headers=user.headers)).json() == []
    everything = (
        await client.get(mine_url, params={"include_expired": "true"}, headers=user.headers)
    ).json()
    assert sorted(x["status"] for x in everything) == ["cancelled"] * 3


async def test_an_extension_past_the_longest_hold_says_what_it_gave(
    make_server: Any, db: asyncpg.Connection
) -> None:
    server = make_server(hold_seconds=300, max_hold_seconds=480)
    async with httpx.AsyncClient(base_url=server.url) as client:
        [headers] = await make.sessions(db, server.settings.jwt_secret, 1)
        show = await make.show(db, 3)
        a, b, c = show.seat_ids
        url = "/api/v1/seat-reservations/extend"

        async def extend(seats: list[int], minutes: int) -> str:
            body = {"screening_id": show.id, "seat_ids": seats}
            params = {"additional_minutes": minutes}
            r = await client.post(url, params=params, json=body, headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["expires_in_minutes"] == minutes
            return str(r.json()["message"])

        body = {"screening_id": show.id, "seat_ids": [a, b]}
        assert (await client.post(RESERVE, json=body, headers=headers)).status_code == 201
        limit = "a hold lasts at most 8 minutes"
        # Held for 5 of at most 8 minutes: 3 more, then none.
        assert await extend([a, b], 5) == f"Extended reservation for 2 seats by 3 minutes: {limit}"
        assert await extend([a, b], 5) == f"Reservation for 2 seats not extended: {limit}"
        body = {"screening_id": show.id, "seat_ids": [c]}
        assert (await client.post(RESERVE, json=body, headers=headers)).status_code == 201
        told = await extend([a, c], 2)
        assert told == f"Extended reservation for 2 seats by up to 2 minutes: {limit}"
        assert await extend([c], 1) == "Extended reservation for 1 seat by 1 minute"


async def test_expired_history_reads_expired(make_server: Any, db: asyncpg.Connection) -> None:
    server = make_server(hold_seconds=1)
    async with httpx.AsyncClient(base_url=server.url) as client:
        [headers] = await make.sessions(db, server.settings.jwt_secret, 1)
        show = await make.show(db, 2)
        body = {"screening_id": show.id, "seat_ids": show.seat_ids[:1]}
        assert (await client.post(RESERVE, json=body, headers=headers)).status_code == 201
        await asyncio.sleep(1.3)
        url = "/api/v1/seat-reservations/my-reservations"
        assert (await client.get(url, headers=headers)).json() == []
        rows = (await client.get(url, params={"include_expired": 1}, headers=headers)).json()
        assert [x["status"] for x in rows] == ["expired"]


async def test_cleanup_frees_only_expired_holds_and_is_rate_limited(
    make_server: Any, db: asyncpg.Connection, client: httpx.AsyncClient, user: Account
) -> None:
    short = make_server(hold_seconds=1, cleanup_min_interval_seconds=30)
    show = await make.show(db, 2)
    lasting, brief = show.seat_ids
    assert (await reserve(client, user, show, [lasting])).status_code == 201
    async with httpx.AsyncClient(base_url=short.url) as quick:
        body = {"screening_id": show.id, "seat_ids": [brief]}
        assert (await quick.post(RESERVE, json=body, headers=user.headers)).status_code == 201
        await asyncio.sleep(1.1)
        r = await quick.post("/api/v1/seat-reservations/cleanup")
        assert r.status_code == 200, r.text
        out = r.json()
        # Sweepers of other processes may have freed it first: the count is 0 or 1.
        assert out["message"] in {f"Cleaned up {n} expired reservations" for n in (0, 1)}
        assert out["duration_seconds"] >= 0 and out["timestamp"].endswith("Z")
        seats = await availability(quick, show)
        assert seats[brief]["status"] == "available"
        assert seats[lasting]["status"] == "reserved"
        r = await quick.post("/api/v1/seat-reservations/cleanup")
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"


async def test_other_seat_map_routes(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 3)
    assert (await reserve(client, user, show, show.seat_ids[:1])).status_code == 201
    free = (await client.get(f"/api/v1/screenings/{show.id}/available-seats")).json()
    assert [s["seat"]["id"] for s in free] == show.seat_ids[1:]
    full = (await client.get(f"/api/v1/showtimes/{show.id}/seats")).json()
    assert [s["status"] for s in full] == ["reserved", "available", "available"]
    assert (await client.get("/api/v1/showtimes/999999999/seats")).status_code == 404


async def test_two_hundred_racers_never_share_a_seat(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, server: LiveServer
) -> None:
    show = await make.show(db, 20)
    racers = await make.sessions(db, server.settings.jwt_secret, 200)
    # Racer n wants two neighbouring seats: every seat is wanted by about twenty racers.
    wants = [[show.seat_ids[n % 19], show.seat_ids[n % 19 + 1]] for n in range(200)]

    async def race(headers: dict[str, str], seats: list[int]) -> httpx.Response:
        body = {"screening_id": show.id, "seat_ids": seats}
        return await client.post(RESERVE, json=body, headers=headers)

    results = await asyncio.gather(*(race(h, s) for h, s in zip(racers, wants, strict=True)))
    assert {r.status_code for r in results} <= {201, 409}
    winners = [n for n, r in enumerate(results) if r.status_code == 201]
    won_seats = [seat for n in winners for seat in wants[n]]
    assert len(won_seats) == len(set(won_seats)), "a seat was held twice"
    # Holds are never given back during the race, so every loser wanted a seat a winner got.
    for n, r in enumerate(results):
        if r.status_code == 409:
            assert set(wants[n]) & set(won_seats), r.text
    assert len(winners) >= 7  # the smallest maximal set of disjoint neighbour pairs of 20 seats
    held = await held_in_redis(redis, show)
    assert sorted(held) == sorted(won_seats), "a partial hold was left behind"
    users = {r.json()["reservations"][0]["user_id"] for r in (results[n] for n in winners)}
    assert len(users) == len(winners)
    seats = await availability(client, show)
    assert sorted(s for s, v in seats.items() if v["status"] == "reserved") == sorted(won_seats)
    # History reaches PostgreSQL in the background: one active row per won seat, none other.
    async with asyncio.timeout(5):
        while True:
            rows = await db.fetch(
                "SELECT seat_id, user_id FROM reservations WHERE screening_id = $1"
                " AND status = 'active'",
                show.id,
            )
            if len(rows) >= len(won_seats):
                break
            await asyncio.sleep(0.05)
    assert sorted(r["seat_id"] for r in rows) == sorted(won_seats)


async def test_holds_do_not_wait_for_the_history(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    """History rows are written in the background: a failing history table blocks no hold."""
    show = await make.show(db, 2)
    await db.execute(
        "CREATE FUNCTION refuse_history() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'history refused'; END $$;"
        " CREATE TRIGGER refuse_history BEFORE INSERT ON reservations"
        " FOR EACH ROW EXECUTE FUNCTION refuse_history()"
    )
    try:
        r = await reserve(client, user, show, show.seat_ids)
        mine = await client.get("/api/v1/seat-reservations/my-reservations", headers=user.headers)
    finally:
        await db.execute(
            "DROP TRIGGER refuse_history ON reservations; DROP FUNCTION refuse_history()"
        )
    assert r.status_code == 201, r.text
    assert await held_in_redis(redis, show) == dict.fromkeys(show.seat_ids, user.id)
    assert mine.status_code == 200
    assert mine.json() == []


async def test_re_reserving_held_seats_reuses_their_rows(
    client: httpx.AsyncClient, make_server: Any, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 4)
    a, b, c, d = show.seat_ids
    first = (await reserve(client, user, show, [a, b])).json()["reservations"]
    r = await client.post(
        "/api/v1/seat-reservations/extend",
        params={"additional_minutes": 2},
        json={"screening_id": show.id, "seat_ids": [a]},
        headers=user.headers,
    )
    assert r.status_code == 200, r.text
    again = await reserve(client, user, show, [a, b, c])
    assert again.status_code == 201, again.text
    rows = again.json()["reservations"]
    assert again.json()["message"] == "Reserved 3 seats for 7 minutes"
    assert [x["id"] for x in rows[:2]] == [x["id"] for x in first]
    assert rows[0]["expires_at"] == r.json()["reservations"][0]["expires_at"]
    assert rows[1] == first[1]
    assert rows[2]["id"] not in {x["id"] for x in first}
    # Another process knows nothing of these rows in memory: it finds them in PostgreSQL, once
    # this process's writer has written them (under load, up to its batch interval later).
    await history_rows(db, user.id, 3)
    other = make_server()
    async with httpx.AsyncClient(base_url=other.url, timeout=15) as elsewhere:
        there = await elsewhere.post(
            RESERVE, json={"screening_id": show.id, "seat_ids": [c, d]}, headers=user.headers
        )
    assert there.status_code == 201, there.text
    assert there.json()["reservations"][0]["id"] == rows[2]["id"]
    ids = [*(x["id"] for x in rows), there.json()["reservations"][1]["id"]]
    history = await history_rows(db, user.id, 4)
    assert sorted(r["id"] for r in history) == sorted(ids)
    assert {r["status"] for r in history} == {"active"}


async def history_rows(db: asyncpg.Connection, user_id: int, count: int) -> list[Any]:
    """The user's reservation rows once there are ``count`` (they are written in the background)."""
    async with asyncio.timeout(5):
        while True:
            rows = await db.fetch("SELECT id, status FROM reservations WHERE user_id = $1", user_id)
            if len(rows) >= count:
                return list(rows)
            await asyncio.sleep(0.05)


async def test_history_waits_out_a_lock_instead_of_dropping_the_change(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 2)
    async with db.transaction():
        await db.execute("LOCK TABLE reservations IN SHARE MODE")  # blocks every write to it
        assert (await reserve(client, user, show, show.seat_ids[:1])).status_code == 201
        await asyncio.sleep(1.0)  # well past any lock timeout the writer might use
    assert [r["status"] for r in await history_rows(db, user.id, 1)] == ["active"]


async def test_history_drops_only_when_its_queue_is_full(
    backend_urls: tuple[str, str],
) -> None:
    pool = await asyncpg.create_pool(backend_urls[1], min_size=0, max_size=1)
    try:
        writer = HistoryWriter(pool, queue_size=2)
        for n in range(5):
            writer.submit(Closed(1, 1, [n], "cancelled"))
        assert writer.dropped == 3
    finally:
        await pool.close()


async def test_a_contended_screening_is_refused_from_the_mirror_with_the_same_answer(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    user: Account,
    other_user: Account,
) -> None:
    show = await make.show(db, 3)
    seats = show.seat_ids[:2]
    assert (await reserve(client, user, show, seats[:1])).status_code == 201
    before = await refused_locally(client)
    first = await reserve(client, other_user, show, seats)  # Redis refuses: the mirror starts
    assert first.status_code == 409
    assert await refused_locally(client) == before  # Redis answered that one
    app: Any = server._server.config.app
    mirrors = app.state.services.engine.mirrors
    for _ in range(300):
        if show.id in mirrors:
            break
        await asyncio.sleep(0.01)
    refusals = mirrors.refusals  # the server is shared: other tests' refusals are counted too
    again = await reserve(client, other_user, show, seats)
    assert (again.status_code, again.json()) == (409, first.json())
    assert again.json() == {"detail": f"Seats [{seats[0]}] are currently reserved by other users"}
    assert mirrors.refusals == refusals + 1
    assert await refused_locally(client) == before + 1  # seatlock_holds_refused_locally_total


async def refused_locally(client: httpx.AsyncClient) -> float:
    """Hold refusals the seat mirrors answered, as /metrics counts them."""
    return value(await scrape(client), "seatlock_holds_refused_locally_total", {"outcome": "taken"})


async def test_ids_are_taken_only_for_new_holds_and_a_hold_without_ids_is_let_go(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    redis: Redis,
    user: Account,
    other_user: Account,
) -> None:
    show = await make.show(db, 4)
    services = server._server.config.app.state.services  # type: ignore[attr-defined]
    ids = services.holds.ids
    assert (await reserve(client, user, show, show.seat_ids[:2])).status_code == 201
    before = ids._next
    assert (await reserve(client, other_user, show, show.seat_ids[1:3])).status_code == 409
    assert (await reserve(client, user, show, show.seat_ids[:3])).status_code == 201
    assert ids._next == before + 1  # the refusal took none, re-holding two seats took one
    # No id to be had: PostgreSQL unreachable while a new block is due.
    dead = await asyncpg.create_pool(server.settings.database_url, min_size=0, max_size=1)
    await dead.close()
    services.holds.ids = ReservationIds(dead)
    try:
        r = await reserve(client, other_user, show, [show.seat_ids[3]])
    finally:
        services.holds.ids = ids
    assert r.status_code == 503, r.text
    assert show.seat_ids[3] not in await held_in_redis(redis, show)
    assert (await reserve(client, other_user, show, [show.seat_ids[3]])).status_code == 201


async def test_a_failed_request_never_lets_go_of_an_earlier_hold(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    server: LiveServer,
    redis: Redis,
    user: Account,
) -> None:
    # Seat A is the user's from an earlier request that has no history row here (another
    # process's, not yet written), so a request for A+B needs ids for both. No id can be had:
    # the request is refused and only B, which its own grant took, is let go.
    show = await make.show(db, 2)
    a, b = show.seat_ids
    pool = await asyncpg.create_pool(server.settings.database_url, min_size=1, max_size=1)
    transport = open_transport("fast", redis)
    try:
        elsewhere = SeatEngine(
            transport, Layouts(pool), hold_ms=300_000, max_hold_ms=1_800_000, max_seats_per_user=10
        )
        await elsewhere.hold(show.id, user.id, [a])
    finally:
        await transport.aclose()
        await pool.close()
    services = server._server.config.app.state.services  # type: ignore[attr-defined]
    ids = services.holds.ids
    dead = await asyncpg.create_pool(server.settings.database_url, min_size=0, max_size=1)
    await dead.close()
    services.holds.ids = ReservationIds(dead)
    try:
        r = await reserve(client, user, show, [a, b])
    finally:
        services.holds.ids = ids
    assert r.status_code == 503, r.text
    assert await held_in_redis(redis, show) == {a: user.id}


async def test_without_seat_mirrors_every_attempt_runs_the_script(
    db: asyncpg.Connection, make_server: Any, user: Account, other_user: Account
) -> None:
    live: LiveServer = make_server(seat_mirrors=False)
    engine = live._server.config.app.state.services.engine  # type: ignore[attr-defined]
    assert engine.mirrors is None
    show = await make.show(db, 2)
    async with httpx.AsyncClient(base_url=live.url, timeout=15) as c:
        assert (await reserve(c, user, show, show.seat_ids[:1])).status_code == 201
        # The first request of a session also checks the session in Redis (one more call).
        assert (await reserve(c, other_user, show, show.seat_ids[:1])).status_code == 409
        calls = engine.transport.calls
        for _ in range(3):
            assert (await reserve(c, other_user, show, show.seat_ids[:1])).status_code == 409
        assert engine.transport.calls == calls + 3


def test_a_reservation_renders_as_the_reservation_out_the_hold_route_declares() -> None:
    # The hold route renders the service's rows as they are (no ReservationOut per seat): the
    # two must have the same fields in the same order, or the answer would differ from its schema.
    assert Reservation.__struct_fields__ == ReservationOut.__struct_fields__
    row = Reservation(7, 2, 501, 3, utc(1_796_476_759_410), utc(1_796_477_059_410))
    out = ReservationOut(
        row.id,
        row.screening_id,
        row.seat_id,
        row.user_id,
        row.reserved_at,
        row.expires_at,
        row.status,
    )
    assert dumps(row) == dumps(out)
