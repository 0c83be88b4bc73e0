"""The Starlette application: routes, error handlers and one lifespan for start-up and shutdown."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
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
)
from api.errors import HANDLERS
from api.openapi import openapi_document
from api.rendering import JSON
from api.routing import Endpoint, starlette_routes
from api.state import Services
from db import users
from db.migrate import migrate
from db.pool import create_pool
from seatlock import __version__
from seatlock.mail import Mailer
from seatlock.settings import Settings
from seatlock.tokens import TokenCodec, load_or_create_secret

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
    profiles.router,
    admin_stats.router,
]


def all_endpoints() -> list[Endpoint]:
    return [ep for router in ROUTERS for ep in router.endpoints]


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Connect to Redis and PostgreSQL, migrate, and close everything on the way out."""
    redis = Redis.from_url(
        settings.redis_url, max_connections=settings.redis_pool_max, health_check_interval=30
    )
    db = await create_pool(
        settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
    )
    try:
        async with db.acquire() as conn:
            await migrate(conn)
        tokens = TokenCodec(load_or_create_secret(settings), settings.access_token_minutes)
        services = Services(settings, redis, db, tokens, Mailer(settings))
        await users.ensure_admin_from_settings(services)
        yield services
    finally:
        await db.close()
        await redis.aclose()


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    endpoints = all_endpoints()
    document = openapi_document(endpoints, "seatlock", __version__)

    async def openapi(request: Request) -> JSON:
        return JSON(document)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            yield

    routes: list[BaseRoute] = [
        Route("/openapi.json", openapi, include_in_schema=False),
        *starlette_routes(endpoints),
    ]
    handlers: Any = HANDLERS
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
