"""The web app at /app in a real Chromium: two people on one live seat map, holds that expire,
bookings and cancelled tickets seen by the other, a hold made with the keyboard alone, the focus
kept after Book and Release, a screening that does not exist, and screenshots of the map at
desktop and mobile sizes."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Route, WebSocket, expect

from tests import factories as make
from tests.browser.conftest import MapOpener, Opener, Screening, hold_seats, until
from tests.support import Account, LiveServer, make_account

pytestmark = pytest.mark.asyncio(loop_scope="session")

MOBILE = {"width": 390, "height": 844}
LIVE_WITHIN_MS = 1000  # the promise: another user's hold shows within a second
TAKEN = "someone else got there first"


async def test_another_users_hold_shows_live_and_a_late_attempt_gets_409(
    server: LiveServer,
    people: tuple[Account, Account],
    on_the_map: MapOpener,
) -> None:
    ann, ben = await on_the_map(server, people[0]), await on_the_map(server, people[1])
    # Ben picks A3 and asks to hold it; his request is held back until Ann has taken A3 and A4,
    # so it reaches the server too late: the race the 409 message is for.
    ann_done = asyncio.Event()

    async def late(route: Route) -> None:
        await ann_done.wait()
        await route.continue_()

    await ben.page.route("**/api/v1/seat-reservations/reserve", late)
    await ben.select("A", 3)
    await ben.select("A", 5)
    hold = ben.page.get_by_role("button", name="Hold selected seats")
    await hold.click()

    await ann.hold(("A", 3), ("A", 4))
    started = time.monotonic()
    for number in (3, 4):
        seat = ben.seat("A", number)
        await expect(seat).to_have_attribute("data-state", "held", timeout=LIVE_WITHIN_MS)
        await expect(seat).to_have_attribute(
            "aria-label", f"Row A, seat {number}, held by someone else"
        )
    assert time.monotonic() - started < LIVE_WITHIN_MS / 1000
    # Ben sees it too, not only his screen reader: A3 has left his selection.
    notice = ben.page.get_by_role("alert")
    await expect(notice).to_have_text("A3 was just taken by someone else.")
    await expect(ben.page.locator("#selection")).to_have_text("Selected: A5")
    ann_done.set()
    # The 409 names the seat by its id; Ben is told its row and number.
    await expect(notice).to_have_text(
        f"Sorry, {TAKEN}: A3 was just taken. Please choose other seats."
    )
    await expect(ben.seat("A", 5)).to_have_attribute("data-state", "selected")
    await expect(hold).to_be_enabled()
    await expect(ann.seat("A", 3)).to_have_attribute("data-state", "mine")


async def test_the_countdown_reaches_zero_and_both_maps_free_the_seats(
    make_server: Callable[..., LiveServer],
    people: tuple[Account, Account],
    on_the_map: MapOpener,
) -> None:
    short = make_server(hold_seconds=3)
    ann, ben = await on_the_map(short, people[0]), await on_the_map(short, people[1])
    await ann.hold(("B", 1), ("B", 2))
    countdown = ann.page.locator("#countdown")
    await expect(countdown).to_contain_text("held for 0:0")
    await expect(ben.seat("B", 1)).to_have_attribute("data-state", "held")
    # Freed by the server at its deadline (often before the countdown shows 0:00): said so.
    await expect(ann.page.get_by_role("alert")).to_contain_text("has expired", timeout=6_000)
    for tab in (ann, ben):
        for number in (1, 2):
            seat = tab.seat("B", number)
            await expect(seat).to_have_attribute("data-state", "available", timeout=4_000)
    await expect(ann.page.locator(".hold")).to_be_hidden()


async def test_the_countdown_counts_by_the_servers_clock(
    server: LiveServer, screening: Screening, people: tuple[Account, Account], open_app: Opener
) -> None:
    """A browser whose clock is ten minutes fast still shows the time its hold really has left
    (expires_at is the server's time; the app reads the server's clock from its Date header)."""
    ann = await open_app(server)
    await ann.page.clock.install(time=time.time() + 600)
    await ann.open_map(people[0].email, screening.id)
    await ann.hold(("C", 5))
    held_for = re.compile(rf"held for {server.settings.hold_seconds // 60 - 1}:\d\d")
    await expect(ann.page.locator("#countdown")).to_contain_text(held_for)
    await ann.page.get_by_role("button", name="Release seats").click()
    await expect(ann.seat("C", 5)).to_have_attribute("data-state", "available")


async def test_a_booked_ticket_is_listed_and_cancelling_it_frees_the_seat(
    server: LiveServer,
    people: tuple[Account, Account],
    on_the_map: MapOpener,
) -> None:
    ann, ben = await on_the_map(server, people[0]), await on_the_map(server, people[1])
    await ann.hold(("C", 5))
    await ann.page.get_by_role("button", name="Book (test payment)").click()
    await expect(ann.page.get_by_role("alert")).to_contain_text("Booked: 1 ticket")
    await expect(ann.seat("C", 5)).to_have_attribute("data-state", "booked")
    await expect(ben.seat("C", 5)).to_have_attribute("data-state", "booked")
    await expect(ben.seat("C", 5)).to_have_attribute("aria-label", "Row C, seat 5, booked, premium")

    await ann.page.get_by_role("link", name="My tickets").click()
    ticket = ann.page.locator(".ticket", has_text="Row C, seat 5")
    await expect(ticket).to_contain_text("confirmed")
    await expect(ticket).to_contain_text("Orbit of Ash")
    await expect(ticket).to_contain_text("payment test_")
    # Cancelling asks first; the question has the focus on "Keep ticket", so Enter keeps it.
    await ticket.get_by_role("button", name="Cancel ticket").click()
    await expect(ticket.get_by_role("group")).to_contain_text("This cannot be undone")
    await expect(ticket.get_by_role("button", name="Keep ticket")).to_be_focused()
    await ann.page.keyboard.press("Enter")
    await expect(ticket.get_by_role("button", name="Cancel ticket")).to_be_focused()
    await expect(ticket).to_contain_text("confirmed")
    await ann.page.keyboard.press("Enter")
    await ann.page.keyboard.press("Escape")
    await expect(ticket.get_by_role("button", name="Cancel ticket")).to_be_focused()
    await expect(ben.seat("C", 5)).to_have_attribute("data-state", "booked")
    await ticket.get_by_role("button", name="Cancel ticket").click()
    await ticket.get_by_role("button", name="Yes, cancel it").click()
    await expect(ann.page.get_by_role("alert")).to_contain_text("Ticket cancelled")
    await expect(ticket).to_contain_text("cancelled")
    await expect(ben.seat("C", 5)).to_have_attribute("data-state", "available")


async def test_a_seat_is_selected_and_held_with_the_keyboard_alone(
    server: LiveServer,
    people: tuple[Account, Account],
    on_the_map: MapOpener,
) -> None:
    ann = await on_the_map(server, people[0])
    keyboard = ann.page.keyboard
    for _ in range(40):  # the map's one tab stop, after the navigation and the zoom buttons
        await keyboard.press("Tab")
        if await ann.page.evaluate("document.activeElement.classList.contains('seat')"):
            break
    focused = ann.page.locator(".seat:focus")
    await expect(focused).to_have_attribute("aria-label", "Row A, seat 1, available, wheelchair")
    await keyboard.press("ArrowRight")
    await keyboard.press("ArrowRight")
    await keyboard.press("ArrowDown")
    await expect(focused).to_have_attribute("aria-label", "Row B, seat 3, available")
    await keyboard.press("Space")
    await expect(focused).to_have_attribute("aria-label", "Row B, seat 3, available, selected")
    assert await ann.page.locator('.seat[tabindex="0"]').count() == 1  # one tab stop: roving
    await keyboard.press("Tab")
    hold = ann.page.get_by_role("button", name="Hold selected seats")
    await expect(hold).to_be_focused()
    await keyboard.press("Enter")
    await expect(ann.seat("B", 3)).to_have_attribute("data-state", "mine")
    await expect(ann.seat("B", 3)).to_have_attribute("aria-label", "Row B, seat 3, held by you")
    await expect(ann.page.locator("#countdown")).to_contain_text("B3 are held for")


async def test_book_and_release_leave_the_focus_on_the_map(
    server: LiveServer,
    people: tuple[Account, Account],
    on_the_map: MapOpener,
) -> None:
    """Book and Release hide the panel of their own button: the focus goes to the map's seat in
    the tab order, not back to the start of the page."""
    ann = await on_the_map(server, people[0])
    for button, seat, state in (
        ("Release seats", 2, "available"),
        ("Book (test payment)", 3, "booked"),
    ):
        await ann.hold(("B", seat))
        await ann.page.get_by_role("button", name=button).focus()
        await ann.page.keyboard.press("Enter")
        await expect(ann.seat("B", seat)).to_have_attribute("data-state", state)
        await expect(ann.page.locator(".hold")).to_be_hidden()
        await expect(ann.seat("B", seat)).to_be_focused()  # the seat last chosen
        await ann.page.keyboard.press("ArrowRight")  # and the map's keys work from there
        await expect(ann.seat("B", seat + 1)).to_be_focused()


async def test_a_screening_that_does_not_exist_has_a_page_of_its_own(
    server: LiveServer,
    screening: Screening,
    people: tuple[Account, Account],
    open_app: Opener,
) -> None:
    ann = await open_app(server)
    page = ann.page
    sockets: list[WebSocket] = []
    page.on("websocket", lambda socket: sockets.append(socket))
    await ann.sign_in(people[0].email, f"#/screenings/{screening.id + 1000}")
    await expect(page.get_by_role("heading", name="Screening not found")).to_be_visible()
    await expect(page.locator("main")).to_contain_text("This screening does not exist")
    await expect(page).to_have_title("Screening not found · seatlock")
    for leftover in (".link", ".legend", ".zoom", ".map", "#hold", ".hold"):
        await expect(page.locator(leftover)).to_have_count(0)
    # Its socket is closed and none is opened again (a retry would come within a second).
    await until(lambda: len(sockets) == 1 and sockets[0].is_closed())
    await page.wait_for_timeout(1_000)
    assert len(sockets) == 1
    await page.get_by_role("link", name="See the showtimes").click()
    await page.wait_for_url("**/app#/")
    await expect(page.get_by_role("heading", name="Movies and showtimes")).to_be_visible()


async def test_showtimes_by_day_and_search_lead_to_the_map(
    server: LiveServer,
    screening: Screening,
    people: tuple[Account, Account],
    open_app: Opener,
) -> None:
    ann = await open_app(server)
    page = ann.page
    # Today's showtimes are asked for first, as the page opens; their answer is held back until
    # Tomorrow's is on the page, so it arrives after it: the later pick must stay.
    tomorrow_shown = asyncio.Event()
    asked: list[str] = []

    async def today_late(route: Route) -> None:
        asked.append(route.request.url)
        if len(asked) == 1:
            await tomorrow_shown.wait()
        await route.fallback()

    await page.route("**/api/v1/showtimes/?*", today_late)
    await ann.sign_in(people[0].email, "#/")
    await page.get_by_role("button", name="Tomorrow").click()
    film = page.get_by_role("heading", name="Orbit of Ash")
    await expect(film).to_be_visible()
    async with page.expect_event("requestfinished", lambda r: r.url == asked[0]):
        tomorrow_shown.set()
    await page.evaluate("new Promise((done) => setTimeout(done, 200))")  # its answer handled
    await expect(film).to_be_visible()
    await page.get_by_label("Search").fill("no such film")
    await expect(page.get_by_text("No showtimes match on this day.")).to_be_visible()
    await page.get_by_label("Search").fill("orbit")
    await page.get_by_role("link", name="Orbit of Ash").click()
    await page.wait_for_url(f"**/app#/screenings/{screening.id}")  # the shareable address
    await expect(ann.seat("C", 1)).to_have_attribute(
        "aria-label", "Row C, seat 1, available, premium"
    )


async def test_a_day_of_showtimes_is_the_persons_own_calendar_day(
    server: LiveServer, people: tuple[Account, Account], open_app: Opener
) -> None:
    # Kiritimati is UTC+14 all year: 09:00 there tomorrow is still the day before in UTC.
    kiritimati = dt.timezone(dt.timedelta(hours=14))
    tomorrow = dt.datetime.now(kiritimati).date() + dt.timedelta(days=1)
    starts = dt.datetime.combine(tomorrow, dt.time(9), kiritimati)
    db = await asyncpg.connect(server.settings.database_url)
    try:
        room = await make.room(db, await make.cinema(db, "Lagoon"), "Hall 1")
        await make.seats(db, room, 4)
        await make.screening(db, await make.movie(db, "Night Tide"), room, starts)
    finally:
        await db.close()
    ann = await open_app(server, timezone_id="Pacific/Kiritimati")
    await ann.sign_in(people[0].email, "#/")
    page = ann.page
    await expect(page.get_by_text("No showtimes match on this day.")).to_be_visible()
    await page.get_by_role("button", name="Tomorrow").click()
    await expect(page.get_by_role("heading", name="Night Tide")).to_be_visible()
    await expect(page.get_by_role("link", name=re.compile("^Night Tide, 09:00"))).to_be_visible()


async def book(server: LiveServer, account: Account, screening_id: int, seats: list[int]) -> None:
    """Holds and books ``seats`` for ``account`` through the API."""
    body = await hold_seats(server, account, screening_id, seats)
    async with httpx.AsyncClient(base_url=server.url, headers=account.headers) as client:
        paid = {**body, "payment_id": f"pay_{account.id}_{seats[0]}"}
        booked = await client.post("/api/v1/tickets/book-from-reservation", json=paid)
        assert booked.status_code == 201, booked.text


async def test_screenshots_of_the_seat_map_at_desktop_and_mobile_sizes(
    server: LiveServer,
    screening: Screening,
    people: tuple[Account, Account],
    open_app: Opener,
    artifacts: Path,
) -> None:
    ann, ben = people
    seats = screening.seat_ids
    await book(server, ben, screening.id, [seats[10], seats[11], seats[23]])
    await hold_seats(server, ben, screening.id, [seats[13], seats[14]])
    desktop, mobile = await open_app(server), await open_app(server, MOBILE)
    await desktop.open_map(ann.email, screening.id)
    await desktop.hold(("C", 4), ("C", 5))
    await desktop.select("B", 8)
    await desktop.page.locator(".screening").screenshot(path=artifacts / "seatmap-desktop.png")
    await mobile.open_map(ann.email, screening.id)
    await expect(mobile.seat("C", 4)).to_have_attribute("data-state", "mine")
    await expect(mobile.seat("B", 6)).to_have_attribute("data-state", "held")
    grid = await mobile.page.locator(".map").bounding_box()
    assert grid is not None and grid["width"] <= MOBILE["width"]  # the map scrolls, the page not
    await mobile.page.screenshot(path=artifacts / "seatmap-mobile.png", full_page=True)


async def test_the_admin_view_counts_seats_and_watchers_live(
    server: LiveServer,
    screening: Screening,
    people: tuple[Account, Account],
    open_app: Opener,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        boss = await make_account(
            client, "boss@example.com", "Boss", admin_db=server.settings.database_url
        )
    admin = await open_app(server)
    await admin.sign_in(boss.email, "#/admin")
    await admin.page.get_by_role("link", name="Orbit of Ash").click()
    counts = admin.page.locator(".counts")
    await expect(counts.locator("#count-free")).to_have_text("24")
    await expect(counts.locator("#count-watchers")).to_have_text("1")
    await book(server, people[1], screening.id, screening.seat_ids[:2])
    await hold_seats(server, people[0], screening.id, screening.seat_ids[5:8])
    await expect(counts.locator("#count-booked")).to_have_text("2")
    await expect(counts.locator("#count-held")).to_have_text("3")
    await expect(counts.locator("#count-free")).to_have_text("19")
    await expect(admin.seat("A", 1)).to_have_attribute("data-state", "booked")
    await admin.page.goto(f"/app#/admin/screenings/{screening.id + 1000}")
    await expect(admin.page.get_by_role("heading", name="Screening not found")).to_be_visible()
    await expect(admin.page.locator(".map")).to_have_count(0)
    await admin.page.get_by_role("link", name="Another screening").click()
    await expect(admin.page.get_by_role("link", name="Orbit of Ash")).to_be_visible()
