"""Real servers for the whole suite: a throw-away redis-server and PostgreSQL on free loopback
ports (or the ones named by SEATLOCK_TEST_REDIS_URL / SEATLOCK_TEST_DATABASE_URL), and the
seatlock app served over real HTTP by uvicorn in a background thread. Under pytest-xdist (``make
test``) each test process has servers of its own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from db import discovery
from db.migrate import migrate_database
from seatlock.server.embedded import embedded_services
from seatlock.settings import Settings
from tests.support import Account, LiveServer, empty_tables, make_account

TEST_SECRET = "test-secret-" + "x" * 40


def given_backends() -> tuple[str, str]:
    """The servers SEATLOCK_TEST_REDIS_URL and SEATLOCK_TEST_DATABASE_URL name (both or none)."""
    redis_url = os.environ.get("SEATLOCK_TEST_REDIS_URL", "")
    database_url = os.environ.get("SEATLOCK_TEST_DATABASE_URL", "")
    return (redis_url, database_url) if redis_url and database_url else ("", "")


def pytest_configure(config: pytest.Config) -> None:
    # ``make test`` runs one test process per core (pytest-xdist), each starting its own
    # servers; given servers are emptied between tests, so two processes cannot share them.
    processes = getattr(config.option, "numprocesses", None) or 0
    if given_backends()[0] and processes > 1:
        raise pytest.UsageError(
            "SEATLOCK_TEST_REDIS_URL and SEATLOCK_TEST_DATABASE_URL name one set of servers, which"
            " the tests empty between tests: run the suite in one process"
            " (make test TEST_WORKERS=0, or pytest -n 0)"
        )


@pytest.fixture(scope="session")
def backend_urls() -> Iterator[tuple[str, str]]:
    redis_url, database_url = given_backends()
    if redis_url:  # and database_url: given_backends gives both or neither
        asyncio.run(migrate_database(database_url))
        yield redis_url, database_url
        return
    root = Path(tempfile.mkdtemp(prefix="seatlock-test-"))
    try:
        with embedded_services(root, persistent=False) as urls:
            asyncio.run(migrate_database(urls[1]))
            yield urls
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def base_settings(
    backend_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return Settings(
        redis_url=backend_urls[0],
        database_url=backend_urls[1],
        data_dir=tmp_path_factory.mktemp("data"),
        jwt_secret=TEST_SECRET,
        bcrypt_rounds=4,
        seed_demo=False,
        workers=1,
        login_max_failures_per_ip=1000,
        # Tests change catalog rows straight in PostgreSQL and read them back at once; the
        # answer cache has its own tests (tests/api/test_answercache.py), as has the tally of
        # sales that trending ranks by (tests/api/test_discovery.py, tests/db/test_sales_tally.py).
        catalog_cache_seconds=0,
        sales_cache_seconds=0,
    )


@pytest.fixture(scope="session")
def server(base_settings: Settings) -> Iterator[LiveServer]:
    live = LiveServer(base_settings)
    live.start()
    yield live
    live.stop()


@pytest.fixture
def make_server(base_settings: Settings) -> Iterator[object]:
    """Start extra servers with changed settings: ``make_server(hold_seconds=2)``."""
    started: list[LiveServer] = []

    def start(**changes: object) -> LiveServer:
        live = LiveServer(base_settings.replace(**changes))
        live.start()
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()


@pytest.fixture
async def db(backend_urls: tuple[str, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(backend_urls[1])
    yield conn
    await conn.close()


@pytest.fixture
async def redis(backend_urls: tuple[str, str]) -> AsyncIterator[Redis]:
    client = Redis.from_url(backend_urls[0])
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
async def clean(backend_urls: tuple[str, str], base_settings: Settings) -> None:
    """Every test starts from empty tables, an empty Redis and an empty outbox."""
    conn = await asyncpg.connect(backend_urls[1])
    try:
        await empty_tables(conn)
    finally:
        await conn.close()
    client = Redis.from_url(backend_urls[0])
    try:
        await client.flushall()
    finally:
        await client.aclose()
    shutil.rmtree(base_settings.outbox_dir, ignore_errors=True)


@pytest.fixture
async def client(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
        yield c


@pytest.fixture
async def user(client: httpx.AsyncClient) -> Account:
    return await make_account(client, "alice@example.com", "Alice Example")


@pytest.fixture
async def other_user(client: httpx.AsyncClient) -> Account:
    return await make_account(client, "bob@example.com", "Bob Example")


@pytest.fixture
async def admin(client: httpx.AsyncClient, server: LiveServer) -> Account:
    return await make_account(
        client, "admin@example.com", "Admin", admin_db=server.settings.database_url
    )


@pytest.fixture
def sales_counts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the counts of last week's sales that trending and recommendations rank by
    (db/discovery.py): the real query, slowed so that concurrent callers overlap for sure."""
    calls: list[int] = []
    real = discovery.recent_sales

    async def counted(db: Any) -> discovery.Sales:
        calls.append(1)
        await asyncio.sleep(0.1)
        return await real(db)

    monkeypatch.setattr(discovery, "recent_sales", counted)
    return calls
