"""The bench's catalog browsing: the movies list, one day's showtimes and a full-text search.

The list and the showtimes are read as a browser reads a page it already holds: each request
carries the ETag of the last answer (If-None-Match), and an unchanged page is a 304. The search
asks for one of many words against ``--browse-movies`` seeded movies (20,000), without
If-None-Match (the server's answer cache still answers a word asked again within its TTL). The
three and the HTTP ceiling take turns like the hold workloads (``Bench.rotation``), so each ratio
is to a ceiling measured over the same minute.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from loadtests.benchreport import Row, at_least, quantiles, rate
from loadtests.benchseed import WORDS, seed_movies
from loadtests.loadgen import API, Sample

if TYPE_CHECKING:
    from loadtests.bench import Bench

MIN_RATIO = 0.3  # list and showtimes, with their caching: at least this share of the ceiling


async def browsing_part(bench: Bench) -> None:
    await seed_movies(bench.database_url, bench.config.browse_movies)
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date()
    workloads: list[tuple[str, dict[str, Any]]] = [
        ("get", {"path": "/health/live"}),
        ("browse", {"paths": [f"{API}/movies/?limit=20"], "conditional": True}),
        ("browse", {"paths": [f"{API}/showtimes/?date={day}"], "conditional": True}),
        ("browse", {"paths": [f"{API}/movies/search?q={word}" for word in WORDS]}),
    ]
    seconds = bench.config.duration / 2
    live, movies, showtimes, search = await bench.rotation(
        "browsing turn by turn, HTTP ceiling / movies list / showtimes / search", workloads, seconds
    )
    ceiling = rate(live, seconds)
    rows = [
        Row(
            "HTTP ceiling, browsing turns",
            f"{ceiling:,.0f} req/s",
            *quantiles(live),
            "1.00 (ceiling)",
        ),
        page_row("Catalog: movies list, revalidated (If-None-Match)", movies, ceiling, seconds),
        page_row("Catalog: one day's showtimes, revalidated", showtimes, ceiling, seconds),
    ]
    per_s = rate(search, seconds)
    name = f"Catalog: full-text search, {bench.config.browse_movies:,} movies"
    ratio = f"{per_s / ceiling:.2f}" if ceiling > 0 else "n/a"
    rows.append(Row(name, f"{per_s:,.0f} searches/s", *quantiles(search), ratio))
    bench.report.rows += rows


def page_row(name: str, sample: Sample, ceiling: float, seconds: float) -> Row:
    """A cached page's row: reads/s (the share answered 304), judged >= MIN_RATIO x HTTP."""
    per_s = rate(sample, seconds)
    ratio = per_s / ceiling if ceiling > 0 else float("nan")
    unchanged = sample.statuses.get(304, 0) / max(1, sample.ops)
    return Row(
        name,
        f"{per_s:,.0f} reads/s ({unchanged:.0%} 304)",
        *quantiles(sample),
        f"{ratio:.2f}",
        f">= {MIN_RATIO} x HTTP",
        at_least(ratio, MIN_RATIO),
    )
