"""``GET /metrics``: Prometheus's text format, summed over every worker of the server.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``seatlock serve``: seatlock/server/cli.py) the answer sums
the files every worker writes (MultiProcessCollector); without it (one process, tests) it is this
process's default registry. Public by default, as Prometheus scrapes; ``SEATLOCK_METRICS_TOKEN``
makes it want ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import glob
import hmac
import os
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.responses import Response

from api.auth import bearer_token
from api.routing import Call, Router
from seatlock.errors import NotAuthenticated
from seatlock.metrics import flush_tallies

router = Router("Metrics")


@router.get("/metrics", errors=(401,))
async def metrics(call: Call) -> Response:
    """Prometheus metrics (text format; a bearer token when SEATLOCK_METRICS_TOKEN is set)."""
    _check_token(call)
    call.services.holds.flush_counts()  # this worker's counts are current; others' <= 1 s old
    flush_tallies()
    # Reading every worker's files takes a few ms: off the event loop.
    body = await asyncio.to_thread(exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def exposition() -> bytes:
    """The metrics in the text format: every worker's when the multi-process directory is set."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    WorkerFiles(registry, path)
    return generate_latest(registry)


class WorkerFiles(MultiProcessCollector):
    """Every worker's files, leaving out those a starting worker has created but not yet sized.

    prometheus-client creates a worker's file, then sizes it: a scrape between the two read an
    empty file and failed (a 500 while the supervisor replaced a dead worker). An empty file holds
    no value yet, so leaving it out loses nothing; once sized, a file never shrinks.
    """

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        super().__init__(registry, path)  # type: ignore[no-untyped-call]
        self._directory = path

    def collect(self) -> Iterable[Metric]:
        return self.merge(list(_sized(glob.glob(os.path.join(self._directory, "*.db")))))  # type: ignore[no-untyped-call,no-any-return]


def _sized(paths: Iterable[str]) -> Iterable[str]:
    for path in paths:
        try:
            if os.stat(path).st_size > 0:
                yield path
        except FileNotFoundError:  # a dead worker's live gauges, forgotten since the glob
            pass


def _check_token(call: Call) -> None:
    wanted = call.services.settings.metrics_token
    if not wanted:
        return
    given = bearer_token(call.scope["headers"]) or ""
    # Constant time: a timing difference must not reveal how much of a guess was right.
    if not hmac.compare_digest(given.encode(), wanted.encode()):
        raise NotAuthenticated("A valid metrics token is required")
