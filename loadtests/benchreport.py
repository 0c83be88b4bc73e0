"""The table of ``seatlock bench``: rows, the Markdown it prints, and a latency plot."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.loadgen import GENERATORS, Sample

nan = float("nan")


@dataclass
class Row:
    name: str
    value: str
    p50: str = ""
    p99: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None  # judged from the row's own figures; None: no target

    @property
    def verdict(self) -> str:
        return "" if self.met is None else ("met" if self.met else "missed")


@dataclass(frozen=True)
class Target:
    """A row's bar: at least ``ratio`` of its ceiling (``of``), a p99 of at most ``p99_ms``."""

    ratio: float | None = None
    p99_ms: float | None = None
    of: str = "HTTP"

    def __str__(self) -> str:
        parts = [] if self.ratio is None else [f">= {self.ratio:.2f} x {self.of}"]
        if self.p99_ms is not None:
            parts.append(f"p99 <= {self.p99_ms:g} ms")
        return ", ".join(parts)

    def met(self, ratio: float, p99_ms: float) -> bool:
        return (self.ratio is None or at_least(ratio, self.ratio)) and (
            self.p99_ms is None or at_most(p99_ms, self.p99_ms)
        )


def at_least(value: float, bound: float) -> bool:
    """``value >= bound``; a figure that was not measured (NaN) misses every target."""
    return value == value and value >= bound


def at_most(value: float, bound: float) -> bool:
    """``value <= bound``; NaN (not measured) and infinity ("never") miss."""
    return value == value and value <= bound


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
    checks: list[Row] = field(default_factory=list)  # the parts' own correctness rows
    plots: dict[str, str] = field(default_factory=dict)  # file suffix -> SVG, e.g. "holds"
    # The versions of the Redis and PostgreSQL the run used (whichever the machine had: the
    # embedded servers prefer binaries on PATH), which move the figures too.
    servers: str = ""

    def correctness(self) -> list[Row]:
        """The rows that must hold whatever the machine: any of them missed fails the run."""
        return [
            check("Double-sold seats", self.double_sold),
            check("Lost bookings (201 not in PostgreSQL)", self.lost),
            check("HTTP 5xx answers", self.server_errors),
            check("Dropped connections (no answer)", self.dropped),
            *self.checks,
        ]

    @property
    def correct(self) -> bool:
        return all(row.met for row in self.correctness())

    @property
    def missed(self) -> list[str]:
        """The target rows whose own figures missed their target."""
        return [row.name for row in self.rows if row.met is False]


def check(name: str, count: int) -> Row:
    """A correctness row: a count that must be 0 (-1: never counted, which fails too)."""
    return Row(name, str(count), target="must be 0", met=count == 0)


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


SERVING = ("seatlock", "Redis", "PostgreSQL")  # whose CPU a cpu_row counts (Sample.cpu_s)
EVERYONE = (*SERVING, GENERATORS)  # every process of a workload (design_rows, process_cpu_note)


def cpu_row(
    name: str, sample: Sample, requests: int, base: Sample, base_what: str, bound: float
) -> Row:
    """The serving processes' CPU per operation of ``sample`` (each ``requests`` HTTP requests,
    such as a won hold and its cancel) against ``base``'s per request (the empty route): met when
    the operation's requests cost each at most ``bound`` times the empty one. A process whose CPU
    was not read counts as not measured, which misses."""
    ours = [per_op(sample, who) for who in SERVING]
    theirs = [per_op(base, who) for who in SERVING]
    ratio = sum(ours) / (requests * sum(theirs)) if sum(theirs) > 0 else nan
    value = (
        " + ".join(f"{who} {us:,.0f}" for who, us in zip(SERVING, ours, strict=True))
        + f" = {sum(ours):,.0f} us; {base_what} {sum(theirs):,.0f} us"
    )
    target = f"<= {bound:.2f} x {base_what}, per request"
    return Row(name, value, ratio=shown(ratio), target=target, met=at_most(ratio, bound))


def design_rows(
    name: str, sample: Sample, requests: float, base: Sample, base_what: str
) -> list[Row]:
    """What the design leaves to win for ``sample``, each operation ``requests`` HTTP requests
    (a won hold and its cancel: 2), against ``base`` (the empty route), from every process's CPU
    per operation (``Sample.cpu_s``). The bench's processes share the cores, so a rate is about
    the cores over the CPU per operation: the base's CPU over the operation's is the ratio the
    CPU allows (shown beside the measured ratio, it checks that model), and the same with
    seatlock's part cut to ``requests`` times the empty route's, Redis, PostgreSQL and the
    generators as measured, is the ratio that no work on seatlock's own code can pass on the
    run's figures; the CPU row's figure likewise. Figures, not targets: they say which bars
    the design can reach."""
    ours = {who: per_op(sample, who) for who in EVERYONE}
    theirs = {who: per_op(base, who) for who in EVERYONE}
    floor = requests * theirs["seatlock"]  # seatlock doing nothing but serve the requests
    stores = ours["Redis"] + ours["PostgreSQL"]
    best = floor + stores + ours[GENERATORS]
    empty = sum(theirs.values())
    allowed, at_best = ratio_of(empty, sum(ours.values())), ratio_of(empty, best)
    serving = sum(theirs[who] for who in SERVING)
    cpu = ratio_of(floor + stores, requests * serving)
    each = f"seatlock {requests:.2f} x {theirs['seatlock']:,.0f} us"
    return [
        Row(
            f"{name}: the ratio its CPU allows, as measured / at best (seatlock's part at"
            f" {base_what}'s)",
            f"all processes {sum(ours.values()):,.0f} us per operation, at best {best:,.0f}"
            f" ({each}, Redis, PostgreSQL and generators as measured); {base_what} {empty:,.0f} us",
            ratio=f"{shown(allowed)} / {shown(at_best)}",
        ),
        Row(
            f"{name}: server CPU per request at best (seatlock's part at {base_what}'s)",
            f"{each} + Redis {ours['Redis']:,.0f} + PostgreSQL {ours['PostgreSQL']:,.0f}"
            f" = {floor + stores:,.0f} us; {base_what} {serving:,.0f} us per request",
            ratio=shown(cpu),
        ),
    ]


def process_cpu_note(samples: dict[str, Sample]) -> str:
    """Every process group's CPU per operation of each workload, in microseconds."""
    parts = [
        f"{what} " + " / ".join(f"{per_op(sample, who):,.0f}" for who in EVERYONE)
        for what, sample in samples.items()
    ]
    return f"CPU per operation (us), {' / '.join(EVERYONE)}: {'; '.join(parts)}"


def ratio_of(over: float, under: float) -> float:
    return over / under if under > 0 else nan


def shown(ratio: float) -> str:
    return f"{ratio:.2f}" if ratio == ratio else "n/a"


def per_op(sample: Sample, who: str) -> float:
    """Microseconds of ``who``'s CPU per operation of the sample (NaN: not measured)."""
    if not sample.ops or who not in sample.cpu_s:
        return nan
    return sample.cpu_s[who] / sample.ops * 1e6


def quantiles(sample: Sample) -> tuple[str, str]:
    return ms(pct(sample.latencies_ms, 0.5)), ms(pct(sample.latencies_ms, 0.99))


def render(report: Report, command: str, setup: str) -> str:
    rows = [*report.rows, *report.correctness()]
    header = ["Workload", "Result", "p50", "p99", "Ratio to ceiling", "Target", "Verdict"]
    lines = [
        f"# seatlock bench, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {machine()}",
        *([f"- servers: {report.servers}"] if report.servers else []),
        f"- command: `{command}`",
        f"- {setup}",
        "- figures are only meaningful on a quiet machine (generators share the cores)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *(table_line([r.name, r.value, r.p50, r.p99, r.ratio, r.target, r.verdict]) for r in rows),
        "",
        *(f"- {note}" for note in report.notes),
        f"- verdict: {verdict(report)}",
    ]
    return "\n".join(lines)


def table_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def verdict(report: Report) -> str:
    """One line: targets met or missed (and which), and whether the books are correct."""
    missed = report.missed
    targets = f"targets missed ({'; '.join(missed)})" if missed else "targets met"
    books = "correctness OK" if report.correct else "correctness FAILED"
    return f"{'missed' if missed or not report.correct else 'met'}: {targets}, {books}"


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


def crowd_svg(
    answers: list[tuple[float, str]], sold: list[tuple[float, int]], seats: int, title: str
) -> str:
    """The release-day crowd over time: definite answers per second (a seat, green; sold out,
    blue) per slice, and the tickets sold so far (red, on its own scale up to ``seats``).
    ``answers`` are (seconds since the crowd started, kind); ``sold`` (seconds, tickets)."""
    width, height, left, bottom = 800, 300, 60, 40
    if not answers:
        return latency_svg([], title)
    span = max(t for t, _ in answers) or 1.0
    slices = 60
    step = span / slices
    counts = {kind: [0] * slices for kind in ("seat", "sold out")}
    for at, kind in answers:
        counts[kind][min(slices - 1, int(at / step))] += 1
    rates = {kind: [n / step for n in series] for kind, series in counts.items()}
    top = max(max(series) for series in rates.values()) * 1.1 or 1.0
    plot_w, plot_h = width - left - 60, height - bottom - 40  # two lines of title on top

    def x(seconds: float) -> float:
        return left + seconds / span * plot_w

    def y(value: float, scale: float) -> float:
        return height - bottom - value / scale * plot_h

    def line(series: list[float]) -> str:
        return " ".join(f"{x((i + 0.5) * step):.1f},{y(v, top):.1f}" for i, v in enumerate(series))

    total, curve = 0, [f"{x(0):.1f},{y(0, seats):.1f}"]
    for at, tickets in sorted(sold):
        total += tickets
        curve.append(f"{x(at):.1f},{y(total, seats):.1f}")
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
            ' font-family="sans-serif" font-size="12">',
            f'<text x="{left}" y="14">{title}</text>',
            f'<text x="{left}" y="30">answers per second, a seat (green) or sold out (blue), per'
            f" slice of {step:.2f} s; tickets sold so far (red, right scale)</text>",
            f'<line x1="{left}" y1="{height - bottom}" x2="{left + plot_w}" y2="{height - bottom}"'
            ' stroke="black"/>',
            f'<line x1="{left}" y1="40" x2="{left}" y2="{height - bottom}" stroke="black"/>',
            f'<line x1="{left + plot_w}" y1="40" x2="{left + plot_w}" y2="{height - bottom}"'
            ' stroke="red"/>',
            f'<text x="5" y="44">{top:,.0f}/s</text><text x="5" y="{height - bottom}">0</text>',
            f'<text x="{left + plot_w + 5}" y="44" fill="red">{seats} seats</text>',
            f'<text x="{left + plot_w - 40}" y="{height - 10}">{span:.1f} s</text>',
            f'<polyline fill="none" stroke="green" points="{line(rates["seat"])}"/>',
            f'<polyline fill="none" stroke="blue" points="{line(rates["sold out"])}"/>',
            f'<polyline fill="none" stroke="red" points="{" ".join(curve)}"/>',
            "</svg>",
        ]
    )
