"""The web app's session and its resilience: the access token is refreshed before it expires, a
revoked session leads to the sign-in page, a lost WebSocket is reconnected and the map re-read
(with If-None-Match), and every error status the API gives is said in words: a 409 in the
server's own words, unless seats of the person's were taken or their hold ended."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Response, Route, WebSocketRoute, expect

from tests.browser.conftest import MapOpener, Opener, Screening, hold_seats, until
from tests.support import PASSWORD, Account, LiveServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

SESSION = "seatlock.session"
AVAILABILITY = re.compile(r"/seat-reservations/screening/\d+/availability$")


async def test_the_token_is_refreshed_before_it_expires(
    server: LiveServer,
    people: tuple[Account, Account],
    on_the_map: MapOpener,
) -> None:
    ann = await on_the_map(server, people[0])
    page = ann.page
    before = json.loads(await page.evaluate(f"sessionStorage.getItem('{SESSION}')"))
    # As if the access token had 61 s left: the refresh is due 60 s before expiry, at once.
    soon = {
        **before,
        "expires_at": int(before["expires_at"]) - before["expires_in"] * 1000 + 61_000,
    }
    await page.evaluate(f"sessionStorage.setItem('{SESSION}', {json.dumps(json.dumps(soon))})")
    async with page.expect_response(lambda r: r.url.endswith("/auth/refresh-token")) as waited:
        await page.reload()
    refreshed = await waited.value
    assert refreshed.status == 200
    assert "authorization" not in refreshed.request.headers  # the refresh token is the proof
    await expect(ann.seat("A", 2)).to_have_attribute("data-state", "available")
    after = json.loads(await page.evaluate(f"sessionStorage.getItem('{SESSION}')"))
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] != before["refresh_token"]  # rotated
    await ann.hold(("A", 2))  # and the new token works


async def test_a_revoked_session_leads_to_sign_in_and_back(
    server: LiveServer,
    screening: Screening,
    people: tuple[Account, Account],
    on_the_map: MapOpener,
) -> None:
    ann = await on_the_map(server, people[0])
    stored = json.loads(await ann.page.evaluate(f"sessionStorage.getItem('{SESSION}')"))
    headers = {"Authorization": f"Bearer {stored['access_token']}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        assert (await client.post("/api/v1/auth/logout")).status_code == 200  # elsewhere
    # The server closes the map's socket of the revoked session (1008): the page learns it at
    # once, its refresh token refused too, without waiting for the person's next click.
    await expect(ann.page.get_by_role("alert")).to_have_text(
        "Your session has expired. Please sign in again."
    )
    await expect(ann.page.get_by_role("heading", name="Sign in")).to_be_visible()
    await ann.page.get_by_label("Email").fill(people[0].email)
    await ann.page.get_by_label("Password").fill(people[0].password)
    await ann.page.get_by_role("button", name="Sign in").click()
    await ann.page.wait_for_url(f"**/app#/screenings/{screening.id}")  # back to the map
    await ann.hold(("A", 6))


async def test_a_lost_socket_is_reconnected_and_the_map_read_again(
    server: LiveServer,
    screening: Screening,
    people: tuple[Account, Account],
    open_app: Opener,
) -> None:
    ann = await open_app(server)
    sockets: list[WebSocketRoute] = []
    reads: list[Response] = []

    async def relay(socket: WebSocketRoute) -> None:
        if len(sockets) == 2:
            # The third connection: a seat is taken while the page has no socket, so no event
            # will tell it; only reading the availability again shows it.
            await hold_seats(server, people[1], screening.id, [screening.seat_ids[4]])
        sockets.append(socket)
        socket.connect_to_server()

    seven = [screening.seat_ids[7]]
    await hold_seats(server, people[1], screening.id, seven)  # Redis has the map now
    await ann.page.route_web_socket(re.compile(r"/ws/screenings/\d+"), relay)
    ann.page.on("response", lambda r: reads.append(r) if AVAILABILITY.search(r.url) else None)
    await ann.open_map(people[0].email, screening.id)
    assert [r.status for r in reads] == [200] and reads[0].headers.get("etag")

    await sockets[0].close(code=1013, reason="Too slow; reconnect")
    await expect(ann.page.locator(".link")).to_have_text("Live")
    await until(lambda: len(reads) == 2)
    assert reads[1].request.headers["if-none-match"] == reads[0].headers["etag"]
    assert reads[1].status == 304  # nothing changed: the map is kept as it is

    await sockets[1].close(code=1006)
    await expect(ann.seat("A", 5)).to_have_attribute("data-state", "held")
    assert len(sockets) == 3 and [r.status for r in reads] == [200, 304, 200]


def fulfil(status: int, headers: dict[str, str], body: Any) -> Callable[[Route], Awaitable[None]]:
    async def answer(route: Route) -> None:
        await route.fulfill(status=status, headers=headers, json=body)

    return answer


ANSWERS: list[tuple[int, dict[str, str], Any, str]] = [
    (503, {"Retry-After": "5"}, {"detail": "Redis unavailable"}, "Please try again in a moment"),
    (429, {"Retry-After": "7"}, {"detail": "Too many requests"}, "Please wait 7 s and try again"),
    (
        422,
        {},
        {"detail": [{"loc": ["body", "seat_ids"], "msg": "too many seats", "type": "x"}]},
        "Please check what you entered: seat_ids: too many seats",
    ),
    (400, {}, {"detail": "Cannot reserve seats for past screenings"}, "past screenings"),
    (
        409,
        {},
        {"detail": "This selection would leave a single empty seat (row B, seat 6)"},
        "This selection would leave a single empty seat (row B, seat 6)",
    ),
]
TAKEN = "someone else got there first"  # a seat race's words: for no other refusal


async def test_every_error_status_is_said_in_words(
    server: LiveServer,
    people: tuple[Account, Account],
    on_the_map: MapOpener,
) -> None:
    """The answers are the API's documented error shapes, given by the test: the server's own
    429 and 503 cannot be caused on demand here."""
    ann = await on_the_map(server, people[0])
    await ann.select("B", 5)
    for status, headers, body, said in ANSWERS:
        answer = fulfil(status, headers, body)
        await ann.page.route("**/api/v1/seat-reservations/reserve", answer)
        await ann.page.get_by_role("button", name="Hold selected seats").click()
        await expect(ann.page.get_by_role("alert")).to_contain_text(said)
        await expect(ann.page.get_by_role("alert")).not_to_contain_text(TAKEN)
        await ann.page.unroute("**/api/v1/seat-reservations/reserve")
    await expect(ann.seat("B", 5)).to_have_attribute("data-state", "selected")  # kept


async def test_a_taken_email_is_said_in_the_servers_words(
    server: LiveServer, people: tuple[Account, Account], open_app: Opener
) -> None:
    tab = await open_app(server)
    await tab.page.goto("/app#/register")
    await tab.page.get_by_label("Full name").fill("Ann Again")
    await tab.page.get_by_label("Email").fill(people[0].email)
    await tab.page.get_by_label("Password").fill(PASSWORD)
    await tab.page.get_by_role("button", name="Register").click()
    await expect(tab.page.get_by_role("alert")).to_have_text("Email already registered")


async def test_more_seats_than_one_may_hold_are_refused_in_the_servers_words(
    server: LiveServer, people: tuple[Account, Account], on_the_map: MapOpener
) -> None:
    """The limit is the server's setting, which the API does not publish: the app cannot stop a
    selection at it, so the server's refusal says it."""
    ann = await on_the_map(server, people[0])
    limit = server.settings.max_seats_per_user
    seats = [(row, number) for row in "BC" for number in range(1, 9)][: limit + 1]
    for row, number in seats:
        await ann.select(row, number)
    await ann.page.get_by_role("button", name="Hold selected seats").click()
    notice = ann.page.get_by_role("alert")
    await expect(notice).to_have_text(f"You can hold at most {limit} seats in this screening")
    for row, number in seats:  # the selection is kept, to be made smaller
        await expect(ann.seat(row, number)).to_have_attribute("data-state", "selected")


async def test_a_booking_refused_because_the_hold_ended_names_the_seat(
    server: LiveServer,
    screening: Screening,
    people: tuple[Account, Account],
    on_the_map: MapOpener,
) -> None:
    """The API's 409 for a hold that lapsed before the booking names the seat by its id."""
    ann = await on_the_map(server, people[0])
    await ann.hold(("C", 5))
    c5 = screening.seat_ids[20]  # rows A, B and C of 8 seats
    ended = {"detail": f"Reservation for seats [{c5}] has expired or does not exist"}
    await ann.page.route("**/api/v1/tickets/book-from-reservation", fulfil(409, {}, ended))
    await ann.page.get_by_role("button", name="Book (test payment)").click()
    notice = ann.page.get_by_role("alert")
    await expect(notice).to_have_text("Nothing was booked: your hold on C5 has ended.")
