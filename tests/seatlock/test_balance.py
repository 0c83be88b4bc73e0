"""The workers' shares of the HTTP connections (seatlock/server/balance.py): when one lets some go,
and how many; a connection asked to close stops counting at once."""

from __future__ import annotations

import asyncio

import pytest

from seatlock.server import balance
from seatlock.server.balance import Balance, excess


@pytest.mark.parametrize(
    ("mine", "counts", "surplus"),
    [
        (71, [71, 57], 7),  # down to the share, 64
        (67, [67, 61], 3),  # over 64 + 2 of slack
        (66, [66, 62], 0),  # within the slack
        (65, [65, 64], 0),  # an odd one out stays
        (57, [71, 57], 0),  # under its share
        (30, [30, 2], 14),  # share 16, slack 1
        (18, [18, 14], 2),
        (17, [17, 15], 0),
        (6, [6, 4, 0], 2),  # a third worker just started: share 4
        (9, [9], 0),  # one worker: nothing to balance with
        (0, [0, 0], 0),
    ],
)
def test_a_worker_lets_go_what_it_holds_over_its_share_once_over_the_slack(
    mine: int, counts: list[int], surplus: int
) -> None:
    assert excess(mine, counts) == surplus


async def test_counts_are_published_and_a_look_finds_the_surplus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(balance, "LOOK_S", 0.01)
    counts = [0, 5]
    mine = Balance(counts, 0)
    for _ in range(9):
        mine.joined()
    assert counts == [9, 5] and mine.excess == 0  # not looked yet
    await asyncio.sleep(0.05)
    assert mine.excess == 2  # share 7, slack 1
    mine.shed()
    assert counts == [8, 5] and mine.excess == 1 and mine.connections == 8
    mine.left()  # one closed by its client
    assert counts == [7, 5]
    await asyncio.sleep(0.05)
    assert mine.excess == 0
