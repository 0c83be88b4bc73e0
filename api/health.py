"""Health: the guide's welcome route, liveness and readiness for load balancers."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from starlette.responses import RedirectResponse
from starlette.types import Scope

from api.rendering import JSON
from api.routing import Call, Router
from seatlock import __version__

router = Router("Health")
APP_PATH = "/app"  # api/webapp.py
RETRY_AFTER_S = "5"  # what a load balancer is told to wait before asking readiness again


class WelcomeOut(msgspec.Struct):
    message: str
    status: str
    version: str
    docs: str
    app: str  # the seat-map web app (browsers asking for HTML at / are sent there)


class LiveOut(msgspec.Struct):
    status: str


class ReadyOut(msgspec.Struct):
    status: str  # "ready" | "unavailable" (503)
    redis: str  # "ok" | "down"
    postgres: str
    # Each background loop: "ok", "stopped" or "silent for N s" (seatlock/heartbeats.py).
    loops: dict[str, str]
    stalled: list[str]  # the loops that are not "ok"


@router.get("/", response=WelcomeOut)
async def welcome(call: Call) -> dict[str, Any] | RedirectResponse:
    """API health check and welcome message."""
    if wants_html(call.scope):
        return RedirectResponse(call.scope.get("root_path", "") + APP_PATH, 303)
    return {
        "message": "Welcome to the Cinema Seat Selection API (seatlock)",
        "status": "healthy",
        "version": __version__,
        "docs": "/docs",
        "app": APP_PATH,
    }


def wants_html(scope: Scope) -> bool:
    """Whether the client is a browser opening the page: its Accept names text/html first.

    API clients, health checks and scripts send no Accept, ``*/*`` or application/json, and get
    the JSON welcome as the frontend guide describes it.
    """
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"accept":
            return value.startswith(b"text/html")
    return False


@router.get("/health/live", response=LiveOut)
async def live(call: Call) -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "alive"}


@router.get("/health/ready", response=ReadyOut)
async def ready(call: Call) -> JSON:
    """Readiness: Redis and PostgreSQL answer and every background loop beats (503
    otherwise, with Retry-After and what is wrong)."""
    redis_ok, db_ok = await asyncio.gather(_redis_ok(call), _db_ok(call))
    loops = call.services.heartbeats.stalled()
    stalled = [name for name, state in loops.items() if state != "ok"]
    is_ready = redis_ok and db_ok and not stalled
    body = {
        "status": "ready" if is_ready else "unavailable",
        "redis": "ok" if redis_ok else "down",
        "postgres": "ok" if db_ok else "down",
        "loops": loops,
        "stalled": stalled,
    }
    if is_ready:
        return JSON(body)
    return JSON(body, status_code=503, headers={"Retry-After": RETRY_AFTER_S})


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
