"""``make test`` runs one test process per core (pytest-xdist), each with servers of its own;
servers given by SEATLOCK_TEST_REDIS_URL / SEATLOCK_TEST_DATABASE_URL are for one process only
(the tests empty them between tests), which tests/conftest.py enforces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GIVEN = {
    "SEATLOCK_TEST_REDIS_URL": "redis://127.0.0.1:1/0",
    "SEATLOCK_TEST_DATABASE_URL": "postgresql://seatlock@127.0.0.1:1/seatlock",
}


def collect(processes: str) -> subprocess.CompletedProcess[str]:
    """Collect one test file with the given servers and ``-n processes`` (nothing connects)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")} | GIVEN
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", processes]
    return subprocess.run(
        [*command, "--collect-only", "tests/test_layers.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_given_servers_refuse_more_than_one_test_process() -> None:
    shared = collect("2")
    assert shared.returncode == pytest.ExitCode.USAGE_ERROR, shared.stdout + shared.stderr
    assert "make test TEST_WORKERS=0" in shared.stderr
    alone = collect("0")
    assert alone.returncode == 0, alone.stdout + alone.stderr
