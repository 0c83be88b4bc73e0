from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from seatlock.server.embedded import EmbeddedPostgres, EmbeddedRedis, embedded_services
from tests.support import processes_mentioning, wait_until_gone


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A directory outside pytest's tmp root: PostgreSQL runs as another user when we are root,
    and every pytest session resets that root to mode 0700 (other sessions may run meanwhile)."""
    path = Path(tempfile.mkdtemp(prefix="seatlock-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def redis_roundtrip(url: str, key: str, value: bytes | None = None) -> bytes | None:
    client = Redis.from_url(url)
    try:
        assert await client.ping()
        if value is not None:
            await client.set(key, value)
        got: bytes | None = await client.get(key)
        return got
    finally:
        await client.aclose()


async def test_both_answer_and_stop_leaves_nothing(data_dir: Path) -> None:
    with embedded_services(data_dir, persistent=False) as (redis_url, database_url):
        running = " ".join(cmdline for _, cmdline in processes_mentioning(data_dir))
        assert "redis-server" in running
        assert "postgres -D" in running
        assert await redis_roundtrip(redis_url, "k", b"v") == b"v"
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT current_database()") == "seatlock"
        finally:
            await conn.close()
    assert processes_mentioning(data_dir) == []


async def test_redis_data_survives_a_restart(data_dir: Path) -> None:
    first = EmbeddedRedis(data_dir / "redis", persistent=True)
    try:
        await redis_roundtrip(first.start(), "sold", b"A1")
    finally:
        first.stop()
    assert first.proc is not None and first.proc.returncode is not None
    second = EmbeddedRedis(data_dir / "redis", persistent=True)
    try:
        assert await redis_roundtrip(second.start(), "sold") == b"A1"
    finally:
        second.stop()
    assert processes_mentioning(data_dir) == []


async def test_postgres_data_survives_a_restart(data_dir: Path) -> None:
    data = data_dir / "postgres" / "data"
    first = EmbeddedPostgres(data, persistent=True)
    try:
        conn = await asyncpg.connect(first.start())
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('sold')")
        await conn.close()
    finally:
        first.stop()
    assert wait_until_gone(data) == []
    second = EmbeddedPostgres(data, persistent=True)
    try:
        conn = await asyncpg.connect(second.start())
        assert await conn.fetchval("SELECT v FROM kept") == "sold"
        await conn.close()
    finally:
        second.stop()
    assert wait_until_gone(data) == []


async def test_redis_runs_with_the_settings_holds_rely_on(redis: Redis) -> None:
    """The session's Redis is the embedded one: prompt expiry and skiplist sorted sets."""
    config = await redis.config_get("*")
    assert config["hz"] == "100"
    assert config["active-expire-effort"] == "3"
    assert "x" in config["notify-keyspace-events"].lower()
    assert config["zset-max-ziplist-entries"] == "0"
    await redis.zadd("sl:test:zset", {"1": 1})
    assert await redis.object("encoding", "sl:test:zset") == b"skiplist"
