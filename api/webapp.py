"""``/app``: the seat-map web app, plain HTML, CSS and ES modules from ``api/webapp``.

No build step and nothing from another host: the page is ``api/webapp/index.html``, its modules
and stylesheet are served from ``/app/assets/``. The app talks to the same API and WebSockets as
any frontend (the contract of the frontend guide); this module only serves files, and sends the
link of the password reset mail (``/reset-password?token=``) to the app's reset page. Assets are
not versioned, so they are revalidated on every load (``no-cache``: StaticFiles' ETag and
Last-Modified make that a 304), which keeps a deploy from mixing old and new modules.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.caching import AssetCaching

WEBAPP_DIR = Path(__file__).parent / "webapp"
PAGE = (WEBAPP_DIR / "index.html").read_text(encoding="utf-8")
# The browser itself refuses anything from another host and any inline script: the app's
# requests and its WebSocket go to this server only ('self' covers ws:/wss: of the same host).
CONTENT_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)
PAGE_HEADERS = {"content-security-policy": CONTENT_POLICY, "cache-control": "no-cache"}


async def page(request: Request) -> HTMLResponse:
    """The app's one page; the views are chosen by the URL's fragment (``#/screenings/7``)."""
    return HTMLResponse(PAGE, headers=PAGE_HEADERS)


async def reset_link(request: Request) -> RedirectResponse:
    """``/reset-password?token=...``, the link of the password reset mail: the app's reset page."""
    token = quote(request.query_params.get("token", ""), safe="")
    fragment = f"/reset-password?token={token}"
    to = request.url.replace(path="/app", query="", fragment=fragment)
    return RedirectResponse(to, 303, headers={"cache-control": "no-store"})


async def to_page(request: Request) -> RedirectResponse:
    """``/app/`` -> ``/app``: the page's asset URLs are relative to ``/app``."""
    return RedirectResponse(request.url.replace(path=request.url.path.rstrip("/")), 308)


ROUTES: list[BaseRoute] = [
    Route("/app", page, methods=["GET"], include_in_schema=False),
    Route("/app/", to_page, methods=["GET"], include_in_schema=False),
    Route("/reset-password", reset_link, methods=["GET"], include_in_schema=False),
    Mount("/app/assets", AssetCaching(StaticFiles(directory=WEBAPP_DIR), "no-cache")),
]
