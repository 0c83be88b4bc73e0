"""Health: the guide's welcome route, liveness and readiness for load balancers."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from api.rendering import JSON
from api.routing import Call, Router
from seatlock import __version__

router = Router("Health")


class WelcomeOut(msgspec.Struct):
    message: str
    status: str
    version: str
    docs: str


class LiveOut(msgspec.Struct):
    status: str


class ReadyOut(msgspec.Struct):
    status: str  # "ready" | "unavailable" (503)
    redis: str  # "ok" | "down"
    postgres: str


@router.get("/", response=WelcomeOut)
async def welcome(call: Call) -> dict[str, Any]:
    """API health check and welcome message."""
    return {
        "message": "Welcome to the Cinema Seat Selection API (seatlock)",
        "status": "healthy",
        "version": __version__,
        "docs": "/docs",
    }


@router.get("/health/live", response=LiveOut)
async def live(call: Call) -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "alive"}


@router.get("/health/ready", response=ReadyOut)
async def ready(call: Call) -> JSON:
    """Readiness: Redis and PostgreSQL both answer (503 otherwise)."""
    redis_ok, db_ok = await asyncio.gather(_redis_ok(call), _db_ok(call))
    body = {
        "status": "ready" if redis_ok and db_ok else "unavailable",
        "redis": "ok" if redis_ok else "down",
        "postgres": "ok" if db_ok else "down",
    }
    return JSON(body, status_code=200 if redis_ok and db_ok else 503)


async def _redis_ok(call: Call) -> bool:
    try:
        return bool(await asyncio.wait_for(call.services.redis.ping(), 2))
    except Exception:
        return False


async def _db_ok(call: Call) -> bool:
    try:
        return await asyncio.wait_for(call.services.db.fetchval("SELECT true"), 2) is True
    except Exception:
        return False
