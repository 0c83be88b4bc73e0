"""The Starlette application: routes, error handlers and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Lifespan, Receive, Scope, Send

from api import (
    accounts,
    admin_stats,
    casts,
    cinemas,
    discovery,
    docs,
    favorites,
    health,
    metrics,
    movies,
    profiles,
    reservations,
    reviews,
    rooms,
    screenings,
    seatmaps,
    showtimes,
    tickets,
    webapp,
    websockets,
)
from api.asyncapi import asyncapi_document
from api.caching import Compression
from api.errors import HANDLERS, detail_body
from api.observe import Observe
from api.openapi import openapi_document
from api.rendering import JSON
from api.routing import App, Endpoint, starlette_routes
from seatlock import __version__

ROUTERS = [
    health.router,
    accounts.router,
    cinemas.router,
    favorites.router,
    rooms.router,
    movies.router,
    casts.router,
    reviews.router,
    screenings.router,
    showtimes.router,
    seatmaps.router,
    discovery.router,
    reservations.router,
    tickets.router,
    websockets.router,
    profiles.router,
    admin_stats.router,
    metrics.router,
]


# Starlette scans routes in order: the hot paths are tried first (the OpenAPI document keeps the
# order of ROUTERS). Moving a router is safe while no path of one can match another's paths
# (tests/api/test_routing.py checks that every endpoint is reached by its own path).
DISPATCH_FIRST = [seatmaps.router, reservations.router, tickets.router, websockets.router]


def all_endpoints() -> list[Endpoint]:
    return [ep for router in ROUTERS for ep in router.endpoints]


def dispatch_order(endpoints: list[Endpoint]) -> list[Endpoint]:
    first = [ep for router in DISPATCH_FIRST for ep in router.endpoints]
    seen = {id(ep) for ep in first}
    return first + [ep for ep in endpoints if id(ep) not in seen]


class JsonCors(CORSMiddleware):
    """Starlette's CORSMiddleware, its refusal of a preflight (an origin, method or header not
    allowed: 400) answered as JSON ``{"detail": ...}`` like every other error, not plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-type", "content-length")
        }
        detail = bytes(response.body).decode("utf-8", "replace")
        return Response(
            detail_body(detail), response.status_code, headers, media_type="application/json"
        )


class BrowserCors:
    """Starlette's CORSMiddleware for the requests a browser sends with an ``Origin`` header;
    the others (servers, scripts, same-origin reads) go straight on.

    Starlette's middleware wraps every response's ``send`` to add ``Vary: Origin``, which cost
    a request ~5 µs of CPU, a third of a refused hold's (python -m loadtests.stackcost). Without
    an Origin there is nothing to allow; the only header lost is that ``Vary`` on answers that
    no cache stores (no route sets Cache-Control). A route that does must add ``Vary: Origin``.
    """

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        self.app = app
        self.cors = JsonCors(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, _ in scope["headers"]:  # ASGI header names are lower-case
                if name == b"origin":
                    await self.cors(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def middleware(cors_origins: Sequence[str]) -> list[Middleware]:
    """The stack every request passes through, hot routes included (api/routing.py FastRouter).

    Observe first (outermost): request ids, request metrics and the access log see every
    answer, CORS preflights included. CORS: browsers on ``cors_origins`` (``*``: any) may call
    every route. Auth is a bearer header, never a cookie, so no credentials mode is needed and
    ``*`` is safe as a default. Compression: br or gzip when the request's Accept-Encoding asks
    (api/caching.py).
    """
    cors = Middleware(
        BrowserCors,
        allow_origins=list(cors_origins),
        allow_methods=["*"],
        # If-None-Match and ETag: a frontend revalidates seat maps and catalog reads itself.
        allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID", "If-None-Match"],
        expose_headers=["Retry-After", "X-Request-ID", "ETag", "X-Seat-Map-Version"],
        max_age=600,
    )
    # br/gzip for clients that ask, above api/caching.py MIN_SIZE; inside CORS, so a preflight
    # never reaches it and the CORS headers are added to what it sends.
    compression = Middleware(Compression)
    return [Middleware(Observe), cors, compression]


def build_app(lifespan: Lifespan[Starlette], cors_origins: Sequence[str] = ("*",)) -> App:
    """The routes, the middleware, the error handlers and ``/openapi.json``; ``lifespan``
    provides the services (``seatlock/server/wiring.py``: the composition root)."""
    endpoints = all_endpoints()
    document = openapi_document(endpoints, "seatlock", __version__)
    ws_document = asyncapi_document(__version__)

    async def openapi(request: Request) -> JSON:
        return JSON(document)

    async def asyncapi(request: Request) -> JSON:
        return JSON(ws_document)

    routes: list[BaseRoute] = [
        *websockets.ROUTES,
        *starlette_routes(dispatch_order(endpoints)),
        Route("/openapi.json", openapi, include_in_schema=False),
        Route("/asyncapi.json", asyncapi, include_in_schema=False),
        *docs.ROUTES,  # /docs, /redoc and their assets, after the API: never on a hot path
        *webapp.ROUTES,  # /app: the seat-map web app and its assets, last
    ]
    handlers: Any = HANDLERS
    return App(
        routes=routes,
        middleware=middleware(cors_origins),
        exception_handlers=handlers,
        lifespan=lifespan,
    )
