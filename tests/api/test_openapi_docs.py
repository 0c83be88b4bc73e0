"""``/docs`` and ``/redoc`` over HTTP: served with their assets by the server itself, nothing
from another host, versioned assets cached for a year, the OAuth2 password flow on the login
route. The pages rendered in a real browser: the tests of tests/browser/."""

from __future__ import annotations

import re

import httpx
import pytest

from api.docs import REDOC, STATIC_DIR, SWAGGER_UI

_LINKED = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_nothing_from_another_host(
    client: httpx.AsyncClient, page: str
) -> None:
    r = await client.get(page)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "cache-control" not in r.headers  # the page names the versions: never stale
    policy = r.headers["content-security-policy"]  # the browser refuses other hosts too
    assert "default-src 'self'" in policy and "http" not in policy
    linked = _LINKED.findall(r.text)
    assert linked and all(url.startswith(("static/", "openapi.json")) for url in linked), linked
    assert "//" not in r.text.replace("<!doctype", "")  # no URL with a host, scripts included
    for url in linked:
        asset = await client.get(f"/{url}")
        assert asset.status_code == 200, url


async def test_assets_are_cached_for_a_year(client: httpx.AsyncClient) -> None:
    for url, kind in [
        (f"/static/{SWAGGER_UI}/swagger-ui-bundle.js", "javascript"),
        (f"/static/{SWAGGER_UI}/swagger-ui.css", "text/css"),
        (f"/static/{REDOC}/redoc.standalone.js", "javascript"),
    ]:
        r = await client.get(url)
        assert r.status_code == 200
        assert kind in r.headers["content-type"]
        assert r.headers["cache-control"] == IMMUTABLE
        # Compressed for httpx's Accept-Encoding: the answer varies on both.
        assert r.headers["vary"] == "Origin, Accept-Encoding"
        assert r.headers["content-encoding"] in ("br", "gzip")
        again = await client.get(url, headers={"if-none-match": r.headers["etag"]})
        assert again.status_code == 304
        assert again.headers["cache-control"] == IMMUTABLE


async def test_unknown_assets_are_json_404s(client: httpx.AsyncClient) -> None:
    for url in [f"/static/{SWAGGER_UI}/nothing.js", "/static/README.md", "/static/"]:
        r = await client.get(url)
        assert r.status_code == 404, url
        assert r.json() == {"detail": "Not Found"}
        assert "cache-control" not in r.headers


def test_assets_and_their_licences_are_in_the_tree() -> None:
    for folder, files in [
        (SWAGGER_UI, ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"]),
        (REDOC, ["redoc.standalone.js", "LICENSE"]),
    ]:
        for name in files:
            assert (STATIC_DIR / folder / name).is_file(), f"{folder}/{name}"
    notice = (STATIC_DIR / "README.md").read_text()
    assert SWAGGER_UI in notice and REDOC in notice  # the README names what is served


async def test_docs_are_not_operations(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert "/docs" not in doc["paths"] and "/redoc" not in doc["paths"]


async def test_oauth2_password_flow_signs_in_through_the_login_form(
    client: httpx.AsyncClient,
) -> None:
    """What Swagger UI's "Authorize" sends (driven in a browser by the tests of tests/browser/)."""
    doc = (await client.get("/openapi.json")).json()
    scheme = doc["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    token_url = scheme["flows"]["password"]["tokenUrl"]
    login = doc["paths"][token_url]["post"]
    form = login["requestBody"]["content"]["application/x-www-form-urlencoded"]
    assert form  # the form the flow posts: grant_type, username, password (+ scope)
    assert doc["paths"]["/api/v1/auth/me"]["get"]["security"] == [
        {"bearer": []},
        {"OAuth2PasswordBearer": []},
    ]
    await client.post(
        "/api/v1/auth/register",
        json={"email": "swagger@example.com", "password": "Sup3r-secret!", "full_name": "S"},
    )
    r = await client.post(
        token_url,
        data={
            "grant_type": "password",
            "username": "swagger@example.com",
            "password": "Sup3r-secret!",
            "scope": "",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "bearer"
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}
    )
    assert me.json()["email"] == "swagger@example.com"


# Escapes whose meaning differs between Python's re (how msgspec checks a pattern) and
# ECMAScript's (how clients and schemathesis read the published one): \s, \d, \w, \b and their
# opposites (Python's \s also matches \x1c-\x1f and \x85, ECMAScript's also \ufeff; \d and \w
# take non-ASCII digits and letters in Python only).
DIALECT_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\[sSdDwWbB]")


def patterns_of(node: object, where: str = "") -> list[tuple[str, str]]:
    if isinstance(node, dict):
        found = [(where, node["pattern"])] if isinstance(node.get("pattern"), str) else []
        for key, value in node.items():
            found += patterns_of(value, f"{where}/{key}")
        return found
    if isinstance(node, list):
        return [p for i, item in enumerate(node) for p in patterns_of(item, f"{where}/{i}")]
    return []


async def test_every_published_pattern_means_the_same_to_python_and_ecmascript(
    client: httpx.AsyncClient,
) -> None:
    """A pattern the server checks with Python's re and a client reads as ECMAScript must not
    use an escape the two dialects read differently: a URL with \\x1c in it was schema-valid and
    refused (schemathesis found it)."""
    patterns = patterns_of((await client.get("/openapi.json")).json())
    assert len(patterns) > 10
    assert [(where, p) for where, p in patterns if DIALECT_ESCAPE.search(p)] == []
