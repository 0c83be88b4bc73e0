"""The fault suite's checker: what a logged stream of requests and PostgreSQL must agree on.

A plain function over plain data, so it is unit-tested on tiny fake logs (test_checker.py) and
proven able to fail by the sabotaged control run (test_faults.py):

- every booking answered 201 is in PostgreSQL with exactly those tickets (lost otherwise), still
  active unless its owner asked to cancel one of them;
- no (screening, seat) has two active tickets (double);
- the seat map every client sees shows a seat booked exactly where PostgreSQL has an active ticket;
- no answer is a 5xx other than 503 with Retry-After (the outage answer); a request that could
  not reach a server (a killed worker, a connection cut) is counted, not a failure.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

BOOKING_PATHS = ("/api/v1/tickets/book", "/api/v1/tickets/book-from-reservation")
TICKET_PREFIX = "/api/v1/tickets/"
ACTIVE = ("pending", "confirmed")


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and its answer; ``status`` None when no answer came (``error`` says why)."""

    user_id: int
    method: str
    path: str
    body: Any
    status: int | None
    answer: Any = None
    retry_after: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Ticket:
    id: int
    user_id: int
    screening_id: int
    seat_id: int
    status: str


@dataclass(slots=True)
class Report:
    requests: int = 0
    acknowledged: int = 0  # bookings answered 201
    lost: int = 0  # acknowledged tickets PostgreSQL does not have as answered
    double: int = 0  # seats with two active tickets
    server_errors: int = 0  # 5xx other than 503 with Retry-After
    unavailable: int = 0  # 503 with Retry-After
    unreachable: int = 0  # no answer at all
    map_mismatches: int = 0  # seats the map shows wrongly
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def figures(self) -> str:
        return (
            f"{self.requests} requests, {self.acknowledged} bookings acknowledged (201),"
            f" lost {self.lost}, double {self.double}, 5xx {self.server_errors},"
            f" map wrong {self.map_mismatches}; 503 {self.unavailable},"
            f" unreachable {self.unreachable}"
        )


def check(log: list[Exchange], tickets: list[Ticket], seat_maps: dict[int, set[int]]) -> Report:
    """Judge a run: ``tickets`` are PostgreSQL's rows of the run's screenings, ``seat_maps`` the
    seats each of those screenings' map shows booked, read after the reconciler's period."""
    report = Report(requests=len(log))
    _check_answers(log, report)
    _check_acknowledged(log, {t.id: t for t in tickets}, report)
    _check_double(tickets, report)
    _check_maps(tickets, seat_maps, report)
    return report


def _check_answers(log: list[Exchange], report: Report) -> None:
    for x in log:
        if x.status is None:
            report.unreachable += 1
        elif x.status == 503 and x.retry_after:
            report.unavailable += 1
        elif x.status >= 500:
            report.server_errors += 1
            report.problems.append(f"{x.status} on {x.method} {x.path}: {x.answer!r}")


def _check_acknowledged(log: list[Exchange], rows: dict[int, Ticket], report: Report) -> None:
    # A ticket its owner tried to cancel may be cancelled whatever the answer was (a 503 may
    # come after the cancellation committed).
    cancelled = {_ticket_id(x.path) for x in log if x.method == "DELETE"}
    for x in log:
        if x.method != "POST" or x.path not in BOOKING_PATHS or x.status != 201:
            continue
        report.acknowledged += 1
        for answered in x.answer:
            row = rows.get(answered["id"])
            expected = (x.user_id, x.body["screening_id"], answered["seat_id"])
            if row is None or (row.user_id, row.screening_id, row.seat_id) != expected:
                report.lost += 1
                report.problems.append(f"acknowledged ticket {answered} not in PostgreSQL: {row}")
            elif row.status not in ACTIVE and row.id not in cancelled:
                report.lost += 1
                report.problems.append(f"acknowledged ticket {row} no longer active")


def _ticket_id(path: str) -> int | None:
    tail = path.removeprefix(TICKET_PREFIX)
    return int(tail) if path.startswith(TICKET_PREFIX) and tail.isdecimal() else None


def _check_double(tickets: list[Ticket], report: Report) -> None:
    seats = Counter((t.screening_id, t.seat_id) for t in tickets if t.status in ACTIVE)
    for seat, count in seats.items():
        if count > 1:
            report.double += 1
            report.problems.append(f"seat {seat} has {count} active tickets")


def _check_maps(tickets: list[Ticket], seat_maps: dict[int, set[int]], report: Report) -> None:
    for screening_id, shown in seat_maps.items():
        sold = {t.seat_id for t in tickets if t.screening_id == screening_id and t.status in ACTIVE}
        wrong = shown ^ sold
        if wrong:
            report.map_mismatches += len(wrong)
            report.problems.append(
                f"screening {screening_id}: map shows booked {sorted(shown - sold)} not sold,"
                f" and not booked {sorted(sold - shown)} sold"
            )
