"""SEATLOCK_HOLD_REPLICAS and its timeout: read from the environment, refused when they make no
sense, and wired into the engine (None: holds do not wait)."""

from __future__ import annotations

import pytest

from seatlock.engine.transport import Replicas
from seatlock.server.wiring import hold_replicas
from seatlock.settings import Settings


def test_replicas_are_off_by_default() -> None:
    settings = Settings.from_env({})
    assert (settings.hold_replicas, settings.hold_replicas_timeout_ms) == (0, 200)
    assert hold_replicas(settings) is None


def test_replicas_come_from_the_environment() -> None:
    env = {"SEATLOCK_HOLD_REPLICAS": "2", "SEATLOCK_HOLD_REPLICAS_TIMEOUT_MS": "150"}
    assert hold_replicas(Settings.from_env(env)) == Replicas(2, 150)


@pytest.mark.parametrize(
    ("name", "value"),
    [("SEATLOCK_HOLD_REPLICAS", "-1"), ("SEATLOCK_HOLD_REPLICAS_TIMEOUT_MS", "0")],
)
def test_nonsense_is_refused_at_start_up(name: str, value: str) -> None:
    # A WAIT timeout of 0 would block a connection until the replicas answer: never allowed.
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})
