"""Health: the guide's welcome route, liveness and readiness for load balancers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import msgspec
from redis.asyncio.cluster import RedisCluster
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
    # "ok" | "down"; on a Redis Cluster also "degraded": some primaries do not answer (ready:
    # the others' screenings are served, and every host sees the same cluster).
    redis: str
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
    redis, db_ok = await asyncio.gather(_redis_state(call), _db_ok(call))
    loops = call.services.heartbeats.stalled()
    stalled = [name for name, state in loops.items() if state != "ok"]
    is_ready = redis != "down" and db_ok and not stalled
    body = {
        "status": "ready" if is_ready else "unavailable",
        "redis": redis,
        "postgres": "ok" if db_ok else "down",
        "loops": loops,
        "stalled": stalled,
    }
    if is_ready:
        return JSON(body)
    return JSON(body, status_code=503, headers={"Retry-After": RETRY_AFTER_S})


async def _redis_state(call: Call) -> str:
    """Redis as readiness sees it, "ok" or "down"; on a Redis Cluster every primary is asked,
    and "degraded" when some do not answer. (redis-py sends a cluster's PING to one node, the
    primary of slot 0: stopped, it made every host unready, and a load balancer would have
    taken them all out.)"""
    redis = call.services.redis
    if not isinstance(redis, RedisCluster) or not (primaries := redis.get_primaries()):
        return "ok" if await _answers(redis.ping()) else "down"
    answers = await asyncio.gather(*(_answers(redis.ping(target_nodes=n)) for n in primaries))
    if all(answers):
        return "ok"
    return "degraded" if any(answers) else "down"


async def _answers(ping: Awaitable[Any]) -> bool:
    try:
        return bool(await asyncio.wait_for(ping, 2))
    except Exception:
        return False


async def _db_ok(call: Call) -> bool:
    try:
        return await asyncio.wait_for(call.services.db.fetchval("SELECT true"), 2) is True
    except Exception:
        return False
