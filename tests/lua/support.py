"""Helpers for the engine and script tests: a LayoutSource from a dict, key dumps, event taps, and
the transports every engine test runs on (each test asking for ``transport`` runs once per kind)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from seatlock import keys
from seatlock.engine.model import Layout
from seatlock.engine.seats import SeatEngine
from seatlock.engine.transport import KINDS, Transport, open_transport

HOUR_MS = 3_600_000
# The engine tests use their own database: a live test server (session-wide) runs its expiry
# listener and sweep on the default one, and would free and announce our holds.
ENGINE_DB = 9


def engine_url(redis_url: str) -> str:
    """The test Redis URL pointed at ENGINE_DB."""
    parts = urlsplit(redis_url)
    return urlunsplit(parts._replace(path=f"/{ENGINE_DB}"))


@contextlib.asynccontextmanager
async def engine_redis(redis_url: str, **options: Any) -> AsyncIterator[Redis]:
    client = Redis.from_url(engine_url(redis_url), **options)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(name="redis")
async def engine_db_redis(backend_urls: tuple[str, str]) -> AsyncIterator[Redis]:
    """For engine and script tests, ``redis`` is a client of ENGINE_DB (see tests/*/conftest.py)."""
    async with engine_redis(backend_urls[0]) as client:
        yield client


@pytest.fixture(params=KINDS)
def transport_kind(request: pytest.FixtureRequest) -> str:
    """Each engine test runs on every transport (seatlock/engine/transport.py)."""
    return str(request.param)


Transports = Callable[..., Transport]


@pytest.fixture
async def transports(redis: Redis, transport_kind: str) -> AsyncIterator[Transports]:
    """Opens transports of the kind under test, like ``redis`` or the client given (one per
    engine that stands for a process); all are closed at the end."""
    made: list[Transport] = []

    def make(client: Redis | None = None) -> Transport:
        made.append(open_transport(transport_kind, redis if client is None else client))
        return made[-1]

    yield make
    for transport in made:
        await transport.aclose()


@pytest.fixture
def transport(transports: Transports) -> Transport:
    return transports()


async def wait_until(check: Callable[[], bool], seconds: float = 3.0) -> None:
    """Until ``check()`` holds (asserted once more at the end)."""
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    assert check()


def now_ms() -> int:
    return int(time.time() * 1000)


def two_screenings(s: int, t: int, buyer: int) -> DictSource:
    """Screening ``s`` of seats 1-4, seat 4 sold to ``buyer``, and ``t`` of seats 1-2."""
    source = DictSource()
    source.add(s, [1, 2, 3, 4], {4: buyer})
    source.add(t, [1, 2])
    return source


class DictSource:
    """A LayoutSource backed by a dict, standing in for PostgreSQL; ``fail`` simulates an outage."""

    def __init__(self) -> None:
        self.layouts: dict[int, Layout] = {}
        self.calls = 0
        self.fail = False

    def add(
        self, screening_id: int, seats: list[int], sold: dict[int, int] | None = None, **kw: int
    ) -> None:
        starts_at = kw.get("starts_at_ms", now_ms() + 24 * HOUR_MS)
        self.layouts[screening_id] = Layout(starts_at, seats, dict(sold or {}))

    async def __call__(self, screening_id: int) -> Layout | None:
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionRefusedError("PostgreSQL is down")
        return self.layouts.get(screening_id)


def make_engine(transport: Transport, source: DictSource, **changes: int) -> SeatEngine:
    options = {"hold_ms": 300_000, "max_hold_ms": 1_800_000, "max_seats_per_user": 10}
    options.update(changes)
    return SeatEngine(transport, source, **options)


async def dump(redis: Redis, screening_id: int) -> dict[str, Any]:
    """Every key of the screening and its value (a lease: its owner and whether it has a TTL)."""
    pattern = keys.screening_tag(screening_id).replace("{", "[{]").replace("}", "[}]") + "*"
    out: dict[str, Any] = {}
    async for raw in redis.scan_iter(match=pattern):
        key = _text(raw)
        kind = _text(await redis.type(key))
        if kind == "string":
            out[key] = (await redis.get(key), await redis.pttl(key) > 0)
        elif kind == "hash":
            out[key] = await redis.hgetall(key)
        elif kind == "set":
            out[key] = await redis.smembers(key)
        elif kind == "zset":
            out[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            out[key] = await redis.xrange(key)
    return out


async def calls_made(redis: Redis, call: Awaitable[object]) -> dict[str, int]:
    """The Redis commands (name -> count) run in ENGINE_DB while awaiting call, those of its
    scripts included. Read with MONITOR, not the server-wide command counts: another client of
    the suite's Redis (the session's live server writes its WebSocket stats every second, in
    database 0) would be counted too."""
    marker = f"calls-made-{uuid.uuid4().hex}"
    counts: Counter[str] = Counter()
    async with redis.monitor() as monitor:  # on once MONITOR is answered
        await call
        await redis.echo(marker)  # the end of what is counted
        while True:
            entry = await monitor.next_command()
            name, _, rest = entry["command"].partition(" ")
            if name.lower() == "echo" and marker in rest:
                return dict(counts)
            if entry["db"] == ENGINE_DB:
                counts[name.lower()] += 1


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class EventTap:
    """Subscribed to a screening's channel; ``next()`` returns the next decoded change event.

    The version every event carries is checked to follow the previous one, then removed (it is in
    ``versions``); empty reset markers (a load, a forget) are skipped unless ``markers`` is set.
    """

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self.versions: list[int] = []

    async def next(self, within: float = 2.0, *, markers: bool = False) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None and message["type"] == "message":
                event: dict[str, Any] = json.loads(message["data"])
                if "version" in event:
                    version = event.pop("version")
                    assert isinstance(version, int)
                    assert not self.versions or version > self.versions[-1]
                    self.versions.append(version)
                if markers or event["seats"] or not event.get("reset"):
                    return event
        raise AssertionError(f"no event within {within:.1f}s")

    async def none(self, wait: float = 0.2) -> None:
        message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
        if message is not None and message["type"] == "message":
            event = json.loads(message["data"])
            assert event.get("reset") and not event["seats"], event
            await self.none(wait)


@contextlib.asynccontextmanager
async def tap(redis: Redis, screening_id: int) -> AsyncIterator[EventTap]:
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(keys.screening_events(screening_id))
        await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        yield EventTap(pubsub)
