"""The soak tool runs end to end: its own servers, every kind of request it makes answered
without a 5xx, watchers coming and going, its samples and growth printed, and no seat the
reconcilers had to repair."""

from __future__ import annotations

import re
import sys

import pytest

from tests.loadtests.tools import run_tool


@pytest.mark.timeout(150)
async def test_the_soak_runs_and_reports() -> None:
    code, text = await run_tool(
        sys.executable,
        *("-m", "loadtests.soak", "--minutes", "0.25", "--every", "5", "--clients", "4"),
        *("--watchers", "4", "--users", "50", "--screenings", "3"),
        timeout_s=140,
    )
    assert code == 0, text
    for step in ("hold 201", "cancel 204", "book 201", "cancel ticket 200", "seat map 200"):
        assert re.search(rf"\b{step}: [\d,]+", text), (step, text)
    assert re.search(r"watchers connected: [1-9][\d,]*; dropped connections: 0", text), text
    samples = re.findall(r"^ +\d+ +[\d,]+ +[\d.]+ / [\d.]+ ", text, re.MULTILINE)
    assert len(samples) >= 3, text  # at the start, every 5 s, at the end; two workers each
    assert len(re.findall(r"^  worker \d+: RSS [+-][\d.]+ MB", text, re.MULTILINE)) == 2, text
    assert "repaired (Redis disagreed with PostgreSQL): 0" in text, text
