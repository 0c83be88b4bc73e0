"""The per-process cache of screenings' seat details (db/layouts.py Layouts)."""

from __future__ import annotations

import asyncpg
import pytest

from db import layouts
from db.layouts import Layouts
from tests import factories as make


async def test_the_seat_details_of_at_most_max_layouts_screenings_are_kept(
    db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layouts, "MAX_LAYOUTS", 3)
    shows = [await make.show(db, 2) for _ in range(4)]
    cache = Layouts(db)
    for show in shows:
        details = await cache.seats(show.id)
        assert details is not None and sorted(details.seats) == sorted(show.seat_ids)
    assert cache.cached(shows[0].id) is None  # the least recently loaded went
    assert [cache.cached(show.id) is not None for show in shows[1:]] == [True] * 3
    assert await cache.seats(shows[0].id) is not None  # loaded again, another one goes
    assert cache.cached(shows[1].id) is None
    assert await cache.seats(987_654_321) is None  # no such screening: nothing kept
    assert [cache.cached(show.id) is not None for show in shows] == [True, False, True, True]
