"""Prometheus metrics (names under ``seatlock_``), summed over every worker of a server.

Every layer records into the metrics declared here; ``/metrics`` exposes them. ``seatlock serve``
runs several worker processes, so values live in prometheus-client's multi-process mode: the
supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory before any worker starts
(the variable is read when prometheus-client is first imported) and ``/metrics`` sums the files
of every worker. Without the variable (tests, one process) the default registry holds them.

The request metrics are recorded by the request middleware (api/observe.py) with the route's
template (``/api/v1/screenings/{screening_id}/availability``), never the raw path, so a client
cannot grow the label set. They are tallied in the process (``RequestTally``) and added to the
metrics every second, like the hold counts (``Tally``): ``flush_tallies``.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets for answers that take from a few hundred microseconds to seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

REQUESTS = Counter(
    "seatlock_http_requests",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
SLOW_CLIENTS = Counter(
    "seatlock_http_slow_clients",
    "Connections closed by the server because the client had not sent, within"
    " SEATLOCK_REQUEST_READ_TIMEOUT_SECONDS, anything after connecting (idle), a whole request"
    " head after its first byte (head) or the next piece of a request body (body), or had read"
    " nothing of a response the server held back for it (read)",
    ["stage"],
)
UNREAD_REQUESTS = Counter(
    "seatlock_http_unread_requests",
    "Requests answered by the server's HTTP protocol before the app saw them, by status: 400"
    " (not HTTP), 408 (head not sent in time), 431 (request line and headers over 64 KB)",
    ["status"],
)
REQUEST_SECONDS = Histogram(
    "seatlock_http_request_duration_seconds",
    "Time from request to the end of the response, by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)

# Everything below is recorded by the layer named in its help. A counter of a process that
# exits stays in the sum (its file stays); a gauge's ``multiprocess_mode`` says how the workers'
# values combine: livesum (this worker's share of a total), livemin (the worst worker), max.

# -- seat holds and bookings (seatlock/services) -----------------------------------------------
HOLDS = Counter(
    "seatlock_holds",
    "Hold requests by outcome: granted, or the refusal (taken, booked, too_many, ...)",
    ["outcome"],
)
HOLDS_REFUSED_LOCALLY = Counter(
    "seatlock_holds_refused_locally",
    "Hold requests refused by the process's seat mirror without asking Redis (seatlock/engine/"
    "mirrors.py), by reason (taken, booked): a part of seatlock_holds_total's refusals",
    ["outcome"],
)
BOOKINGS = Counter(
    "seatlock_bookings",
    "Bookings by outcome: booked, replayed (same payment_id), refused, unavailable, cancelled",
    ["outcome"],
)
SEATS_UNMARKED = Gauge(
    "seatlock_bookings_unmarked",
    "Committed bookings whose seats are still being marked sold in Redis (background retries)",
    multiprocess_mode="livesum",
)
UNPAID_EXPIRED = Counter(
    "seatlock_unpaid_tickets_expired", "Pending tickets cancelled past their payment deadline"
)
RECONCILE_PASSES = Counter(
    "seatlock_reconcile_passes",
    "Reconciler passes by outcome (ok, failed, elsewhere: another process had the turn)",
    ["outcome"],
)
RECONCILE_REPAIRS = Counter(
    "seatlock_reconcile_repaired_screenings",
    "Screenings whose sold seats in Redis the reconciler corrected from PostgreSQL",
)

# -- engine: WebSocket fan-out, expiry, Redis scripts ---------------------------------------------
WS_CONNECTIONS = Gauge(
    "seatlock_ws_connections", "Open seat-map WebSocket connections", multiprocess_mode="livesum"
)
WS_EVENTS_SENT = Counter(
    "seatlock_ws_events_sent", "Seat events handed to WebSocket clients (one per client)"
)
WS_EVENT_DELAY = Histogram(
    "seatlock_ws_event_delay_seconds",
    "Time from a seat change (its script's run, on Redis's clock) to the write of its event to"
    " the sockets of this process's watchers; one observation per event and process",
    buckets=LATENCY_BUCKETS,
)
WS_EVENTS_DROPPED = Counter(
    "seatlock_ws_events_dropped",
    "Seat events lost by WebSocket clients dropped for reading too slowly",
)
WS_CLIENTS_DROPPED = Counter(
    "seatlock_ws_clients_dropped", "WebSocket clients dropped for reading too slowly"
)
EXPIRIES = Counter(
    "seatlock_hold_expiries",
    "Expired holds freed, by who saw them first: timer (the deadlines of the holds a process"
    " made), listener (keyspace event) or sweep",
    ["source"],
)
# Only every SCRIPT_SAMPLE-th script call of a process is timed (an observation costs ~2 µs in
# multi-process mode, a refused hold ~15 µs): the distribution is right, the count is 1/N.
SCRIPT_SAMPLE = 16
SCRIPT_SECONDS = Histogram(
    "seatlock_redis_script_duration_seconds",
    f"Time from a Lua script's call to its reply, by script (1 call in {SCRIPT_SAMPLE} timed)",
    ["script"],
    buckets=LATENCY_BUCKETS,
)

REDIS_NOT_ANSWERING = Counter(
    "seatlock_redis_not_answering",
    "Redis calls failed at once (fast and cluster transports): Redis, or the call's primary, did "
    "not answer in time and no probe got through since",
)

# -- accounts --------------------------------------------------------------------------------
PASSWORD_HASHES = Counter(
    "seatlock_password_hashes",
    "bcrypt hashes and checks on the password hashing lane: done, refused (a 503 at once: it"
    " would have waited longer than SEATLOCK_PASSWORD_WAIT_SECONDS for a thread) or late (a 503"
    " unhashed: it waited that long after all)",
    ["outcome"],
)

# -- db: pool and writers ---------------------------------------------------------------------
DB_POOL_SIZE = Gauge(
    "seatlock_db_pool_connections", "PostgreSQL connections open", multiprocess_mode="livesum"
)
DB_POOL_IN_USE = Gauge(
    "seatlock_db_pool_connections_in_use",
    "PostgreSQL connections lent out",
    multiprocess_mode="livesum",
)
DB_NOT_ANSWERING = Counter(
    "seatlock_db_not_answering",
    "Uses of PostgreSQL refused at once: a wait on it timed out and no probe had an answer since",
)
HISTORY_BACKLOG = Gauge(
    "seatlock_history_backlog", "Hold history changes queued", multiprocess_mode="livesum"
)
HISTORY_DROPPED = Counter(
    "seatlock_history_dropped", "Hold history changes dropped: the queue was full"
)
HISTORY_REJECTED = Counter(
    "seatlock_history_rejected", "Hold history changes PostgreSQL refused for good"
)
BOOKING_BACKLOG = Gauge(
    "seatlock_booking_backlog",
    "Bookings waiting for their group commit",
    multiprocess_mode="livesum",
)

# -- clocks and replicas: what each process goes by (seatlock/engine/clock.py, db/pool.py) ------
# Set by the background loops that measure them (every few seconds), never on a request.
# The clock gauges: one sample per live worker (liveall adds the pid), each measures its own. They
# are labelled by the clock measured (only "redis" so far) because an unlabelled gauge gets a 0
# sample in every process that imports this module, the supervisor included, at import.
CLOCK_OFFSET = Gauge(
    "seatlock_clock_offset_seconds",
    "A clock minus this process's (SEATLOCK_CLOCK_OFFSET_MS included); redis: hold times' clock",
    ["clock"],
    multiprocess_mode="liveall",
)
CLOCK_ERROR = Gauge(
    "seatlock_clock_error_seconds",
    "How far this process's reading of a clock may be off (half a TIME round trip)",
    ["clock"],
    multiprocess_mode="liveall",
)
# The worst worker's view (livemax; a non-worker's 0 changes nothing). +Inf: no answer.
DB_REPLICA_LAG = Gauge(
    "seatlock_db_replica_lag_seconds",
    "How far the PostgreSQL read replica is behind the primary (+Inf: it did not answer)",
    multiprocess_mode="livemax",
)
DB_REPLICA_READS = Gauge(
    "seatlock_db_replica_reads",
    "1 while lag-tolerant reads go to the PostgreSQL read replica, 0 while on the primary",
    multiprocess_mode="livemax",
)

# -- process: background loops and the embedded servers ---------------------------------------
# livemin: the stalest worker's beat, so `time() - seatlock_loop_last_beat_timestamp_seconds`
# alerts when a loop stops in any worker.
LOOP_BEAT = Gauge(
    "seatlock_loop_last_beat_timestamp_seconds",
    "When a background loop last beat (Unix time), the stalest worker's",
    ["loop"],
    multiprocess_mode="livemin",
)
# Observed 4 times a second per worker: the histogram's own cost (~6 µs) does not matter here.
LOOP_LAG = Histogram(
    "seatlock_event_loop_lag_seconds",
    "How late a worker's event loop resumed a task due now (sampled every 0.25 s): the time"
    " other work held the loop, which every request in that worker waited too",
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
EMBEDDED_RESTARTS = Counter(
    "seatlock_embedded_restarts",
    "Embedded servers restarted by the supervisor after they died",
    ["server"],
)


class Tally:
    """Counts of a labelled counter kept in plain ints and added to it by ``flush``.

    For the hottest paths: an increment is a dict update (~0.1 µs) where the counter's own, in
    multi-process mode, writes its file under a lock (~1 µs). Each app keeps its own (no thread
    shares one) and flushes it every second (seatlock/server/wiring.py), before each scrape and
    on shutdown, so /metrics lags the other workers by a second at most.
    """

    __slots__ = ("_children", "counts")

    def __init__(self, counter: Counter, labels: Iterable[str]) -> None:
        self._children = {label: counter.labels(label) for label in labels}
        self.counts = dict.fromkeys(self._children, 0)

    def flush(self) -> None:
        for label, count in self.counts.items():
            if count:
                self.counts[label] = 0
                self._children[label].inc(count)


# The histogram's upper bounds as prometheus-client keeps them (+Inf last).
_BOUNDS = (*LATENCY_BUCKETS, float("inf"))
_TALLIES: weakref.WeakSet[RequestTally] = weakref.WeakSet()


class RequestTally:
    """The request metrics of one app (api/observe.py) in plain numbers, added to REQUESTS and
    REQUEST_SECONDS by ``flush``.

    ``record`` costs ~0.5 µs where the counter and the histogram cost ~5.6 µs in multi-process
    mode (each writes its file under a lock). A timing is kept as a count and a sum per bucket,
    so a flush adds each bucket once (``add_observations``), whatever the number of requests.
    Used by one thread only, the event loop's; ``flush_tallies`` flushes every one of them.
    """

    __slots__ = ("__weakref__", "counts", "timings")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}  # (route, method, status)
        # (route, method) -> count per bucket, then sum per bucket
        self.timings: dict[tuple[str, str], list[float]] = {}
        _TALLIES.add(self)

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        timing = self.timings.get((route, method))
        if timing is None:
            timing = self.timings[(route, method)] = [0.0] * (2 * len(_BOUNDS))
        bucket = bisect_left(_BOUNDS, seconds)  # the first bound >= seconds, as observe() picks
        timing[bucket] += 1
        timing[len(_BOUNDS) + bucket] += seconds

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        for (route, method, status), count in counts.items():
            REQUESTS.labels(route, method, str(status)).inc(count)
        timings, self.timings = self.timings, {}
        for (route, method), timing in timings.items():
            add_observations(REQUEST_SECONDS.labels(route, method), timing)


def flush_tallies() -> None:
    """Add every request tally of this process to its metrics (every second, before a scrape
    and at shutdown: seatlock/server/wiring.py, api/metrics.py)."""
    for tally in list(_TALLIES):
        tally.flush()


def add_observations(child: Histogram, timing: list[float]) -> None:
    """Add a ``RequestTally`` timing to a histogram's child: one increment per bucket.

    prometheus-client has no public way to add many observations at once, so this uses its
    child's ``_buckets``, ``_sum`` and ``_upper_bounds`` (hence the upper bound on the version in
    pyproject.toml; tests/seatlock/test_metrics.py fails when they change). Without them, each
    bucket's mean is observed once per request in it: the same buckets, count and sum.
    """
    n = len(_BOUNDS)
    internals = _internals(child)
    if internals is None:
        for bucket in range(n):
            for _ in range(int(timing[bucket])):
                child.observe(timing[n + bucket] / timing[bucket])
        return
    buckets, total = internals
    total.inc(sum(timing[n:]))
    for bucket in range(n):
        if timing[bucket]:
            buckets[bucket].inc(timing[bucket])


def _internals(child: Histogram) -> tuple[list[Any], Any] | None:
    """The child's bucket values and sum value, when they are as this module knows them."""
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    bounds = getattr(child, "_upper_bounds", None)
    if not isinstance(buckets, list) or bounds is None or tuple(bounds) != _BOUNDS:
        return None
    if not all(hasattr(value, "inc") for value in (*buckets, total)):
        return None
    return buckets, total
