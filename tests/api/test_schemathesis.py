"""schemathesis against the live server: every operation of /openapi.json, signed in as a user and
as an admin, keeps the published schema.

Per operation a small, fixed budget of generated requests (a fixed seed, so a run is repeatable),
valid and invalid ones, with ids that often name real rows seeded first. The checks: no 5xx, every
status code documented, the documented content type, the body valid against the documented
schema, and no schema-valid request refused with a 4xx other than the refusals a valid request can
meet (401, 403, 404, 409, 429).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis
from schemathesis.engine import events

from tests import factories as make
from tests.support import Account, LiveServer, make_account

pytestmark = [pytest.mark.schemathesis, pytest.mark.timeout(180)]

SEED = 20261213
MAX_EXAMPLES = 5
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "positive_data_acceptance",
)
# They end the session the run signs in with (or the account itself): run on their own, with an
# account of their own, so that every other operation keeps a live token.
SESSION_ENDING = ("POST /api/v1/auth/logout", "DELETE /api/v1/users/me")
VALID_REFUSALS = ["2xx", "3xx", "401", "403", "404", "409", "429"]
# Operations whose schema-valid requests may still be refused, by a rule JSON Schema cannot state:
# the refusal is part of the contract (spec/api-guide.md), the status is the guide's.
RULES_BEYOND_SCHEMA = {
    # 400 "Incorrect current password": a credential, like a 401.
    "PUT /api/v1/auth/change-password": ["400", "422"],  # 422: passwords.py check_strength mix
    "POST /api/v1/auth/register": ["422"],  # check_strength: not all letters nor all digits
    # 400 "Invalid or expired reset token": a credential, like a 401; 422 the same rule.
    "POST /api/v1/auth/reset-password": ["400", "422"],
    # 400 "Ticket is cancelled" / "Only pending tickets ...": the ticket's state, like a 409.
    "DELETE /api/v1/tickets/{ticket_id}": ["400"],
    "POST /api/v1/tickets/{ticket_id}/confirm-payment": ["400"],
    "POST /api/v1/tickets/{ticket_id}/resend": ["400"],
    "PUT /api/v1/tickets/{ticket_id}/status": ["400"],
    # 422 "Unknown cinema ids": rows that do not exist, like a 404.
    "PUT /api/v1/users/me/preferences": ["422"],
    # 415: the bytes are not a PNG, JPEG, WebP or GIF image.
    "PUT /api/v1/users/me/profile-picture": ["415"],
    # 422: one field against another (ends_at after starts_at, from before to, either/or).
    "POST /api/v1/screenings/": ["422"],
    "PUT /api/v1/screenings/{screening_id}": ["422"],
    "GET /api/v1/movies/advanced-search": ["422"],
    "GET /api/v1/showtimes/": ["422"],  # `from` must be before `to`
    "GET /api/v1/movies/filter": ["422"],
    "GET /api/v1/admin/stats/revenue/period": ["422"],
    "POST /api/v1/rooms/{room_id}/seats/bulk": ["422"],
    "PUT /api/v1/casts/{cast_id}": ["422"],  # "No fields to update"
    # 400 "Cannot reserve seats for past screenings" (as /reserve); 422: near.row_label is not a
    # row of the screening's room.
    "POST /api/v1/seat-reservations/reserve-best": ["400", "422"],
}


async def seed(db: asyncpg.Connection, user: Account) -> dict[str, list[int]]:
    """Rows for the path ids to hit: a cinema, room, seats, movie, screening, a ticket."""
    show = await make.show(db, 6)
    cinema_id = await db.fetchval("SELECT cinema_id FROM rooms WHERE id = $1", show.room_id)
    movie_id = await db.fetchval("SELECT movie_id FROM screenings WHERE id = $1", show.id)
    ticket_id = await make.ticket(db, user.id, show.id, show.seat_ids[0], status="pending")
    return {
        "screening_id": [show.id],
        "showtime_id": [show.id],
        "room_id": [show.room_id],
        "cinema_id": [cinema_id],
        "movie_id": [movie_id],
        "ticket_id": [ticket_id],
        "user_id": [user.id],
        "seat_ids": show.seat_ids,
    }


def config(url: str, token: str, rows: dict[str, list[int]]) -> Any:
    checks: dict[str, Any] = {"enabled": False} | {name: {"enabled": True} for name in CHECKS}
    data: dict[str, Any] = {
        "seed": SEED,
        "base-url": url,
        "workers": 1,
        "headers": {"Authorization": f"Bearer {token}"},
        # No NUL characters: every text of a request is refused with a 422 when it has one
        # (api/rendering.py), a rule of the whole API that the schema does not repeat per string.
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "allow-x00": False,
        },
        "checks": checks,
        "phases": {"stateful": {"enabled": False}, "coverage": {"enabled": False}},
        "dictionaries": {name: {"values": values} for name, values in rows.items()},
        "parameters": {name: {"dictionary": name, "probability": 0.5} for name in rows},
        "warnings": False,
        "operations": [
            {
                "include-name": name,
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": VALID_REFUSALS + extra}
                },
            }
            for name, extra in RULES_BEYOND_SCHEMA.items()
        ],
    }
    return schemathesis.Config.from_dict(data)


def run(url: str, token: str, rows: dict[str, list[int]], only: tuple[str, ...] = ()) -> list[str]:
    """Every failed check of one run, as 'METHOD /path: check: message'."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config(url, token, rows))
    schema = schema.include(name=list(only)) if only else schema.exclude(name=list(SESSION_ENDING))
    failures: list[str] = []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            failures += _failures_of(event)
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"error: {event!r}")
    return failures


def _failures_of(event: events.ScenarioFinished) -> list[str]:
    found = []
    for case_id, checks in event.recorder.checks.items():
        for check in checks:
            if check.failure_info is not None:
                failure = check.failure_info.failure
                interaction = event.recorder.interactions.get(case_id)
                response = interaction.response if interaction is not None else None
                answer = f"{response.status_code} {response.content[:200]!r}" if response else ""
                found.append(
                    f"{event.recorder.label}: {check.name}: {failure.title}: {answer}\n"
                    f"  {check.failure_info.code_sample[:500]}"
                )
    return found


async def test_every_operation_keeps_the_published_schema(
    server: LiveServer,
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    user: Account,
    admin: Account,
) -> None:
    rows = await seed(db, user)
    failures = []
    for account in (user, admin):
        failures += await asyncio.to_thread(run, server.url, account.token, rows)
    for n, name in enumerate(SESSION_ENDING):
        own = await make_account(client, f"ending{n}@example.com", "Ending")
        failures += await asyncio.to_thread(run, server.url, own.token, rows, (name,))
    assert not failures, "\n".join(sorted(set(failures)))
