"""The login storm tool runs end to end: its own servers, a crowd signing in that the hashing
lane partly turns away (503, Retry-After), every user in at last, and its figures printed."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
async def test_the_login_storm_runs_and_reports(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEATLOCK_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtests.loginstorm",
        *("--users", "20", "--readers", "2", "--cost", "8", "--seconds", "30", "--wait", "0"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 110)
    text = stdout.decode(errors="replace")
    assert proc.returncode == 0, text
    # No wait allowed: sign-ins that found the lane busy were refused, and came back.
    assert re.search(r"users: \{200: 20\}; answers: \{.*503: \d+", text), text
    assert re.search(r"seat-map reads during the storm \([\d.]+ s\): [\d,]+/s", text), text
    assert re.search(r"signed in after p50 [\d.]+ s", text), text
    assert re.search(r"each answer took p50 [\d.]+ s, max [\d.]+ s", text), text
    assert "/metrics during the storm: p50" in text, text
