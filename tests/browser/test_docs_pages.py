"""/docs (Swagger UI) and /redoc (ReDoc) render every operation with no network beyond the
server, and Swagger UI's "Authorize" signs in through the OAuth2 password flow."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from tests.browser.conftest import OfflinePage
from tests.support import PASSWORD, LiveServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

RESERVE_SUMMARY = "Hold seats for a few minutes (all or nothing)."
MIN_OPERATIONS = 40
LOGIN = "/api/v1/auth/login"


async def test_swagger_ui_renders_the_operations_offline(
    offline: OfflinePage, artifacts: Path
) -> None:
    page = offline.page
    await page.goto("/docs")
    await page.get_by_text(RESERVE_SUMMARY, exact=True).wait_for()
    assert await page.locator(".opblock").count() >= MIN_OPERATIONS
    await page.screenshot(path=artifacts / "swagger-ui.png")
    assert offline.left_the_server() == []
    assert offline.errors == []


async def test_redoc_renders_the_operations_offline(offline: OfflinePage, artifacts: Path) -> None:
    page = offline.page
    await page.goto("/redoc")
    await page.locator("h2", has_text=RESERVE_SUMMARY).first.wait_for()
    assert await page.locator("[data-section-id*='/operation/']").count() >= MIN_OPERATIONS
    await page.screenshot(path=artifacts / "redoc.png")
    assert offline.left_the_server() == []
    assert offline.errors == []


async def test_authorize_signs_in_with_the_password_flow(
    offline: OfflinePage, server: LiveServer, artifacts: Path
) -> None:
    email = "browser@example.com"
    account = {"email": email, "password": PASSWORD, "full_name": "Browser"}
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.post("/api/v1/auth/register", json=account)).status_code == 201
    page = offline.page
    await page.goto("/docs")
    await page.locator("button.btn.authorize").first.click()
    flow = page.locator(".auth-container", has=page.locator("#oauth_username"))
    await flow.locator("#oauth_username").fill(email)
    await flow.locator("#oauth_password").fill(PASSWORD)
    async with page.expect_response(lambda r: r.url.endswith(LOGIN)) as signed_in:
        await flow.locator("button.authorize").click()
    login = await signed_in.value
    assert login.status == 200
    form = parse_qs(login.request.post_data or "")
    assert form["grant_type"] == ["password"]
    assert form["username"] == [email] and form["password"] == [PASSWORD]
    assert login.request.headers["content-type"] == "application/x-www-form-urlencoded"
    token = (await login.json())["access_token"]
    modal = page.locator(".modal-ux")
    await modal.locator("button", has_text="Logout").wait_for()  # Swagger UI took the token
    await modal.locator("button.close-modal").click()

    me = page.locator("#operations-Authentication-accounts_me")
    await me.locator(".opblock-summary").click()
    await me.locator("button.try-out__btn").click()
    async with page.expect_response(lambda r: r.url.endswith("/api/v1/auth/me")) as called:
        await me.locator("button.execute").click()
    response = await called.value
    assert response.status == 200
    assert response.request.headers["authorization"] == f"Bearer {token}"
    assert (await response.json())["email"] == email
    await me.locator(".live-responses-table .response-col_status", has_text="200").wait_for()
    await me.screenshot(path=artifacts / "swagger-ui-signed-in.png")
    assert offline.left_the_server() == []
    assert offline.errors == []
