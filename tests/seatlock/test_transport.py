"""The transport seam: one interface, chosen by a setting; what each implementation relies on."""

from __future__ import annotations

import asyncio
import importlib
from importlib.metadata import version

import hiredis
import pytest
from redis.asyncio import Redis
from redis.exceptions import (
    BusyLoadingError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)

from seatlock import keys
from seatlock.engine.redispy import RedisPyTransport
from seatlock.engine.transport import KINDS, Transport, open_transport
from seatlock.engine.wire import MORE, FastTransport, reply_error
from seatlock.settings import Settings

# Every public name of a dependency the transports use, with where it lives. A release that
# moves or drops one fails here by name instead of somewhere in the middle of a request.
PUBLIC_NAMES = {
    "redis.asyncio": ["Redis", "ConnectionPool", "BlockingConnectionPool"],
    "redis.asyncio.client": ["PubSub", "Pipeline"],
    "redis.asyncio.connection": ["RedisSSLContext", "SSLConnection"],
    "redis.asyncio.retry": ["Retry"],
    "redis.backoff": ["NoBackoff"],
    "redis.commands.core": ["AsyncScript"],
    "redis.exceptions": [
        "AuthenticationError",
        "BusyLoadingError",
        "ClusterCrossSlotError",
        "ClusterDownError",
        "ConnectionError",
        "ExecAbortError",
        "MasterDownError",
        "NoPermissionError",
        "NoScriptError",
        "OutOfMemoryError",
        "ReadOnlyError",
        "RedisError",
        "ResponseError",
        "TimeoutError",
        "TryAgainError",
    ],
    "hiredis": ["Reader", "ProtocolError"],
}


@pytest.mark.parametrize(("module", "names"), PUBLIC_NAMES.items())
def test_the_public_names_we_rely_on_exist(module: str, names: list[str]) -> None:
    missing = [name for name in names if not hasattr(importlib.import_module(module), name)]
    assert not missing, f"{module} no longer has {missing}: see seatlock/engine/wire.py, redispy.py"


def test_the_dependencies_are_within_the_bounds_we_tested() -> None:
    """pyproject.toml bounds redis and hiredis above: a new major needs this suite run again."""
    assert 5 <= int(version("redis").split(".")[0]) < 9
    assert 3 <= int(version("hiredis").split(".")[0]) < 4


def test_the_redis_py_api_we_call_has_not_changed() -> None:
    client = Redis()
    script = client.register_script("return 1")
    assert isinstance(script.sha, str) and len(script.sha) == 40
    assert hasattr(client, "response_callbacks") and hasattr(client.pipeline(), "load_scripts")
    for method in ("evalsha", "execute_command", "execute"):
        assert callable(getattr(client.pipeline(transaction=False), method)), method
    for method in ("subscribe", "psubscribe", "get_message", "ping", "aclose"):
        assert callable(getattr(client.pubsub(), method)), method


@pytest.mark.parametrize(
    ("reply", "kind", "message"),
    [
        (b"-NOSCRIPT No matching script. Please use EVAL.\r\n", NoScriptError, "No matching"),
        (b"-READONLY You can't write against a read only replica.\r\n", ReadOnlyError, "You can"),
        (b"-LOADING Redis is loading the dataset in memory\r\n", BusyLoadingError, "Redis is"),
        (b"-ERR unknown command 'X'\r\n", ResponseError, "ERR unknown command 'X'"),
        (b"-WRONGTYPE Operation against a key\r\n", ResponseError, "WRONGTYPE Operation"),
    ],
)
def test_error_replies_become_redis_py_public_exceptions(
    reply: bytes, kind: type[RedisError], message: str
) -> None:
    """The fast transport's hiredis reader, as it parses a reply off the wire."""
    reader = hiredis.Reader(replyError=reply_error, notEnoughData=MORE)
    reader.feed(reply)
    error = reader.gets()
    assert type(error) is kind
    assert str(error).startswith(message)
    assert reader.gets() is MORE


def test_reply_error_takes_text_or_bytes() -> None:
    assert isinstance(reply_error(b"NOSCRIPT gone"), NoScriptError)
    assert str(reply_error("READONLY no")) == "no"


async def test_the_setting_picks_the_transport(redis: Redis) -> None:
    assert KINDS == ("fast", "redis-py")
    assert isinstance(open_transport("fast", redis), FastTransport)
    transport = open_transport("redis-py", redis)
    assert isinstance(transport, RedisPyTransport)
    await transport.aclose()
    with pytest.raises(ValueError, match="unknown Redis transport 'cluster'"):
        open_transport("cluster", redis)


def test_an_unknown_transport_is_refused_at_start_up() -> None:
    assert Settings.from_env({}).redis_transport == "fast"
    env = {"SEATLOCK_REDIS_TRANSPORT": "redis-py"}
    assert Settings.from_env(env).redis_transport == "redis-py"
    with pytest.raises(ValueError, match="SEATLOCK_REDIS_TRANSPORT: 'hiredis' is not one of"):
        Settings.from_env({"SEATLOCK_REDIS_TRANSPORT": "hiredis"})


async def test_plain_commands_reply_as_redis_sends_them(redis: Redis, transport: Transport) -> None:
    """Both transports: RESP2 replies, bulk strings as bytes, no per-command parsing."""
    await redis.zadd(keys.LOADED_SCREENINGS, {"5": 1000})
    assert await transport.command("ZMSCORE", keys.LOADED_SCREENINGS, 5, 6) == [b"1000", None]
    assert await transport.command("PING") == b"PONG"
    assert await transport.command("GET", "sl:test:none") is None
    flags = await transport.command("CONFIG", "GET", "notify-keyspace-events")
    assert flags[0] == b"notify-keyspace-events"
    assert transport.db == 9  # ENGINE_DB, from the client the transport was made like
    with pytest.raises(NoScriptError):
        await transport.command("EVALSHA", "0" * 40, 0)
    with pytest.raises(ResponseError, match="wrong number of arguments"):
        await transport.command("GET")


async def test_a_subscription_delivers_payloads_in_order(
    redis: Redis, transport: Transport
) -> None:
    got: list[bytes] = []
    live: list[bool] = []
    feed = await transport.subscribe("sl:test:chan", got.append, on_live=lambda: live.append(True))
    try:
        for _ in range(100):
            if live:
                break
            await asyncio.sleep(0.01)
        assert live == [True]
        for n in range(50):
            await redis.publish("sl:test:chan", str(n))
        for _ in range(100):
            if len(got) == 50:
                break
            await asyncio.sleep(0.01)
        assert got == [str(n).encode() for n in range(50)]
    finally:
        feed.close()
    await asyncio.wait_for(asyncio.shield(feed.closed), 2)


def test_the_timeouts_of_redis_and_postgresql_are_settings() -> None:
    env = {"SEATLOCK_REDIS_TIMEOUT_SECONDS": "2.5", "SEATLOCK_DB_TIMEOUT_SECONDS": "4"}
    settings = Settings.from_env(env)
    assert (settings.redis_timeout_seconds, settings.db_timeout_seconds) == (2.5, 4.0)
    assert (Settings().redis_timeout_seconds, Settings().db_timeout_seconds) == (5.0, 10.0)
    for name in ("redis_timeout_seconds", "db_timeout_seconds"):
        with pytest.raises(ValueError, match=name.upper()):
            Settings(**{name: 0})
