"""``SessionTrust.confirmed``: what a process remembers of the sessions it found active, and for
how long; bounded without forgetting them all at once."""

from __future__ import annotations

import pytest

from seatlock.accounts import sessions
from seatlock.accounts.sessions import SessionTrust


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(sessions.time, "monotonic", clock)
    return clock


@pytest.fixture
def trust() -> SessionTrust:
    trust = SessionTrust(keep_revoked_seconds=60)
    trust.live = True
    return trust


def test_a_confirmation_lasts_confirm_seconds(clock: Clock, trust: SessionTrust) -> None:
    trust.confirm("a", trust.epoch)
    clock.now += sessions.CONFIRM_SECONDS - 0.1
    assert trust.trusts("a")
    clock.now += 0.1
    assert not trust.trusts("a")


def test_lapsed_confirmations_are_dropped_as_new_ones_come(
    clock: Clock, trust: SessionTrust
) -> None:
    for name in ("a", "b", "c"):
        trust.confirm(name, trust.epoch)
        clock.now += 1
    trust.confirm("a", trust.epoch)  # confirmed again: now the latest
    clock.now += sessions.CONFIRM_SECONDS - 0.5  # b's and c's lapsed, a's not
    trust.confirm("d", trust.epoch)
    assert list(trust.confirmed) == ["a", "d"]


def test_at_the_bound_only_the_oldest_goes(
    clock: Clock, trust: SessionTrust, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions, "MAX_CONFIRMED", 3)
    for name in ("a", "b", "c", "d"):
        trust.confirm(name, trust.epoch)
        clock.now += 1
    assert list(trust.confirmed) == ["b", "c", "d"]
    assert [trust.trusts(name) for name in "abcd"] == [False, True, True, True]


def test_a_confirmation_from_before_a_revocation_or_flush_is_not_kept(trust: SessionTrust) -> None:
    epoch = trust.epoch
    trust.revoke(["a"])
    trust.confirm("a", epoch)
    trust.forget_all()
    trust.confirm("b", epoch)
    assert not trust.confirmed


def test_a_revocation_calls_what_waits_for_it_once_and_nothing_else(
    trust: SessionTrust, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def failing() -> None:
        calls.append("failing")
        raise RuntimeError("a callback's own failure")

    trust.on_revoke("a", failing)
    trust.on_revoke("a", lambda: calls.append("a1"))
    trust.on_revoke("b", lambda: calls.append("b"))
    gone = lambda: calls.append("gone")  # noqa: E731
    trust.on_revoke("a", gone)
    trust.forget_callback("a", gone)  # its connection ended first
    trust.revoke(["a", "c"])
    assert calls == ["failing", "a1"] and "a" in trust.revoked  # the failure stopped nothing
    assert "a callback's own failure" in caplog.text
    trust.revoke(["a"])
    assert calls == ["failing", "a1"] and trust.watched() == ["b"]
