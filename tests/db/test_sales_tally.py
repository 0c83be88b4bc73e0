"""The count of last week's sales that trending and recommendations rank by (db/discovery.py
``SalesTally``), kept per process; through HTTP in tests/api/test_discovery.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from db import discovery
from db.pool import ReplicaReads


@pytest.fixture
async def reads(backend_urls: tuple[str, str]) -> AsyncIterator[ReplicaReads]:
    pool = await asyncpg.create_pool(backend_urls[1], min_size=1, max_size=2)
    yield ReplicaReads(pool, None)
    await pool.close()


async def test_a_caller_that_goes_away_does_not_cancel_the_count_for_the_others(
    reads: ReplicaReads, sales_counts: list[int]
) -> None:
    tally = discovery.SalesTally(reads, 60)
    gone = asyncio.ensure_future(tally.current())
    waiting = asyncio.ensure_future(tally.current())
    await asyncio.sleep(0.05)
    gone.cancel()
    sales = await waiting
    assert isinstance(sales, discovery.Sales)
    assert gone.cancelled()
    assert await tally.current() is sales  # kept
    assert len(sales_counts) == 1


async def test_without_a_max_age_every_call_counts(
    reads: ReplicaReads, sales_counts: list[int]
) -> None:
    tally = discovery.SalesTally(reads, 0)
    await asyncio.gather(*(tally.current() for _ in range(3)))
    assert len(sales_counts) == 3


async def test_a_count_older_than_its_max_age_is_made_again(
    reads: ReplicaReads, sales_counts: list[int]
) -> None:
    now = [100.0]
    tally = discovery.SalesTally(reads, 10, clock=lambda: now[0])
    first = await tally.current()
    now[0] += 9.9
    assert await tally.current() is first
    now[0] += 0.2
    assert await tally.current() is not first
    assert len(sales_counts) == 2
