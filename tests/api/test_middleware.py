"""Middleware added with ``add_middleware`` runs on every route, the hot ones included.

A served app gets a small pure-ASGI middleware (it counts calls and stamps a header) and
Starlette's CORSMiddleware and GZipMiddleware; the hot endpoints (reserve, availability), a
catalog route, error replies and the WebSocket route must all pass through them. A middleware
that wraps a WebSocket's ``send`` must see every seat update too, so the server's direct frame
writes give way to the queued path under it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import api.websockets
from seatlock.engine.events import Hub
from seatlock.settings import Settings
from tests import factories as make
from tests.support import (
    RESERVE,
    LiveServer,
    make_account,
    reserve,
    wait_for_status,
    watch,
)

ORIGIN = "https://cinema.example"
STAMP = "x-stamped"


class Stamp:
    """Counts the connections it sees by type and path, and notes the route template the router
    matched (as a metrics middleware labels requests); stamps a header on HTTP responses."""

    def __init__(self, app: ASGIApp, seen: list[tuple[str, str]], routes: list[str]) -> None:
        self.app = app
        self.seen = seen
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            self.seen.append((scope["type"], scope["path"]))
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # WebSocket messages pass untouched
            return

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (STAMP.encode(), b"1")]
            await send(message)

        await self.app(scope, receive, stamped)
        route = scope.get("route")
        self.routes.append(route.path if route is not None else "")


class WatchFrames:
    """Wraps a WebSocket's ``send``, keeping every text it carries (e.g. a metrics middleware)."""

    def __init__(self, app: ASGIApp, texts: list[str]) -> None:
        self.app = app
        self.texts = texts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return

        async def watched(message: Message) -> None:
            if message["type"] == "websocket.send":
                self.texts.append(message.get("text") or "")
            await send(message)

        await self.app(scope, receive, watched)


def served(settings: Settings, add: Callable[[Any], None]) -> LiveServer:
    live = LiveServer(settings)
    add(live._server.config.app)
    live.start()
    return live


def hub_of(server: LiveServer) -> Hub:
    hub: Hub = server._server.config.app.state.services.hub
    return hub


@pytest.fixture(scope="module")
def seen() -> list[tuple[str, str]]:
    return []


@pytest.fixture(scope="module")
def routes() -> list[str]:
    return []


@pytest.fixture(scope="module")
def stamped(
    base_settings: Settings, seen: list[tuple[str, str]], routes: list[str]
) -> Iterator[LiveServer]:
    def add(app: Any) -> None:
        app.add_middleware(GZipMiddleware, minimum_size=1)  # every body, however small
        app.add_middleware(
            CORSMiddleware, allow_origins=[ORIGIN], allow_methods=["*"], allow_headers=["*"]
        )
        app.add_middleware(Stamp, seen=seen, routes=routes)

    live = served(base_settings, add)
    yield live
    live.stop()


@pytest.fixture
async def browser(stamped: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Origin": ORIGIN, "Accept-Encoding": "gzip"}
    async with httpx.AsyncClient(base_url=stamped.url, headers=headers, timeout=15) as c:
        yield c


def assert_through_all(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers[STAMP] == "1"
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["content-encoding"] == "gzip"


async def test_hot_catalog_and_error_replies_pass_through_every_middleware(
    browser: httpx.AsyncClient, db: asyncpg.Connection, seen: list[tuple[str, str]]
) -> None:
    show = await make.show(db, 4)
    alice = await make_account(browser, "alice@example.com", "Alice Example")
    bob = await make_account(browser, "bob@example.com", "Bob Example")
    seen.clear()
    won = await reserve(browser, alice, show, show.seat_ids[:2])
    assert_through_all(won, 201)
    lost = await reserve(browser, bob, show, show.seat_ids[:1])
    assert_through_all(lost, 409)
    assert "detail" in lost.json()
    invalid = await browser.post(RESERVE, json={"screening_id": "x"}, headers=bob.headers)
    assert_through_all(invalid, 422)
    availability = f"/api/v1/seat-reservations/screening/{show.id}/availability"
    read = await browser.get(availability)
    assert_through_all(read, 200)
    assert len(read.json()) == 4
    assert_through_all(await browser.get("/api/v1/movies/"), 200)
    assert_through_all(await browser.delete(RESERVE), 405)
    assert_through_all(await browser.get("/api/v1/no-such-thing"), 404)
    assert seen.count(("http", RESERVE)) == 4
    assert ("http", availability) in seen and ("http", "/api/v1/movies/") in seen


async def test_a_middleware_sees_the_route_template_on_the_fast_and_the_scanned_path(
    browser: httpx.AsyncClient, routes: list[str]
) -> None:
    routes.clear()
    await browser.get("/health/live")  # found by the exact lookup
    await browser.get("/api/v1/screenings/1")  # found by the scan, then from its cache
    await browser.get("/api/v1/screenings/1")
    await browser.get("/openapi.json")  # Starlette's own router
    screening = "/api/v1/screenings/{screening_id:int}"
    assert routes == ["/health/live", screening, screening, "/openapi.json"]


async def test_a_cors_preflight_of_a_hot_route_is_answered(browser: httpx.AsyncClient) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x"}
    r = await browser.options(RESERVE, headers=preflight)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]


async def test_the_websocket_route_passes_through_and_keeps_direct_writes(
    stamped: LiveServer, db: asyncpg.Connection, seen: list[tuple[str, str]]
) -> None:
    show = await make.show(db, 2)
    seen.clear()
    ws = await watch(stamped, show.id)
    try:
        assert seen == [("websocket", f"/ws/screenings/{show.id}")]
        (watcher,) = hub_of(stamped)._rooms[show.id]
        # Nothing between the endpoint and uvicorn wraps send: frames go straight to the socket.
        assert watcher.socket is not None
    finally:
        await ws.close()


async def test_a_middleware_wrapping_websocket_sends_sees_every_seat_update(
    base_settings: Settings, db: asyncpg.Connection
) -> None:
    texts: list[str] = []
    live = served(base_settings, lambda app: app.add_middleware(WatchFrames, texts=texts))
    try:
        show = await make.show(db, 2)
        async with httpx.AsyncClient(base_url=live.url, timeout=15) as client:
            user = await make_account(client, "carol@example.com", "Carol Example")
            ws = await watch(live, show.id)
            try:
                (watcher,) = hub_of(live)._rooms[show.id]
                assert watcher.socket is None  # the queued path, through the middleware
                assert (await reserve(client, user, show, show.seat_ids)).status_code == 201
                await wait_for_status(ws, show.seat_ids, "reserved")
            finally:
                await ws.close()
        kinds = [orjson.loads(text)["type"] for text in texts]
        assert kinds[0] == "connection_confirmed"
        assert {"seat_update", "bulk_seat_update"} & set(kinds)
    finally:
        live.stop()


def test_the_installed_servers_give_the_direct_writer() -> None:
    """uvicorn's sans-I/O websockets protocol is what ``server_protocol`` looks for: a uvicorn
    or websockets release that changes it fails here instead of silently taking the queue."""
    from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    assert AutoWebSocketsProtocol is WebSocketsSansIOProtocol
    assert api.websockets._sansio_protocol() is WebSocketsSansIOProtocol
