"""Hold expiry: keyspace notifications push expiries promptly; a periodic sweep is the net."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from seatlock.engine import SeatEngine


async def enable_keyspace_events(redis: Redis) -> bool:
    """Make Redis publish key expiries ("Ex"); False when CONFIG is refused."""
    raise NotImplementedError


async def listen_for_expiries(
    engine: SeatEngine, redis_url_or_client: str | Redis, stop: asyncio.Event
) -> None:
    """Turn expired lease keys into seat changes until ``stop`` is set; reconnects on errors."""
    raise NotImplementedError


async def sweep_forever(engine: SeatEngine, interval_s: float, stop: asyncio.Event) -> None:
    """Run ``engine.sweep()`` every ``interval_s`` seconds until ``stop`` is set."""
    raise NotImplementedError
