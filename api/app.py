"""The Starlette application: routes, error handlers and one lifespan for start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from api import (
    accounts,
    admin_stats,
    casts,
    cinemas,
    discovery,
    favorites,
    health,
    movies,
    profiles,
    reservations,
    reviews,
    rooms,
    screenings,
    seatmaps,
    showtimes,
    tickets,
    websockets,
)
from api.auth import following_revocations
from api.errors import HANDLERS
from api.openapi import openapi_document
from api.rendering import JSON
from api.routing import App, Endpoint, starlette_routes
from db import users
from db.layouts import Layouts
from db.migrate import migrate
from db.pool import create_pool
from db.reservations import HistoryWriter, ReservationIds
from db.tickets import BookingWriter
from seatlock import __version__
from seatlock.accounts.mail import Mailer
from seatlock.accounts.tokens import TokenCodec, load_or_create_secret
from seatlock.engine.events import Hub
from seatlock.engine.expiry import enable_keyspace_events, listen_for_expiries, sweep_forever
from seatlock.engine.mirrors import SeatMirrors
from seatlock.engine.seats import SeatEngine
from seatlock.process import settle_garbage_collector
from seatlock.services.container import Services
from seatlock.settings import Settings

logger = logging.getLogger(__name__)

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


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Connect to Redis and PostgreSQL, migrate, and close everything on the way out."""
    # A bounded pool that makes a burst wait for a free connection instead of failing it.
    redis = Redis.from_pool(
        BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_pool_max,
            timeout=10,
            health_check_interval=30,
        )
    )
    db = await create_pool(
        settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
    )
    try:
        async with db.acquire() as conn:
            await migrate(conn)
        tokens = TokenCodec(load_or_create_secret(settings), settings.access_token_minutes)
        services = Services(settings, redis, db, tokens, Mailer(settings))
        if settings.admin_email and settings.admin_password:
            await users.ensure_configured_admin(
                db, settings.admin_email, settings.admin_password, settings.bcrypt_rounds
            )
        yield services
    finally:
        await db.close()
        await redis.aclose()


@contextlib.asynccontextmanager
async def run_seat_services(services: Services) -> AsyncIterator[None]:
    """The engine, the event hub, expiry (keyspace events plus the sweep) and hold history."""
    s = services.settings
    layouts = Layouts(services.db)
    engine = SeatEngine(
        services.redis,
        layouts,
        hold_ms=s.hold_seconds * 1000,
        max_hold_ms=s.max_hold_seconds * 1000,
        max_seats_per_user=s.max_seats_per_user,
    )
    hub = Hub(services.redis, engine.seat_map)
    if s.seat_mirrors:
        engine.mirrors = SeatMirrors(engine.snapshot, hub)
        hub.event_listeners.append(engine.mirrors.on_event)
    writer = HistoryWriter(services.db)
    bookings = BookingWriter(services.db)
    services.extras.update(
        engine=engine,
        hub=hub,
        layouts=layouts,
        history=writer,
        reservation_ids=ReservationIds(services.db),
        bookings=bookings,
    )
    if not await enable_keyspace_events(services.redis):
        logger.warning("keyspace events refused by Redis; expiries rely on the sweep")
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(hub.run(stop)),
        asyncio.create_task(listen_for_expiries(engine, services.redis, stop)),
        asyncio.create_task(sweep_forever(engine, s.sweep_interval_seconds, stop)),
        asyncio.create_task(writer.run(stop)),
        asyncio.create_task(bookings.run(stop)),
    ]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hub.ready.wait(), 5)
        yield
    finally:
        stop.set()
        _, late = await asyncio.wait(tasks, timeout=5)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if engine.mirrors is not None:
            await engine.mirrors.aclose()


def create_app(settings: Settings | None = None) -> App:
    settings = settings or Settings.from_env()
    endpoints = all_endpoints()
    document = openapi_document(endpoints, "seatlock", __version__)

    async def openapi(request: Request) -> JSON:
        return JSON(document)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            open_services(settings) as services,
            run_seat_services(services),
            following_revocations(services),
        ):
            app.state.services = services
            settle_garbage_collector()
            yield

    routes: list[BaseRoute] = [
        *websockets.ROUTES,
        *starlette_routes(dispatch_order(endpoints)),
        Route("/openapi.json", openapi, include_in_schema=False),
    ]
    handlers: Any = HANDLERS
    return App(routes=routes, exception_handlers=handlers, lifespan=lifespan)
