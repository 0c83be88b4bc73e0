"""The per-process hint of active history rows: what re-holds and extensions find in it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from db.reservations import Closed, Extended, Inserted, LiveRow, LiveRows

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATER, LONGER = NOW + timedelta(minutes=5), NOW + timedelta(minutes=9)


def test_a_row_is_found_only_for_its_user_and_expiry() -> None:
    live = LiveRows()
    live.apply(Inserted([(1, 7, 10, 3, NOW, LATER), (2, 7, 11, 3, NOW, LATER)]))
    assert live.find(7, 10, 3, LATER) == LiveRow(1, 3, NOW, LATER)
    assert live.find(7, 10, 4, LATER) is None  # another user
    assert live.find(7, 10, 3, LONGER) is None  # the hold changed elsewhere
    assert live.find(8, 10, 3, LATER) is None  # another screening


def test_extensions_and_closes_of_the_rows_user_apply_others_do_not() -> None:
    live = LiveRows()
    live.apply(Inserted([(1, 7, 10, 3, NOW, LATER), (2, 7, 11, 3, NOW, LATER)]))
    live.apply(Extended(7, 4, {10: LONGER}))  # not their row
    live.apply(Extended(7, 3, {11: LONGER}))
    live.apply(Closed(7, 4, [11], "cancelled"))  # not their row
    live.apply(Closed(7, 3, [10], "cancelled"))
    assert live.find(7, 10, 3, LATER) is None
    assert live.find(7, 11, 3, LONGER) == LiveRow(2, 3, NOW, LONGER)
    live.apply(Closed(7, 3, None, "cancelled"))  # all seats: rows are looked up, not dropped
    assert live.find(7, 11, 3, LONGER) is not None


def test_a_new_hold_replaces_the_seats_row_and_the_oldest_rows_go_first() -> None:
    live = LiveRows(size=2)
    live.apply(Inserted([(1, 7, 10, 3, NOW, LATER)]))
    live.apply(Inserted([(2, 7, 11, 3, NOW, LATER)]))
    live.apply(Inserted([(3, 7, 10, 4, NOW, LATER)]))  # seat 10 again: now the newest
    live.apply(Inserted([(4, 7, 12, 3, NOW, LATER)]))  # one too many: seat 11 goes
    assert live.find(7, 10, 4, LATER) == LiveRow(3, 4, NOW, LATER)
    assert live.find(7, 11, 3, LATER) is None
    assert live.find(7, 12, 3, LATER) == LiveRow(4, 3, NOW, LATER)
