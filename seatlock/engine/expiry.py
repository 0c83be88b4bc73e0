"""Hold expiry: keyspace notifications push expiries promptly; a periodic sweep is the net."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError, ResponseError

from seatlock import keys
from seatlock.engine.seats import SeatEngine
from seatlock.errors import SeatLockError

logger = logging.getLogger(__name__)
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.1, 5.0


async def enable_keyspace_events(redis: Redis) -> bool:
    """Make Redis publish key expiries ("Ex"); False when CONFIG is refused."""
    try:
        reply = await redis.config_get("notify-keyspace-events")
        current = _text(next(iter(reply.values()), None) or "")
        wanted = _with_expired_events(current)
        if wanted != current:
            await redis.config_set("notify-keyspace-events", wanted)
    except ResponseError as exc:
        logger.warning("cannot enable keyspace events (%s); relying on the sweep", exc)
        return False
    return True


def _with_expired_events(flags: str) -> str:
    """Add E (keyevent channel) and x (expired) to Redis's notify-keyspace-events flags."""
    if "E" not in flags:
        flags += "E"
    if "x" not in flags and "A" not in flags:
        flags += "x"
    return flags


async def listen_for_expiries(
    engine: SeatEngine, redis_url_or_client: str | Redis, stop: asyncio.Event
) -> None:
    """Turn expired lease keys into seat changes until ``stop`` is set; reconnects on errors."""
    if isinstance(redis_url_or_client, str):
        client, owned = Redis.from_url(redis_url_or_client), True
    else:
        client, owned = redis_url_or_client, False
    db = client.connection_pool.connection_kwargs.get("db", 0)
    channel = f"__keyevent@{db}__:expired"
    delay = RECONNECT_MIN_S
    try:
        while not stop.is_set():
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(channel)
                    delay = RECONNECT_MIN_S
                    # Expiries while we were not subscribed are lost: catch up on them once.
                    await _sweep_once(engine)
                    while not stop.is_set():
                        await _handle_next(engine, pubsub)
            except (RedisError, OSError) as exc:
                logger.warning("expiry listener lost Redis (%r); retrying in %.1fs", exc, delay)
                await _wait(stop, delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
    finally:
        if owned:
            await client.aclose()


async def _handle_next(engine: SeatEngine, pubsub: PubSub) -> None:
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
    if message is None or message["type"] != "message":
        return
    key = message["data"]
    if keys.parse_seat_hold(key) is None:
        return
    try:
        await engine.expire_lease(key)
    except SeatLockError as exc:
        logger.warning("could not expire %r: %s", key, exc.detail)


async def sweep_forever(engine: SeatEngine, interval_s: float, stop: asyncio.Event) -> None:
    """Run ``engine.sweep()`` every ``interval_s`` seconds until ``stop`` is set."""
    while not stop.is_set():
        await _sweep_once(engine)
        await _wait(stop, interval_s)


async def _sweep_once(engine: SeatEngine) -> None:
    try:
        freed = await engine.sweep()
    except (SeatLockError, RedisError, OSError) as exc:
        logger.warning("sweep failed: %r", exc)
        return
    if freed:
        logger.info("sweep freed %d expired holds", freed)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
