"""The login storm tool runs end to end: its own servers, a crowd signing in that the hashing
lane partly turns away (503, Retry-After), every user in at last, and its figures printed."""

from __future__ import annotations

import re
import sys

import pytest

from tests.loadtests.tools import run_tool


@pytest.mark.timeout(120)
async def test_the_login_storm_runs_and_reports() -> None:
    code, text = await run_tool(
        sys.executable,
        *("-m", "loadtests.loginstorm"),
        *("--users", "20", "--readers", "2", "--cost", "8", "--seconds", "30", "--wait", "0"),
        timeout_s=110,
    )
    assert code == 0, text
    # No wait allowed: sign-ins that found the lane busy were refused, and came back.
    assert re.search(r"users: \{200: 20\}; answers: \{.*503: \d+", text), text
    assert re.search(r"seat-map reads during the storm \([\d.]+ s\): [\d,]+/s", text), text
    assert re.search(r"signed in after p50 [\d.]+ s", text), text
    assert re.search(r"each answer took p50 [\d.]+ s, max [\d.]+ s", text), text
    assert "/metrics during the storm: p50" in text, text
