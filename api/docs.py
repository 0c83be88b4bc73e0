"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with their assets served from ``api/static``.

Nothing on either page comes from another host (no CDN, no web fonts), so the documentation works
offline and air-gapped. The assets' folders carry their version (``api/static/README.md``), so an
asset's URL names its version and the assets are cached for a year; the pages themselves are not.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.caching import AssetCaching

STATIC_DIR = Path(__file__).parent / "static"
SWAGGER_UI = "swagger-ui-5.35.0"  # npm swagger-ui-dist
REDOC = "redoc-2.5.4"  # npm redoc, bundles/redoc.standalone.js
IMMUTABLE = "public, max-age=31536000, immutable"  # the asset URLs name their versions

# URLs are relative to the page (``/docs`` -> ``static/...``, ``openapi.json``), so the pages also
# work under a path prefix (a proxy's root_path).
SWAGGER_INIT = """
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  validatorUrl: null
});
"""
SWAGGER_HTML = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seatlock API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" type="image/png" href="static/{SWAGGER_UI}/favicon-32x32.png">
<link rel="stylesheet" href="static/{SWAGGER_UI}/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="static/{SWAGGER_UI}/swagger-ui-bundle.js"></script>
<script>{SWAGGER_INIT}</script>
<noscript>The description is at <a href="openapi.json">/openapi.json</a>.</noscript>
</body></html>"""

# ReDoc's own HTML template loads Montserrat and Roboto from Google Fonts; the bundle loads no
# font itself, so the theme names system fonts instead (``validatorUrl: null`` above is the same
# for Swagger UI, whose default badge asks validator.swagger.io).
SYSTEM_FONTS = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
MONO_FONTS = "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"
REDOC_INIT = f"""
Redoc.init("openapi.json", {{
  theme: {{
    typography: {{
      fontFamily: "{SYSTEM_FONTS}",
      headings: {{ fontFamily: "{SYSTEM_FONTS}" }},
      code: {{ fontFamily: "{MONO_FONTS}" }}
    }}
  }}
}}, document.getElementById("redoc"));
"""
REDOC_HTML = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seatlock API (ReDoc)</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" type="image/png" href="static/{SWAGGER_UI}/favicon-32x32.png">
<style>body {{ margin: 0; padding: 0; }}</style>
</head><body><div id="redoc"></div>
<script src="static/{REDOC}/redoc.standalone.js"></script>
<script>{REDOC_INIT}</script>
<noscript>The description is at <a href="openapi.json">/openapi.json</a>.</noscript>
</body></html>"""


def content_policy(inline_script: str) -> str:
    """The pages' Content-Security-Policy: the browser itself refuses anything from another host.

    A backstop for what the assets might ask of another host in a later release (ReDoc 2 asked
    cdn.redoc.ly for its sidebar logo until that URL was emptied: api/static/README.md). The
    page's one inline script is allowed by its hash; styles may be inline (ReDoc's styled
    components); ReDoc's search runs in a worker made from a blob.
    """
    digest = base64.b64encode(hashlib.sha256(inline_script.encode()).digest()).decode()
    return (
        f"default-src 'self'; script-src 'self' 'sha256-{digest}'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
        "connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'self'"
    )


SWAGGER_HEADERS = {"content-security-policy": content_policy(SWAGGER_INIT)}
REDOC_HEADERS = {"content-security-policy": content_policy(REDOC_INIT)}


async def swagger_ui(request: Request) -> HTMLResponse:
    """Interactive API documentation: Swagger UI."""
    return HTMLResponse(SWAGGER_HTML, headers=SWAGGER_HEADERS)


async def redoc(request: Request) -> HTMLResponse:
    """Reference API documentation: ReDoc."""
    return HTMLResponse(REDOC_HTML, headers=REDOC_HEADERS)


def asset_mount(folder: str) -> Mount:
    """``/static/<folder>``: one versioned folder of ``api/static`` (its README is not served)."""
    assets = StaticFiles(directory=STATIC_DIR / folder)
    return Mount(f"/static/{folder}", AssetCaching(assets, IMMUTABLE))


ROUTES: list[BaseRoute] = [
    Route("/docs", swagger_ui, methods=["GET"], include_in_schema=False),
    Route("/redoc", redoc, methods=["GET"], include_in_schema=False),
    asset_mount(SWAGGER_UI),
    asset_mount(REDOC),
]
