"""Settings that cannot mean anything are refused at start-up, in one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from seatlock.settings import Settings

BAD = [
    ("SEATLOCK_HOLD_SECONDS", "-5"),  # started, then every hold was a 500
    ("SEATLOCK_MAX_SEATS_PER_USER", "-1"),
    ("SEATLOCK_WORKERS", "-1"),
    ("SEATLOCK_PORT", "99999"),
    ("SEATLOCK_LOG_LEVEL", "loud"),
    ("SEATLOCK_BCRYPT_ROUNDS", "100"),
    ("SEATLOCK_JWT_SECRET", "short"),
    ("SEATLOCK_DB_POOL_MAX", "0"),
    ("SEATLOCK_DB_POOL_MIN", "20"),  # above the pool's default maximum of 10
    ("SEATLOCK_REDIS_TIMEOUT_SECONDS", "nan"),
    ("SEATLOCK_SWEEP_INTERVAL_SECONDS", "0"),
    ("SEATLOCK_MAX_HOLD_SECONDS", "60"),  # below the hold time
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_a_setting_out_of_its_range_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


def test_the_defaults_and_the_edges_of_the_ranges_are_accepted() -> None:
    Settings()
    Settings.from_env(
        {
            "SEATLOCK_HOLD_SECONDS": "1",
            "SEATLOCK_MAX_HOLD_SECONDS": "1",
            "SEATLOCK_PORT": "1",
            "SEATLOCK_WORKERS": "0",
            "SEATLOCK_LOG_LEVEL": "DEBUG",
            "SEATLOCK_JWT_SECRET": "x" * 32,
            "SEATLOCK_DB_POOL_MIN": "0",
            "SEATLOCK_RECONCILE_INTERVAL_SECONDS": "0",
        }
    )


def test_serve_stops_on_a_bad_setting_with_one_line_and_nothing_started() -> None:
    env = {**os.environ, "SEATLOCK_HOLD_SECONDS": "-5"}
    done = subprocess.run(
        [sys.executable, "-c", "from seatlock.server.cli import main; main()", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert "SEATLOCK_HOLD_SECONDS: -5 must be 1 or more" in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
