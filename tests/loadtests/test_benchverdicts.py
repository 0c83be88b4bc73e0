"""The bench's verdicts: each target row judged from its own figures, the overall verdict, the
exit code on a correctness failure, the part selector, and the release-day crowd's figures."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from loadtests import bench
from loadtests.benchreport import (
    Report,
    Row,
    Target,
    at_least,
    at_most,
    check,
    cpu_row,
    crowd_svg,
    design_rows,
    process_cpu_note,
    render,
)
from loadtests.crowd import choose, free_seats
from loadtests.crowdbench import (
    answer_times,
    cpu_note,
    crowd_rows,
    sell_out,
    served_in,
    watcher_row,
)
from loadtests.loadgen import Sample

INF, NAN = float("inf"), float("nan")


def test_a_target_is_met_only_by_its_own_figures() -> None:
    target = Target(ratio=0.5, p99_ms=15)
    assert str(target) == ">= 0.50 x HTTP, p99 <= 15 ms"
    assert target.met(0.5, 15.0)
    assert not target.met(0.48, 12.0)  # the ratio missed: not rescued by a good p99
    assert not target.met(0.57, 17.8)  # the p99 missed (bench/results.md of 2026-12-05)
    assert not target.met(NAN, 1.0) and not target.met(0.9, NAN) and not target.met(0.9, INF)
    assert Target(ratio=0.6, of="Redis").met(0.61, INF)  # no p99 bar: any p99
    assert str(Target(p99_ms=250)) == "p99 <= 250 ms"
    assert at_least(5000.0, 5000) and not at_least(4999.0, 5000) and not at_least(NAN, 0)
    assert at_most(0.0, 0) and not at_most(INF, 1e9) and not at_most(NAN, 1e9)


def report_with(*rows: Row) -> Report:
    report = Report(rows=list(rows))
    report.double_sold = report.lost = report.server_errors = report.dropped = 0
    return report


def verdict_line(report: Report) -> str:
    return render(report, "seatlock bench", "setup").splitlines()[-1]


def test_one_missed_target_misses_the_overall_verdict() -> None:
    met = Row("Availability reads", "1 reads/s", target="t", met=True)
    plain = Row("HTTP ceiling", "2 req/s")
    assert verdict_line(report_with(met, plain)) == "- verdict: met: targets met, correctness OK"
    missed = Row("Hold attempts", "1 attempts/s", target="t", met=False)
    report = report_with(met, missed, plain)
    assert report.correct and report.missed == ["Hold attempts"]
    line = verdict_line(report)
    assert line == "- verdict: missed: targets missed (Hold attempts), correctness OK"
    table = render(report, "seatlock bench", "setup")
    assert "| Hold attempts | 1 attempts/s |  |  |  | t | missed |" in table
    assert "| HTTP ceiling | 2 req/s |  |  |  |  |  |" in table
    assert "| Double-sold seats | 0 |  |  |  | must be 0 | met |" in table


def test_every_correctness_row_fails_the_run() -> None:
    for field in ("double_sold", "lost", "server_errors", "dropped"):
        report = report_with()
        setattr(report, field, 1)
        assert not report.correct, field
        assert verdict_line(report).endswith("correctness FAILED")
    report = report_with()
    report.double_sold = -1  # never counted (the run broke before the books were read)
    assert not report.correct
    report = report_with()
    report.checks.append(check("Release-day crowd: users without an answer", 3))
    assert not report.correct
    assert "| Release-day crowd: users without an answer | 3 |" in render(report, "c", "s")


@pytest.mark.parametrize(("failing", "code"), [(False, 0), (True, 1)])
def test_the_exit_code_says_whether_the_books_are_correct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: bool, code: int
) -> None:
    """A missed target exits 0 (it is a figure); a correctness failure exits 1."""
    report = report_with(Row("Hold attempts", "1/s", target="t", met=False))
    report.lost = 1 if failing else 0

    async def scripted_run(self: bench.Bench) -> Report:
        return report

    monkeypatch.setattr(bench.Bench, "run", scripted_run)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "results.md"
    assert bench.run(parser.parse_args(["--quick", "--out", str(out)])) == code
    assert "- verdict: missed: " in out.read_text()


def test_only_picks_parts_in_their_running_order() -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--only", "browsing, crowd"])
    assert bench.config_from_args(args).only == ("crowd", "browsing")
    assert bench.config_from_args(parser.parse_args([])).only == bench.PARTS
    with pytest.raises(SystemExit):
        parser.parse_args(["--only", "crowd,nope"])
    assert bench.Config().repeat == 3 and bench.Config().crowd_users == 20000


def crowd_sample() -> Sample:
    sample = Sample()
    start = 1000.0
    sample.answers = [
        (start + 0.1, start + 0.4, "seat"),
        (start + 0.2, start + 1.5, "seat"),
        (start + 0.3, start + 0.5, "sold out"),
        (start + 0.4, start + 7.0, "sold out"),
        (start + 0.5, start + 9.0, "none"),
    ]
    sample.sold = [(start + 0.4, 2), (start + 1.5, 1)]
    sample.steps = {"availability": [1.0, 2.0, 3.0], "hold": [4.0, 5.0], "book": [6.0, 7.0]}
    return sample


def test_the_crowd_figures() -> None:
    sample = crowd_sample()
    assert answer_times(sample) == pytest.approx([0.3, 1.3, 0.2, 6.6, INF])
    assert sell_out(sample, 1000.0, 3) == "1.50 s (3 of 3 seats)"
    assert sell_out(sample, 1000.0, 4) == "not sold out: 3 of 4 seats"
    served = {"hold": "p50 <= 1.0 ms, p99 <= 5.0 ms", "event loop": "p50 <= 2.5 ms, p99 <= 50.0 ms"}
    rows = {row.name: row for row in crowd_rows(sample, 1000.0, 3, 10.0, served)}
    lag = rows["Release-day crowd: how late the workers' event loops ran what was due"].value
    assert lag == "sampled every 0.25 s in each worker: p50 <= 2.5 ms, p99 <= 50.0 ms"
    answers = rows["Release-day crowd: definite answer (seat or sold out) within 1 s / 5 s"]
    assert answers.value == "40.0% / 60.0% (2 seats, 2 sold out, 1 none)"
    assert answers.p99 == "never"  # the user without an answer
    assert rows["Release-day crowd: 5 users over 10 s, time to sell out"].value.startswith("1.50")
    hold = rows["Release-day crowd, step: hold"].value
    assert hold == "2 requests, 2 won; in the server p50 <= 1.0 ms, p99 <= 5.0 ms"
    assert rows["Release-day crowd, step: book"].p99 == "7.0 ms"


def test_a_change_some_crowd_watcher_missed_is_never_seen() -> None:
    watched = Sample()
    watched.events = {"a": (12.0, 3), "b": (30.0, 2)}
    row = watcher_row(watched, 3)
    assert row.value == "2 changes, 1 not seen by all" and row.p99 == "never"


def test_the_crowd_watchers_row_says_how_late_the_server_wrote_the_changes() -> None:
    watched = Sample()
    watched.events = {"a": (12.0, 3)}
    row = watcher_row(watched, 3, "p50 <= 5.0 ms, p99 <= 25.0 ms")
    assert row.value == (
        "1 changes, 0 not seen by all; written by the server p50 <= 5.0 ms, p99 <= 25.0 ms"
        " after the change"
    )


def test_a_crowd_user_picks_free_neighbours_around_the_middle() -> None:
    raw = (
        b'[{"seat":{"id":1},"status":"sold"},{"seat":{"id":2},"status":"available"},'
        b'{"seat":{"id":3},"status":"reserved"},{"seat":{"id":4},"status":"available"}]'
    )
    assert free_seats(raw) == [2, 4]
    free = list(range(100, 200))
    for _ in range(200):
        seats = choose(free, 4)
        assert len(seats) == 4 and seats == list(range(seats[0], seats[0] + 4))
    assert choose([7, 9], 4) == [7, 9]  # fewer left than wanted: what is left


def test_the_crowd_picture() -> None:
    svg = crowd_svg([(0.2, "seat"), (0.5, "sold out"), (2.0, "sold out")], [(0.2, 2)], 2, "T")
    assert svg.startswith("<svg") and svg.count("<polyline") == 3 and "2 seats" in svg
    assert "no data" in crowd_svg([], [], 2, "T")


def test_the_crowd_note_says_who_used_the_cores() -> None:
    note = cpu_note((100.0, 5.0, 20.0), (110.0, 12.0, 35.0))
    cores = os.cpu_count() or 1
    assert note == (
        f"crowd: CPU over its 10 s ({10 * cores} core-seconds on {cores} cores): seatlock 7 s,"
        " the bench's users, watchers, Redis and PostgreSQL 8 s"
    )


def test_the_servers_own_step_times_come_from_its_histogram_buckets() -> None:
    inf = float("inf")
    before = {"hold": {0.001: 5.0, 0.005: 5.0, 0.025: 5.0, inf: 5.0}}
    after = {
        "hold": {0.001: 55.0, 0.005: 104.0, 0.025: 105.0, inf: 105.0},
        "book": {0.001: 0.0, 0.005: 0.0, 0.025: 0.0, inf: 3.0},
        "availability": {0.001: 0.0, inf: 0.0},  # none in between: no figure
    }
    assert served_in(before, after) == {
        "hold": "p50 <= 1.0 ms, p99 <= 5.0 ms",  # 50 of 100 within 1 ms, 99 within 5 ms
        "book": "p50 <= +inf, p99 <= +inf",
    }


def test_the_cpu_per_won_hold_is_judged_per_request_against_the_empty_route() -> None:
    """A won hold is two requests (the hold and its cancel): each may cost the serving processes
    at most twice an empty request, Redis and PostgreSQL included."""
    live = Sample(ops=10_000, cpu_s={"seatlock": 0.37, "Redis": 0.0, "PostgreSQL": 0.0})
    costly = Sample(ops=1_000, cpu_s={"seatlock": 0.224, "Redis": 0.074, "PostgreSQL": 0.032})
    row = cpu_row("CPU", costly, 2, live, "GET /health/live", 2.0)
    assert row.value == ("seatlock 224 + Redis 74 + PostgreSQL 32 = 330 us; GET /health/live 37 us")
    assert (row.ratio, row.target, row.met) == (
        "4.46",
        "<= 2.00 x GET /health/live, per request",
        False,
    )
    cheap = Sample(ops=1_000, cpu_s={"seatlock": 0.1, "Redis": 0.03, "PostgreSQL": 0.01})
    assert cpu_row("CPU", cheap, 2, live, "GET /health/live", 2.0).met is True  # 1.89
    unread = Sample(ops=1_000, cpu_s={"seatlock": 0.1, "PostgreSQL": 0.01})  # no Redis found
    row = cpu_row("CPU", unread, 2, live, "GET /health/live", 2.0)
    assert (row.ratio, row.met) == ("n/a", False)
    assert cpu_row("CPU", cheap, 2, Sample(), "GET /health/live", 2.0).met is False


def test_the_design_rows_bound_what_work_on_seatlock_alone_can_reach() -> None:
    """From every process's CPU: the ratio the measured CPU allows, and the best ratio (and CPU
    per request) if seatlock spent no more on the hold and its cancel than on empty requests,
    the rest as measured (figures close to bench/results.md of 2026-12-06)."""
    cpu = {"seatlock": 0.40, "Redis": 0.0, "PostgreSQL": 0.0, "generators": 0.14}
    live = Sample(ops=10_000, cpu_s=cpu)  # 40 + 0 + 0 + 14 = 54 us a request
    cpu = {"seatlock": 0.26, "Redis": 0.07, "PostgreSQL": 0.03, "generators": 0.05}
    won = Sample(ops=1_000, cpu_s=cpu)  # 260 + 70 + 30 + 50 = 410 us a hold and its cancel
    rate, server = design_rows("Won holds", won, 2, live, "GET /health/live")
    assert rate.ratio == "0.13 / 0.23"  # 54 / 410; 54 / (2 x 40 + 70 + 30 + 50)
    assert rate.value == (
        "all processes 410 us per operation, at best 230 (seatlock 2.00 x 40 us, Redis,"
        " PostgreSQL and generators as measured); GET /health/live 54 us"
    )
    assert server.ratio == "2.25"  # (2 x 40 + 70 + 30) / (2 x 40)
    assert server.value == (
        "seatlock 2.00 x 40 us + Redis 70 + PostgreSQL 30 = 180 us; GET /health/live 40 us"
        " per request"
    )
    assert rate.met is None and server.met is None  # figures, not targets
    unread = Sample(ops=1_000, cpu_s={"seatlock": 0.26, "Redis": 0.07, "PostgreSQL": 0.03})
    assert design_rows("Won holds", unread, 2, live, "x")[0].ratio == "n/a / n/a"
    note = process_cpu_note({"GET": live, "won": won})
    assert note == (
        "CPU per operation (us), seatlock / Redis / PostgreSQL / generators:"
        " GET 40 / 0 / 0 / 14; won 260 / 70 / 30 / 50"
    )
