"""The checker on tiny fake logs: it passes a clean run and names each kind of failure."""

from __future__ import annotations

import pytest

from tests.faults.checker import Exchange, Ticket, check

pytestmark = pytest.mark.faults

BOOK = "/api/v1/tickets/book-from-reservation"
BODY = {"screening_id": 7, "seat_ids": [1, 2], "payment_id": "pay_1"}
ANSWER = [{"id": 10, "seat_id": 1, "user_id": 3}, {"id": 11, "seat_id": 2, "user_id": 3}]


def booked(status: int | None = 201, answer: object = ANSWER, **extra: str) -> Exchange:
    return Exchange(3, "POST", BOOK, BODY, status, answer, **extra)


def tickets(*statuses: str) -> list[Ticket]:
    return [Ticket(10 + n, 3, 7, 1 + n, status) for n, status in enumerate(statuses)]


def test_a_clean_run_passes_and_counts() -> None:
    log = [
        Exchange(3, "GET", "/api/v1/screenings/7/available-seats", None, 200, []),
        booked(503, {"detail": "down"}, retry_after="1"),
        booked(None, None, error="ConnectError()"),
        booked(),
        booked(),  # an idempotent replay: the same tickets
    ]
    report = check(log, tickets("confirmed", "confirmed"), {7: {1, 2}})
    assert report.ok, report.problems
    assert (report.requests, report.acknowledged, report.unavailable, report.unreachable) == (
        5,
        2,
        1,
        1,
    )
    assert "lost 0, double 0, 5xx 0" in report.figures()


def test_an_acknowledged_booking_missing_from_postgres_is_lost() -> None:
    report = check([booked()], tickets("confirmed"), {7: {1}})
    assert not report.ok and report.lost == 1


def test_an_acknowledged_ticket_on_another_seat_or_user_is_lost() -> None:
    report = check([booked()], [Ticket(10, 3, 7, 1, "confirmed"), Ticket(11, 4, 7, 2, "pending")],
                   {7: {1, 2}})  # fmt: skip
    assert not report.ok and report.lost == 1


def test_a_cancelled_ticket_is_lost_unless_its_owner_cancelled_it() -> None:
    assert check([booked()], tickets("confirmed", "cancelled"), {7: {1}}).lost == 1
    cancel = Exchange(3, "DELETE", "/api/v1/tickets/11", None, 503, retry_after="1")
    assert check([booked(), cancel], tickets("confirmed", "cancelled"), {7: {1}}).ok


def test_two_active_tickets_on_one_seat_are_double() -> None:
    rows = [*tickets("confirmed", "confirmed"), Ticket(12, 4, 7, 2, "pending")]
    report = check([booked()], rows, {7: {1, 2}})
    assert not report.ok and report.double == 1


def test_a_map_that_differs_from_postgres_fails() -> None:
    report = check([booked()], tickets("confirmed", "confirmed"), {7: {1, 3}})
    assert not report.ok and report.map_mismatches == 2


@pytest.mark.parametrize(
    "answer",
    [booked(500, {"detail": "Internal server error"}), booked(503, {"detail": "down"}),
     booked(502, None)],
)  # fmt: skip
def test_a_server_error_fails_but_503_with_retry_after_does_not(answer: Exchange) -> None:
    report = check([answer], [], {7: set()})
    assert not report.ok and report.server_errors == 1
