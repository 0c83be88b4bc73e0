"""The web app as a cinema-goer meets it on release day: a whole journey without a console error,
signing out from a live map, a refresh of the session that fails for a passing reason (the
person stays signed in, on their map), a forgotten password reset through the mail's link, text
of the server's that carries markup (shown as text), and the warning before a hold runs out."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from playwright.async_api import ConsoleMessage, WebSocketRoute, expect

from seatlock.accounts.mail import Mail, Mailer
from tests import factories as make
from tests.browser.conftest import AppPage, MapOpener, Opener, Screening, until
from tests.browser.test_webapp_session import fulfil
from tests.support import Account, LiveServer, make_account

pytestmark = pytest.mark.asyncio(loop_scope="session")

SESSION = "seatlock.session"
# Chromium logs every answer of 4xx/5xx as a console error: those are the API's refusals.
LOADING = "Failed to load resource"


def console_errors(tab: AppPage) -> list[str]:
    """The page's console errors from now on (a list filled as they come)."""
    errors: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith(LOADING):
            errors.append(message.text)

    tab.page.on("console", note)
    return errors


async def stored_session(tab: AppPage) -> object:
    return json.loads(await tab.page.evaluate(f"sessionStorage.getItem('{SESSION}')") or "null")


async def test_a_whole_journey_logs_no_console_error(
    server: LiveServer, screening: Screening, people: tuple[Account, Account], open_app: Opener
) -> None:
    ann = await open_app(server)
    errors = console_errors(ann)
    page = ann.page
    await ann.sign_in(people[0].email, "#/")
    await page.get_by_role("button", name="Tomorrow").click()
    await page.get_by_role("link", name=re.compile("^Orbit of Ash")).click()
    await expect(page.locator(".link")).to_have_text("Live")
    await ann.hold(("B", 4), ("B", 5))
    await page.get_by_role("button", name="Extend by 5 minutes").click()
    await expect(page.get_by_role("alert")).to_contain_text("extended", ignore_case=True)
    await page.get_by_role("link", name="My reservations").click()
    await expect(page.locator("main")).to_contain_text("Row B, seat 4")
    await page.go_back()
    await page.get_by_role("button", name="Book (test payment)").click()
    await expect(page.get_by_role("alert")).to_contain_text("Booked: 2 tickets")
    await page.get_by_role("link", name="My tickets").click()
    ticket = page.locator(".ticket", has_text="Row B, seat 4")
    await ticket.get_by_role("button", name="Cancel ticket").click()
    await ticket.get_by_role("button", name="Yes, cancel it").click()
    await expect(ticket).to_contain_text("cancelled")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("alert")).to_have_text("You are signed out.")
    assert errors == []


async def test_signing_out_on_a_live_map_says_so(
    server: LiveServer, people: tuple[Account, Account], on_the_map: MapOpener
) -> None:
    """The server closes the map's socket (1008) when the session ends: that is the sign-out the
    person asked for, not an expired session."""
    ann = await on_the_map(server, people[0])
    errors = console_errors(ann)
    await ann.page.get_by_role("button", name="Sign out").click()
    await expect(ann.page.get_by_role("heading", name="Movies and showtimes")).to_be_visible()
    await ann.page.wait_for_timeout(1_000)
    await expect(ann.page.get_by_role("alert")).to_have_text("You are signed out.")
    assert errors == []


BUSY = "The service is busy right now. Please try again in a moment."
REFRESH = "**/api/v1/auth/refresh-token"
UNAVAILABLE = fulfil(503, {"Retry-After": "5"}, {"detail": "Service unavailable"})


async def test_a_refresh_that_fails_for_a_passing_reason_keeps_the_session(
    server: LiveServer, people: tuple[Account, Account], on_the_map: MapOpener
) -> None:
    """A 401 is answered by refreshing the token; when the refresh itself meets a 503 (or no
    network), the session still stands: the person is told to try again, not signed out."""
    ann = await on_the_map(server, people[0])
    page = ann.page
    await page.route(REFRESH, UNAVAILABLE)
    expired = fulfil(401, {}, {"detail": "Token has expired"})
    await page.route("**/api/v1/seat-reservations/reserve", expired, times=1)
    await ann.select("B", 2)
    await page.get_by_role("button", name="Hold selected seats").click()
    await expect(page.get_by_role("alert")).to_have_text(BUSY)
    await expect(page.get_by_role("heading", name="Orbit of Ash")).to_be_visible()
    assert await stored_session(ann) is not None
    await page.unroute(REFRESH)
    await page.get_by_role("button", name="Hold selected seats").click()  # B2 is still selected
    await expect(ann.seat("B", 2)).to_have_attribute("data-state", "mine")


async def test_a_refused_socket_whose_refresh_meets_a_503_reconnects(
    server: LiveServer, people: tuple[Account, Account], open_app: Opener, screening: Screening
) -> None:
    """The socket closed with 1008 (token refused) and the refresh answered 503: the map keeps
    trying with back-off; it does not send the person to sign in while their session stands."""
    ann = await open_app(server)
    sockets: list[WebSocketRoute] = []

    async def relay(socket: WebSocketRoute) -> None:
        sockets.append(socket)
        socket.connect_to_server()

    await ann.page.route_web_socket(re.compile(r"/ws/screenings/\d+"), relay)
    await ann.open_map(people[0].email, screening.id)
    await ann.page.route(REFRESH, UNAVAILABLE)
    await sockets[0].close(code=1008, reason="Invalid token")
    await expect(ann.page.locator(".link")).to_contain_text("reconnecting")
    await expect(ann.page.locator(".link")).to_have_text("Live")
    assert len(sockets) == 2
    await expect(ann.page.get_by_role("heading", name="Orbit of Ash")).to_be_visible()
    assert await stored_session(ann) is not None
    await ann.hold(("C", 2))


async def test_a_forgotten_password_is_reset_through_the_mails_link(
    server: LiveServer, people: tuple[Account, Account], open_app: Opener
) -> None:
    """The reset mail links to /reset-password?token=... on this server: it opens the app's
    page for a new password (before, that address was a 404 and the app had no way to ask)."""
    ann = await open_app(server)
    errors = console_errors(ann)
    page = ann.page
    await page.goto("/app#/signin")
    await page.get_by_role("link", name="Forgot your password?").click()
    await page.get_by_label("Email").fill(people[0].email)
    await page.get_by_role("button", name="Send the reset link").click()
    await expect(page.get_by_role("alert")).to_contain_text("a password reset link has been sent")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    link = re.search(r"Open (\S+) within", (await reset_mail(server)).body)
    assert link is not None
    await page.goto(urlsplit(link.group(1))._replace(scheme="", netloc="").geturl())
    await expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    await page.get_by_label("New password", exact=True).fill("Fresh-start-42")
    await page.get_by_role("button", name="Set the new password").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "Password has been reset successfully. Please sign in."
    )
    await page.get_by_label("Email").fill(people[0].email)
    await page.get_by_label("Password").fill("Fresh-start-42")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text("Signed in as Ann Example")).to_be_visible()
    assert errors == []


async def reset_mail(server: LiveServer) -> Mail:
    """The password reset mail (it is sent after the answer)."""
    mailer = Mailer(server.settings)
    await until(lambda: any(m.kind == "password_reset" for m in mailer.outbox()))
    return [m for m in mailer.outbox() if m.kind == "password_reset"][-1]


async def test_a_screen_reader_is_warned_before_the_hold_runs_out(
    server: LiveServer, screening: Screening, people: tuple[Account, Account], open_app: Opener
) -> None:
    """The countdown is not a live region (it would talk every second): a minute before the
    hold ends the status region says so, with time to extend it (WCAG 2.2.1)."""
    ann = await open_app(server)
    await ann.page.clock.install()
    await ann.open_map(people[0].email, screening.id)
    # The app reads the server's clock from each answer's Date header: one landing after the
    # jump below would take the page back to the server's time (on a busy machine, the answers
    # to the hold may come that late). The jump waits for every request to be answered.
    pending: set[Any] = set()
    ann.page.on("request", lambda request: pending.add(request))
    ann.page.on("requestfinished", lambda request: pending.discard(request))
    ann.page.on("requestfailed", lambda request: pending.discard(request))
    await ann.hold(("B", 7))
    status = ann.page.get_by_role("status")
    await expect(status).not_to_contain_text("ends in less than a minute")
    await until(lambda: not pending)
    await ann.page.clock.fast_forward((server.settings.hold_seconds - 50) * 1000)
    await expect(status).to_have_text(
        "Your hold on B7 ends in less than a minute. Book or extend it to keep the seats."
    )
    await ann.page.get_by_role("button", name="Extend by 5 minutes").click()
    # Five more minutes: 5-6 left by the page's jumped clock, or 9-10 once the extension's
    # answer (its Date header) has set the page back to the server's time.
    countdown = re.compile(r"held for (?:[5-9]|10):")
    await expect(ann.page.locator("#countdown")).to_contain_text(countdown)


MARKUP = "<img src=x onerror=alert(1)>"


async def test_text_of_the_server_with_markup_in_it_is_shown_as_text(
    server: LiveServer, open_app: Opener
) -> None:
    db = await asyncpg.connect(server.settings.database_url)
    try:
        room = await make.room(db, await make.cinema(db, f"Rex {MARKUP}"), f"Hall {MARKUP}")
        await make.seats(db, room, 4)
        show = await make.screening(db, await make.movie(db, f"Film {MARKUP}"), room)
    finally:
        await db.close()
    async with httpx.AsyncClient(base_url=server.url) as client:
        eve = await make_account(client, "eve@example.com", f"Eve {MARKUP}")
    eve_tab = await open_app(server)
    page = eve_tab.page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await eve_tab.sign_in(eve.email, "#/")
    await page.get_by_role("button", name="Tomorrow").click()
    await expect(page.get_by_role("heading", name=f"Film {MARKUP}")).to_be_visible()
    await expect(page.get_by_text(f"Signed in as Eve {MARKUP}")).to_be_visible()
    await page.goto(f"/app#/screenings/{show}")
    await expect(page.locator(".meta").first).to_contain_text(f"Rex {MARKUP}, Hall {MARKUP}")
    refusal = {"detail": f"No {MARKUP}"}
    await page.route("**/api/v1/seat-reservations/reserve", fulfil(409, {}, refusal))
    await eve_tab.select("A", 1)
    await page.get_by_role("button", name="Hold selected seats").click()
    await expect(page.get_by_role("alert")).to_have_text(f"No {MARKUP}")
    assert await page.locator("img").count() == 0 and dialogs == []
