"""Browser tests: pages of a live server driven by Playwright in the machine's Chromium.

Every test under tests/browser/ is marked ``browser`` and skipped, with how to fix it, when no
Chromium is installed (Debian's ``chromium``; .ci/run installs it). Playwright's own browser
downloads are never used. The browser lives for the whole session on the session's event loop,
so a test module declares ``pytestmark = pytest.mark.asyncio(loop_scope="session")`` (Playwright's
sync API cannot share a thread with pytest-asyncio's loops). Screenshots go to
``var/test-artifacts/browser/`` (git-ignored), emptied at the start of each run.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Locator, Page, Route, async_playwright, expect

from tests import factories as make
from tests.support import PASSWORD, Account, LiveServer, make_account

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE.parents[1] / "var" / "test-artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")
NO_CHROMIUM = "Chromium not found: install it with `apt-get install chromium` (what .ci/run does)"
LOCAL_HOST = "127.0.0.1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark this folder's tests ``browser``; skip them, saying why, without a Chromium."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.browser)
            if CHROMIUM is None:
                item.add_marker(pytest.mark.skip(reason=NO_CHROMIUM))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the session (a new context per test keeps tests apart)."""
    assert CHROMIUM is not None
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        await launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave screenshots, emptied once per run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@dataclass
class OfflinePage:
    """A page that can reach only the live server: any request to another host is aborted."""

    page: Page
    requested: list[str] = field(default_factory=list)  # every URL the page asked for
    refused: list[str] = field(default_factory=list)  # those aborted: another host
    errors: list[str] = field(default_factory=list)  # the console's errors (CSP refusals too)

    async def route(self, route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname != LOCAL_HOST:
            self.refused.append(url)
            await route.abort()
        else:
            await route.continue_()

    def left_the_server(self) -> list[str]:
        """URLs of requests to another host: refused, or seen though not routed."""
        elsewhere = [
            url
            for url in self.requested
            if url.startswith(("http:", "https:", "ws:", "wss:"))
            and urlsplit(url).hostname != LOCAL_HOST
        ]
        return sorted(set(elsewhere + self.refused))


@pytest_asyncio.fixture(loop_scope="session")
async def offline(browser: Browser, server: LiveServer) -> AsyncIterator[OfflinePage]:
    context = await browser.new_context(
        base_url=server.url, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(15_000)
    offline = OfflinePage(await context.new_page())
    # Routed at the context, so requests of workers and frames are caught too.
    await context.route("**/*", offline.route)
    context.on("request", lambda request: offline.requested.append(request.url))
    offline.page.on("pageerror", lambda error: offline.errors.append(str(error)))
    offline.page.on(
        "console", lambda m: offline.errors.append(m.text) if m.type == "error" else None
    )
    yield offline
    await context.close()


# -- the web app (/app): one person's tab, a small screening, two accounts ----------------------

DESKTOP = {"width": 1280, "height": 900}


@dataclass
class Screening:
    id: int
    seat_ids: list[int]


@dataclass
class AppPage:
    """One person's tab: the page, and what it did that a test must not allow."""

    page: Page
    crashes: list[str] = field(default_factory=list)  # uncaught exceptions of the page
    elsewhere: list[str] = field(default_factory=list)  # requests to another host (refused)

    async def route(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname != LOCAL_HOST:
            self.elsewhere.append(route.request.url)
            await route.abort()
        else:
            await route.continue_()

    def seat(self, row: str, number: int) -> Locator:
        return self.page.locator(f'.seat[aria-label^="Row {row}, seat {number},"]')

    async def sign_in(self, email: str, then: str) -> None:
        await self.page.goto(f"/app#/signin?next={then}")
        await self.page.get_by_label("Email").fill(email)
        await self.page.get_by_label("Password").fill(PASSWORD)
        await self.page.get_by_label("Password").press("Enter")
        await self.page.wait_for_url(f"**/app{then}")

    async def open_map(self, email: str, screening_id: int) -> None:
        await self.sign_in(email, f"#/screenings/{screening_id}")
        await expect(self.page.locator(".link")).to_have_text("Live")
        await expect(self.seat("A", 1)).to_be_visible()

    async def select(self, row: str, number: int) -> None:
        await self.seat(row, number).click()
        await expect(self.seat(row, number)).to_have_attribute("data-state", "selected")

    async def hold(self, *seats: tuple[str, int]) -> None:
        for row, number in seats:
            await self.select(row, number)
        await self.page.get_by_role("button", name="Hold selected seats").click()
        for row, number in seats:
            await expect(self.seat(row, number)).to_have_attribute("data-state", "mine")
        await expect(self.page.locator("#countdown")).to_contain_text("are held for")


Opener = Callable[..., Awaitable[AppPage]]
MapOpener = Callable[[LiveServer, Account], Awaitable[AppPage]]


@pytest_asyncio.fixture(loop_scope="session")
async def screening(server: LiveServer) -> AsyncIterator[Screening]:
    """A screening tomorrow in a room of rows A-C, 8 seats each (A1 and A8 wheelchair spaces,
    row C premium)."""
    db = await asyncpg.connect(server.settings.database_url)
    try:
        room = await make.room(db, await make.cinema(db, "Rex"), "Hall 1")
        front = ["wheelchair"] + ["standard"] * 6 + ["wheelchair"]
        seat_ids = await make.seats(db, room, 8, row="A", seat_types=front)
        seat_ids += await make.seats(db, room, 8, row="B")
        seat_ids += await make.seats(db, room, 8, row="C", seat_types=["premium"] * 8)
        movie = await make.movie(db, "Orbit of Ash", duration_minutes=110)
        yield Screening(await make.screening(db, movie, room), seat_ids)
    finally:
        await db.close()


@pytest_asyncio.fixture(loop_scope="session")
async def people(server: LiveServer) -> tuple[Account, Account]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        ann = await make_account(client, "ann@example.com", "Ann Example")
        ben = await make_account(client, "ben@example.com", "Ben Example")
    return ann, ben


@pytest_asyncio.fixture(loop_scope="session")
async def open_app(browser: Browser) -> AsyncIterator[Opener]:
    """Opens a tab of the app in a new browser context (a person of their own)."""
    opened: list[AppPage] = []

    async def open_tab(
        server: LiveServer, viewport: dict[str, int] = DESKTOP, timezone_id: str | None = None
    ) -> AppPage:
        mobile = viewport["width"] < 600
        context = await browser.new_context(
            base_url=server.url,
            viewport=viewport,
            is_mobile=mobile,
            has_touch=mobile,
            timezone_id=timezone_id,
        )
        context.set_default_timeout(10_000)
        tab = AppPage(await context.new_page())
        await context.route("**/*", tab.route)
        tab.page.on("pageerror", lambda error: tab.crashes.append(str(error)))
        opened.append(tab)
        return tab

    yield open_tab
    for tab in opened:
        await tab.page.context.close()
    for tab in opened:
        assert tab.crashes == [] and tab.elsewhere == []


@pytest_asyncio.fixture(loop_scope="session")
async def on_the_map(open_app: Opener, screening: Screening) -> MapOpener:
    """Opens a tab (``open_app``) on the screening's live seat map, signed in as ``account``."""

    async def open_as(server: LiveServer, account: Account) -> AppPage:
        tab = await open_app(server)
        await tab.open_map(account.email, screening.id)
        return tab

    return open_as


async def hold_seats(
    server: LiveServer, account: Account, screening_id: int, seats: list[int]
) -> dict[str, Any]:
    """Holds ``seats`` for ``account`` through the API (as another tab of theirs would)."""
    body: dict[str, Any] = {"screening_id": screening_id, "seat_ids": seats}
    async with httpx.AsyncClient(base_url=server.url, headers=account.headers) as client:
        held = await client.post("/api/v1/seat-reservations/reserve", json=body)
        assert held.status_code == 201, held.text
    return body


async def until(done: Callable[[], bool], seconds: float = 5) -> None:
    """Waits for ``done()`` to be true (a condition Playwright's ``expect`` cannot watch)."""
    for _ in range(int(seconds / 0.05)):
        if done():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not done in time")
