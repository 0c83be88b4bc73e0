"""Resending a ticket's confirmation mail: a mail server that cannot take it is a 503 logged as
the mail server's failure (never a 500, nor blamed on PostgreSQL), and a ticket's mail goes out
at most once a minute (429 with Retry-After), a failed send not counting."""

from __future__ import annotations

import logging
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from seatlock.accounts.mail import Mailer
from seatlock.accounts.throttle import TICKET_MAIL_SENT
from seatlock.server.embedded import free_port
from tests import factories as make
from tests.support import LiveServer, book_held, make_account, reserve

NOT_SENT = {"detail": "The mail could not be sent right now; please try again"}


async def _ticket(client: httpx.AsyncClient, db: asyncpg.Connection) -> tuple[int, dict[str, str]]:
    user = await make_account(client, "mail@example.com", "Mail")
    show = await make.show(db, 1)
    assert (await reserve(client, user, show, show.seat_ids)).status_code == 201
    r = await book_held(client, user, show, show.seat_ids, "pay_mail")
    assert r.status_code == 201, r.text
    return r.json()[0]["id"], user.headers


async def test_a_mail_server_that_refuses_is_a_503_and_the_resend_may_be_retried(
    make_server: Callable[..., LiveServer],
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(smtp_host="127.0.0.1", smtp_port=free_port())  # nothing listens there
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        ticket, headers = await _ticket(client, db)
        with caplog.at_level(logging.WARNING):
            for _ in range(2):  # the failed send did not use up the ticket's turn
                r = await client.post(f"/api/v1/tickets/{ticket}/resend", headers=headers)
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "1"
                assert r.json() == NOT_SENT
    lines = [record.getMessage() for record in caplog.records]
    assert any("not sent: ConnectionRefusedError" in line for line in lines), lines
    assert not any("postgresql" in line for line in lines), lines


async def test_a_tickets_mail_is_resent_at_most_once_a_minute(
    server: LiveServer, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    ticket, headers = await _ticket(client, db)
    r = await client.post(f"/api/v1/tickets/{ticket}/resend", headers=headers)
    assert r.status_code == 200, r.text
    r = await client.post(f"/api/v1/tickets/{ticket}/resend", headers=headers)
    assert r.status_code == 429, r.text
    assert r.json() == {"detail": TICKET_MAIL_SENT}
    assert 1 <= int(r.headers["retry-after"]) <= 60
    mails = [m for m in Mailer(server.settings).outbox() if m.kind == "ticket_confirmation"]
    assert len(mails) == 1
