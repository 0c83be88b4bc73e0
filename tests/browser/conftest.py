"""Browser tests: pages of a live server driven by Playwright in the machine's Chromium.

Every test under tests/browser/ is marked ``browser`` and skipped, with how to fix it, when no
Chromium is installed (Debian's ``chromium``; .ci/run installs it). Playwright's own browser
downloads are never used. The browser lives for the whole session on the session's event loop,
so a test module declares ``pytestmark = pytest.mark.asyncio(loop_scope="session")`` (Playwright's
sync API cannot share a thread with pytest-asyncio's loops). Screenshots go to
``var/test-artifacts/browser/`` (git-ignored), emptied at the start of each run.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, Route, async_playwright

from tests.support import LiveServer

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
