"""Fixtures of the database tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@pytest.fixture
async def fresh_url(backend_urls: tuple[str, str]) -> AsyncIterator[str]:
    """A new, empty database on the test server, dropped afterwards."""
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(with_database(backend_urls[1], "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(backend_urls[1], name)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
