"""The request tally (seatlock/metrics.py): what a flush adds equals what observe() would have."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from seatlock import metrics
from seatlock.metrics import LATENCY_BUCKETS, RequestTally, add_observations

DURATIONS = (0.0001, 0.0005, 0.0007, 0.001, 0.003, 0.2, 0.2, 2.5, 11.0)


def histogram(name: str) -> Histogram:
    return Histogram(name, "test", ["route"], buckets=LATENCY_BUCKETS, registry=CollectorRegistry())


def samples(h: Histogram) -> dict[tuple[str, str], float]:
    """Bucket, count and sum samples by suffix and bound (the creation time left out)."""
    (family,) = h.collect()
    return {
        (s.name.removeprefix(family.name), s.labels.get("le", "")): s.value
        for s in family.samples
        if not s.name.endswith("_created")
    }


def tallied(durations: tuple[float, ...]) -> list[float]:
    tally = RequestTally()
    for seconds in durations:
        tally.record("/r", "GET", 200, seconds)
    return tally.timings[("/r", "GET")]


def test_prometheus_client_internals_are_as_add_observations_knows_them() -> None:
    # If this fails, prometheus-client changed its Histogram's internals: adapt _internals (and
    # the upper bound of its version in pyproject.toml), or the slower fallback is used.
    assert metrics._internals(histogram("seatlock_test_internals").labels("/r")) is not None


def test_a_flushed_tally_equals_one_observe_per_request() -> None:
    observed, added = histogram("seatlock_test_observed"), histogram("seatlock_test_added")
    for seconds in DURATIONS:
        observed.labels("/r").observe(seconds)
    add_observations(added.labels("/r"), tallied(DURATIONS))
    got, want = samples(added), samples(observed)
    assert got.keys() == want.keys() and len(got) == len(LATENCY_BUCKETS) + 3
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key


def test_without_the_internals_each_bucket_is_observed(monkeypatch: pytest.MonkeyPatch) -> None:
    observed, added = histogram("seatlock_test_observed2"), histogram("seatlock_test_fallback")
    for seconds in DURATIONS:
        observed.labels("/r").observe(seconds)
    monkeypatch.setattr(metrics, "_internals", lambda child: None)  # as if they changed
    add_observations(added.labels("/r"), tallied(DURATIONS))
    got, want = samples(added), samples(observed)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key


def test_counts_reach_the_counter_on_flush_and_once() -> None:
    tally = RequestTally()
    labels = ("/metrics-test", "GET", "201")
    before = metrics.REQUESTS.labels(*labels)._value.get()
    for _ in range(3):
        tally.record("/metrics-test", "GET", 201, 0.001)
    assert metrics.REQUESTS.labels(*labels)._value.get() == before
    metrics.flush_tallies()
    metrics.flush_tallies()
    assert metrics.REQUESTS.labels(*labels)._value.get() == before + 3
