"""Prometheus metrics (names under ``seatlock_``), summed over every worker of a server.

Every layer records into the metrics declared here; ``/metrics`` exposes them. ``seatlock serve``
runs several worker processes, so values live in prometheus-client's multi-process mode: the
supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory before any worker starts
(the variable is read when prometheus-client is first imported) and ``/metrics`` sums the files
of every worker. Without the variable (tests, one process) the default registry holds them.

The request metrics are recorded by the request middleware (api/observe.py) with the route's
template (``/api/v1/screenings/{screening_id}/availability``), never the raw path, so a client
cannot grow the label set.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Latency buckets for answers that take from a few hundred microseconds to seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

REQUESTS = Counter(
    "seatlock_http_requests",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "seatlock_http_request_duration_seconds",
    "Time from request to the end of the response, by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
