"""Tickets over real HTTP: booking (quick and from holds), idempotency, management, admin."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from seatlock.services.payments import booking_scope, sign, ticket_scope
from tests import factories as make
from tests.support import (
    FROM_HOLD,
    Account,
    LiveServer,
    active_tickets,
    availability,
    book_held,
    held_in_redis,
    make_account,
    reserve,
)

BOOK = "/api/v1/tickets/book"


async def test_book_from_reservation_prices_and_sells(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    show = await make.show(
        db, 5, price="10.00", seat_types=["standard", "premium", "vip", "couple", "wheelchair"]
    )
    assert (await reserve(client, user, show, show.seat_ids)).status_code == 201
    r = await book_held(client, user, show, show.seat_ids, "pay_1")
    assert r.status_code == 201, r.text
    tickets = r.json()
    assert [t["price"] for t in tickets] == [10.0, 12.5, 15.0, 20.0, 10.0]
    assert {t["status"] for t in tickets} == {"confirmed"}
    assert {t["payment_id"] for t in tickets} == {"pay_1"}
    assert all(t["confirmed_at"] and t["booked_at"] for t in tickets)
    assert [t["seat_id"] for t in tickets] == show.seat_ids
    assert len(await active_tickets(db, show)) == 5
    seats = await availability(client, show)
    assert {s["status"] for s in seats.values()} == {"booked"}
    assert await held_in_redis(redis, show) == {}
    mine = (await client.get("/api/v1/tickets/my-tickets", headers=user.headers)).json()
    assert sorted(t["id"] for t in mine) == sorted(t["id"] for t in tickets)
    history = await client.get(
        "/api/v1/seat-reservations/my-reservations",
        params={"include_expired": "true"},
        headers=user.headers,
    )
    assert [h["status"] for h in history.json()] == ["booked"] * 5


async def test_booking_needs_a_live_hold_of_your_own(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    show = await make.show(db, 3)
    a, b = show.seat_ids[:2]
    assert (await reserve(client, user, show, [a])).status_code == 201
    r = await book_held(client, other_user, show, [a], "pay_x")
    assert r.status_code == 409
    r = await book_held(client, user, show, [a, b], "pay_y")  # b is not held
    assert r.status_code == 409
    assert "expired" in r.json()["detail"]
    assert await active_tickets(db, show) == []
    assert await db.fetchval("SELECT count(*) FROM bookings") == 0
    body = {"screening_id": show.id, "seat_ids": [a]}  # payment_id is required here
    assert (await client.post(FROM_HOLD, json=body, headers=user.headers)).status_code == 422


async def test_payment_id_reused_for_other_seats_is_409(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    show = await make.show(db, 4)
    a, b, c = show.seat_ids[:3]
    assert (await reserve(client, user, show, [a, b])).status_code == 201
    first = await book_held(client, user, show, [a, b], "pay_same")
    assert first.status_code == 201
    again = await book_held(client, user, show, [a, b], "pay_same")
    assert again.status_code == 201
    assert [t["id"] for t in again.json()] == [t["id"] for t in first.json()]
    assert (await reserve(client, user, show, [c])).status_code == 201
    assert (await book_held(client, user, show, [c], "pay_same")).status_code == 409
    assert (await reserve(client, other_user, show, [show.seat_ids[3]])).status_code == 201
    r = await book_held(client, other_user, show, [a, b], "pay_same")
    assert r.status_code == 409
    assert len(await active_tickets(db, show)) == 2


async def test_fifty_concurrent_duplicates_make_one_booking(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 4)
    seats = show.seat_ids[:3]
    assert (await reserve(client, user, show, seats)).status_code == 201
    results = await asyncio.gather(
        *(book_held(client, user, show, seats, "pay_race") for _ in range(50))
    )
    assert {r.status_code for r in results} == {201}, {r.text for r in results}
    ids = {tuple(t["id"] for t in r.json()) for r in results}
    assert len(ids) == 1
    assert await db.fetchval("SELECT count(*) FROM bookings") == 1
    assert len(await active_tickets(db, show)) == 3


async def test_quick_book_pending_then_confirm(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account, other_user: Account
) -> None:
    show = await make.show(db, 3, price="8.50")
    body = {"screening_id": show.id, "seat_ids": show.seat_ids[:2]}
    r = await client.post(BOOK, json=body, headers=user.headers)
    assert r.status_code == 201, r.text
    tickets = r.json()
    assert {t["status"] for t in tickets} == {"pending"}
    assert {t["price"] for t in tickets} == {8.5}
    r = await client.post(BOOK, json=body, headers=other_user.headers)
    assert r.status_code == 409
    assert r.json() == {"detail": f"Seats {sorted(show.seat_ids[:2])} are already booked"}
    ticket = tickets[0]["id"]
    url = f"/api/v1/tickets/{ticket}/confirm-payment"
    assert (await client.post(url, headers=other_user.headers)).status_code == 404
    r = await client.post(url, json={"payment_id": "pay_late"}, headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "confirmed"
    assert r.json()["payment_id"] == "pay_late"
    assert (await client.post(url, headers=user.headers)).status_code == 400
    r = await client.post(
        f"/api/v1/tickets/{tickets[1]['id']}/confirm-payment", headers=user.headers
    )
    assert r.status_code == 200
    with_payment = {**body, "seat_ids": [show.seat_ids[2]], "payment_id": "pay_q"}
    r = await client.post(BOOK, json=with_payment, headers=user.headers)
    assert r.status_code == 201
    assert r.json()[0]["status"] == "confirmed"
    again = await client.post(BOOK, json=with_payment, headers=user.headers)
    assert again.json() == r.json()


async def test_tickets_of_others_are_404_and_cancel_frees_the_seat(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    user: Account,
    other_user: Account,
    admin: Account,
) -> None:
    show = await make.show(db, 2)
    body = {"screening_id": show.id, "seat_ids": show.seat_ids[:1], "payment_id": "pay_c"}
    ticket = (await client.post(BOOK, json=body, headers=user.headers)).json()[0]
    url = f"/api/v1/tickets/{ticket['id']}"
    assert (await client.get(url, headers=other_user.headers)).status_code == 404
    assert (await client.delete(url, headers=other_user.headers)).status_code == 404
    assert (await client.get("/api/v1/tickets/999999999", headers=user.headers)).status_code == 404
    assert (await client.get(url, headers=admin.headers)).json()["id"] == ticket["id"]
    assert (await client.get(url, headers=user.headers)).json() == ticket
    r = await client.delete(url, headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert (await client.delete(url, headers=user.headers)).status_code == 400
    seat = show.seat_ids[0]
    assert (await availability(client, show))[seat]["status"] == "available"
    assert (await reserve(client, other_user, show, [seat])).status_code == 201


async def test_cannot_cancel_after_the_screening_started(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 1)
    body = {"screening_id": show.id, "seat_ids": show.seat_ids, "payment_id": "pay_s"}
    ticket = (await client.post(BOOK, json=body, headers=user.headers)).json()[0]
    await db.execute(
        "UPDATE screenings SET starts_at = now() - $2::interval, ends_at = now() + $2::interval"
        " WHERE id = $1",
        show.id,
        timedelta(minutes=10),
    )
    r = await client.delete(f"/api/v1/tickets/{ticket['id']}", headers=user.headers)
    assert r.status_code == 400
    assert r.json() == {"detail": "Cannot cancel tickets for screenings that have started"}


async def test_admin_list_status_changes_and_resend(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    user: Account,
    other_user: Account,
    admin: Account,
    server: Any,
) -> None:
    show = await make.show(db, 3)
    for account, seat in ((user, 0), (other_user, 1)):
        body = {"screening_id": show.id, "seat_ids": [show.seat_ids[seat]]}
        assert (await client.post(BOOK, json=body, headers=account.headers)).status_code == 201
    url = "/api/v1/tickets/"
    assert (await client.get(url, headers=user.headers)).status_code == 403
    everything = (await client.get(url, headers=admin.headers)).json()
    assert len(everything) == 2
    theirs = (
        await client.get(url, params={"user_id": other_user.id}, headers=admin.headers)
    ).json()
    assert [t["user_id"] for t in theirs] == [other_user.id]
    page = (await client.get(url, params={"skip": 1, "limit": 1}, headers=admin.headers)).json()
    assert len(page) == 1
    assert (await client.get(url, params={"limit": 201}, headers=admin.headers)).status_code == 422
    ticket = theirs[0]["id"]
    status_url = f"/api/v1/tickets/{ticket}/status"
    r = await client.put(status_url, json={"status": "refunded"}, headers=admin.headers)
    assert r.status_code == 400  # pending -> refunded is not a transition
    r = await client.put(status_url, json={"status": "confirmed"}, headers=admin.headers)
    assert r.json()["status"] == "confirmed"
    r = await client.put(status_url, json={"status": "refunded"}, headers=admin.headers)
    assert r.json()["status"] == "refunded"
    assert (await availability(client, show))[show.seat_ids[1]]["status"] == "available"
    r = await client.put(status_url, json={"status": "confirmed"}, headers=user.headers)
    assert r.status_code == 403
    r = await client.put(status_url, json={"status": "gone"}, headers=admin.headers)
    assert r.status_code == 422
    mine = everything[-1]["id"] if everything[-1]["user_id"] == user.id else everything[0]["id"]
    assert (
        await client.post(f"/api/v1/tickets/{mine}/resend", headers=other_user.headers)
    ).status_code == 404
    r = await client.post(f"/api/v1/tickets/{mine}/resend", headers=user.headers)
    assert r.status_code == 200
    mails = [m for m in _outbox(server) if m.kind == "ticket_confirmation"]
    assert [m.to for m in mails] == [user.email]


def _outbox(server: Any) -> list[Any]:
    from seatlock.accounts.mail import Mailer

    return Mailer(server.settings).outbox()


async def test_database_down_is_503_and_keeps_the_holds(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    show = await make.show(db, 2)
    seats = show.seat_ids
    assert (await reserve(client, user, show, seats)).status_code == 201
    # A trigger that refuses the insert stands in for PostgreSQL failing at commit time.
    await db.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'down' USING ERRCODE = '57P01'; END $$;"
        " CREATE TRIGGER refuse BEFORE INSERT ON tickets FOR EACH ROW EXECUTE FUNCTION refuse()"
    )
    try:
        r = await book_held(client, user, show, seats, "pay_down")
    finally:
        await db.execute("DROP TRIGGER refuse ON tickets; DROP FUNCTION refuse()")
    assert r.status_code == 503, r.text
    assert await db.fetchval("SELECT count(*) FROM bookings") == 0
    # Nothing sold, and the user keeps the seats to retry the payment.
    assert await held_in_redis(redis, show) == dict.fromkeys(seats, user.id)
    assert {s["status"] for s in (await availability(client, show)).values()} == {"reserved"}


async def test_bad_booking_input_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, redis: Redis, user: Account
) -> None:
    show = await make.show(db, 2)
    other = await make.show(db, 1)
    a = show.seat_ids[0]
    cases = [
        ({"screening_id": show.id, "seat_ids": [a, a]}, 422),
        ({"screening_id": show.id, "seat_ids": []}, 422),
        ({"screening_id": show.id, "seat_ids": ["x"]}, 422),  # "1" is 1, as FastAPI reads it
        ({"screening_id": show.id, "seat_ids": [a], "payment_id": ""}, 422),
        ({"screening_id": show.id, "seat_ids": [a, other.seat_ids[0]]}, 404),
        ({"screening_id": 10**12, "seat_ids": [a]}, 404),
    ]
    for body, status in cases:
        r = await client.post(BOOK, json=body, headers=user.headers)
        assert r.status_code == status, r.text
        paid = {"payment_id": "pay_bad", **body}
        r = await client.post(FROM_HOLD, json=paid, headers=user.headers)
        assert r.status_code in {status, 409 if status == 404 else status}, r.text
    r = await client.post(
        BOOK,
        content=b'{"screening_id": ',
        headers={**user.headers, "content-type": "application/json"},
    )
    assert r.status_code == 422  # malformed JSON, as FastAPI answers it
    assert await db.fetchval("SELECT count(*) FROM tickets") == 0
    assert await db.fetchval("SELECT count(*) FROM bookings") == 0
    assert await held_in_redis(redis, show) == {}


async def test_hmac_payments_refuse_made_up_payment_ids_with_402(
    make_server: Any, db: asyncpg.Connection
) -> None:
    secret = "p" * 40
    server: LiveServer = make_server(payment_verifier="hmac", payment_secret=secret)
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        user = await make_account(client, "payer@example.com", "Payer")
        show = await make.show(db, 3)
        seats = show.seat_ids[:2]
        assert (await reserve(client, user, show, seats)).status_code == 201
        r = await book_held(client, user, show, seats, "pay_made_up")
        assert r.status_code == 402
        assert r.json() == {"detail": "payment_id is not a signed payment"}
        paid = sign(secret, "pay_1", booking_scope(user.id, show.id, seats))
        assert (await book_held(client, user, show, seats, paid)).status_code == 201
        quick = {"screening_id": show.id, "seat_ids": show.seat_ids[2:]}
        r = await client.post(BOOK, json={**quick, "payment_id": paid}, headers=user.headers)
        assert r.status_code == 402  # signed for other seats
        r = await client.post(BOOK, json=quick, headers=user.headers)
        assert r.status_code == 201  # unpaid: pending
        url = f"/api/v1/tickets/{r.json()[0]['id']}/confirm-payment"
        r = await client.post(url, json={"payment_id": "pay_late"}, headers=user.headers)
        assert r.status_code == 402
        assert (await client.post(url, headers=user.headers)).status_code == 402
        assert len(await active_tickets(db, show)) == 3
        ticket_paid = sign(secret, "pay_late", ticket_scope(int(url.split("/")[4])))
        r = await client.post(url, json={"payment_id": ticket_paid}, headers=user.headers)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "confirmed"


async def test_an_unpaid_ticket_is_cancelled_at_its_deadline_and_its_seat_announced(
    make_server: Any, db: asyncpg.Connection
) -> None:
    server: LiveServer = make_server(payment_seconds=1, sweep_interval_seconds=0.2)
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        user = await make_account(client, "late@example.com", "Late Payer")
        show = await make.show(db, 2)
        body = {"screening_id": show.id, "seat_ids": show.seat_ids[:1]}
        r = await client.post(BOOK, json=body, headers=user.headers)
        assert r.status_code == 201
        ticket = r.json()[0]["id"]
        assert (await availability(client, show))[show.seat_ids[0]]["status"] == "booked"
        for _ in range(50):  # the deadline loop runs every 0.2 s; the deadline is 1 s
            if (await availability(client, show))[show.seat_ids[0]]["status"] == "available":
                break
            await asyncio.sleep(0.1)
        assert (await availability(client, show))[show.seat_ids[0]]["status"] == "available"
        assert await db.fetchval("SELECT status FROM tickets WHERE id = $1", ticket) == "cancelled"
        url = f"/api/v1/tickets/{ticket}/confirm-payment"
        r = await client.post(url, json={"payment_id": "pay_too_late"}, headers=user.headers)
        assert r.status_code == 400


async def test_unpaid_tickets_count_toward_the_per_user_cap(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 100)
    answers = []
    for call in range(10):  # the attack: 10 calls of 10 seats, never paying
        seats = show.seat_ids[call * 10 : call * 10 + 10]
        body = {"screening_id": show.id, "seat_ids": seats}
        answers.append(await client.post(BOOK, json=body, headers=user.headers))
    assert [r.status_code for r in answers] == [201] + [409] * 9
    assert "at most 10 seats" in answers[1].json()["detail"]
    assert len(await active_tickets(db, show)) == 10
    r = await reserve(client, user, show, show.seat_ids[10:11])
    assert r.status_code == 409  # holds and unpaid tickets share the cap
    first = answers[0].json()[0]["id"]
    url = f"/api/v1/tickets/{first}/confirm-payment"
    assert (await client.post(url, json={"payment_id": "pay_1"}, headers=user.headers)).is_success
    assert (await reserve(client, user, show, show.seat_ids[10:11])).status_code == 201
    r = await client.delete(f"/api/v1/tickets/{answers[0].json()[1]['id']}", headers=user.headers)
    assert r.status_code == 200
    assert (await reserve(client, user, show, show.seat_ids[11:12])).status_code == 201
