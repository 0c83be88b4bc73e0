"""The table of ``seatlock bench``: rows, the Markdown it prints, and a latency plot."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.loadgen import Sample


@dataclass
class Row:
    name: str
    value: str
    p50: str = ""
    p99: str = ""
    ratio: str = ""
    target: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    tickets: list[tuple[int, int, int]] = field(default_factory=list)
    server_errors: int = 0
    dropped: int = 0
    double_sold: int = -1
    lost: int = -1
    notes: list[str] = field(default_factory=list)
    hold_timeline: list[tuple[float, float]] = field(default_factory=list)  # (finished, ms)

    @property
    def correct(self) -> bool:
        failures = (self.double_sold, self.lost, self.server_errors, self.dropped)
        return failures == (0, 0, 0, 0)


def rate(sample: Sample, duration: float) -> float:
    return sample.ops / duration if duration else 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float) -> str:
    if value != value:
        return "n/a"
    return "never" if value == float("inf") else f"{value:.1f} ms"


def quantiles(sample: Sample) -> tuple[str, str]:
    return ms(pct(sample.latencies_ms, 0.5)), ms(pct(sample.latencies_ms, 0.99))


def render(report: Report, command: str, setup: str) -> str:
    rows = [
        *report.rows,
        Row("Double-sold seats", str(report.double_sold), target="must be 0"),
        Row("Lost bookings (201 not in PostgreSQL)", str(report.lost), target="must be 0"),
        Row("HTTP 5xx answers", str(report.server_errors), target="must be 0"),
        Row("Dropped connections (no answer)", str(report.dropped), target="must be 0"),
    ]
    header = ["Workload", "Result", "p50", "p99", "Ratio to ceiling", "Target"]
    lines = [
        f"# seatlock bench, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {machine()}",
        f"- command: `{command}`",
        f"- {setup}",
        "- figures are only meaningful on a quiet machine (generators share the cores)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *(
            "| " + " | ".join([r.name, r.value, r.p50, r.p99, r.ratio, r.target]) + " |"
            for r in rows
        ),
        "",
        *(f"- {note}" for note in report.notes),
        f"- verdict: {'OK' if report.correct else 'FAILED'}",
    ]
    return "\n".join(lines)


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model or platform.processor() or 'unknown CPU'}), " + (
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def latency_svg(timeline: list[tuple[float, float]], title: str, width: int = 800) -> str:
    """p50 and p99 latency per time slice, as a small dependency-free SVG line chart."""
    height, left, bottom = 300, 60, 40
    if not timeline:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40">' + (
            f'<text x="10" y="25">{title}: no data</text></svg>'
        )
    start = min(t for t, _ in timeline)
    span = max(t for t, _ in timeline) - start or 1.0
    slices: dict[int, list[float]] = {}
    for at, latency in timeline:
        slices.setdefault(int((at - start) / span * 59.999), []).append(latency)
    p50 = {i: pct(v, 0.5) for i, v in slices.items()}
    p99 = {i: pct(v, 0.99) for i, v in slices.items()}
    top = max(p99.values()) * 1.1 or 1.0

    def points(series: dict[int, float]) -> str:
        return " ".join(
            f"{left + i * (width - left - 10) / 59:.1f},"
            f"{height - bottom - v / top * (height - bottom - 20):.1f}"
            for i, v in sorted(series.items())
        )

    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
            ' font-family="sans-serif" font-size="12">',
            f'<text x="{left}" y="14">{title}: p50 (blue), p99 (red) per slice of {span / 60:.2f} s'
            "</text>",
            f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}"'
            ' stroke="black"/>',
            f'<line x1="{left}" y1="20" x2="{left}" y2="{height - bottom}" stroke="black"/>',
            f'<text x="5" y="24">{top:.0f} ms</text><text x="5" y="{height - bottom}">0 ms</text>',
            f'<text x="{width - 60}" y="{height - 10}">{span:.1f} s</text>',
            f'<polyline fill="none" stroke="blue" points="{points(p50)}"/>',
            f'<polyline fill="none" stroke="red" points="{points(p99)}"/>',
            "</svg>",
        ]
    )
