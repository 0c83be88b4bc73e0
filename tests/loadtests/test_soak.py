"""The soak tool runs end to end: its own servers, every kind of request it makes answered
without a 5xx, watchers coming and going, its samples and growth printed, and no seat the
reconcilers had to repair."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(150)
async def test_the_soak_runs_and_reports() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEATLOCK_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtests.soak",
        *("--minutes", "0.25", "--every", "5", "--clients", "4", "--watchers", "4"),
        *("--users", "50", "--screenings", "3"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 140)
    text = stdout.decode(errors="replace")
    assert proc.returncode == 0, text
    for step in ("hold 201", "cancel 204", "book 201", "cancel ticket 200", "seat map 200"):
        assert re.search(rf"\b{step}: [\d,]+", text), (step, text)
    assert re.search(r"watchers connected: [1-9][\d,]*; dropped connections: 0", text), text
    samples = re.findall(r"^ +\d+ +[\d,]+ +[\d.]+ / [\d.]+ ", text, re.MULTILINE)
    assert len(samples) >= 3, text  # at the start, every 5 s, at the end; two workers each
    assert len(re.findall(r"^  worker \d+: RSS [+-][\d.]+ MB", text, re.MULTILINE)) == 2, text
    assert "repaired (Redis disagreed with PostgreSQL): 0" in text, text
