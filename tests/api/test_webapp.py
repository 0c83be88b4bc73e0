"""/app serves the web app (a page, its modules and stylesheet) and / leads browsers to it,
while API clients keep the JSON welcome of the frontend guide."""

from __future__ import annotations

import re

import httpx

from api.webapp import WEBAPP_DIR

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def test_the_page_is_served_with_a_policy_that_allows_only_this_server(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/app")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy
    assert "unsafe-inline" not in policy.split("style-src")[0]  # no inline script
    assert '<script type="module" src="app/assets/app.js">' in r.text


async def test_every_asset_the_app_names_is_served_and_revalidated(
    client: httpx.AsyncClient,
) -> None:
    names = {"app.js", "style.css"}
    for module in WEBAPP_DIR.glob("*.js"):
        names |= set(re.findall(r'from "\./([a-z]+\.js)"', module.read_text()))
    for name in sorted(names):
        r = await client.get(f"/app/assets/{name}")
        assert r.status_code == 200, name
        assert r.headers["cache-control"] == "no-cache"
        again = await client.get(
            f"/app/assets/{name}", headers={"If-None-Match": r.headers["etag"]}
        )
        assert again.status_code == 304, name


async def test_nothing_in_the_app_names_another_host() -> None:
    for path in WEBAPP_DIR.iterdir():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text()), path.name


async def test_a_trailing_slash_leads_to_the_page(client: httpx.AsyncClient) -> None:
    r = await client.get("/app/")
    assert r.status_code == 308 and r.headers["location"].endswith("/app")


async def test_welcome_sends_browsers_to_the_app_and_api_clients_get_json(
    client: httpx.AsyncClient,
) -> None:
    browser = await client.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert browser.status_code == 303 and browser.headers["location"] == "/app"
    for accept in (None, "*/*", "application/json"):
        headers = {"Accept": accept} if accept else {}
        r = await client.get("/", headers=headers)
        assert r.status_code == 200 and r.json()["status"] == "healthy"
        assert r.json()["app"] == "/app"
