"""Smoke runs of the Locust scenarios: a few users for a few seconds against the live server.

They check that the scenarios work end to end (setup through the admin API, every request
answered as the contract says, the books checked at the end), not how fast anything is.
"""

from __future__ import annotations

import os
import sys

import pytest

from tests.loadtests.tools import ROOT, run_tool
from tests.support import PASSWORD, Account, LiveServer


async def run_locust(
    scenario: str, server: LiveServer, admin: Account, users: int = 4, **env: str
) -> tuple[int, str]:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtests" / scenario),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        "3s",
        "--stop-timeout",
        "2",
        "--host",
        server.url,
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    environment = {
        **os.environ,
        "SEATLOCK_ADMIN_EMAIL": admin.email,
        "SEATLOCK_ADMIN_PASSWORD": PASSWORD,
        "SEATLOCK_DATABASE_URL": server.settings.database_url,
        **env,
    }
    return await run_tool(*command, env=environment, timeout_s=50)


def summary_count(output: str, method: str, name: str) -> int:
    """How many requests of one name the final Locust summary lists (0 when absent)."""
    for line in output.splitlines():
        parts = line.split()
        if parts[:1] == [method] and " ".join(parts[1:]).startswith(name + " "):
            return int(line.split("|")[0].split()[-2])
    return 0


async def test_release_day(server: LiveServer, admin: Account) -> None:
    code, output = await run_locust("release_day.py", server, admin)
    assert code == 0, output
    assert "BOOKS OK" in output, output
    assert summary_count(output, "POST", "reserve") > 0, output
    assert "lost races: " in output, output
    assert summary_count(output, "GET", "availability") > 0, output
    assert summary_count(output, "WS", "connect") >= 1, output


async def test_browsing_checks_the_books_through_the_admin_api(
    server: LiveServer, admin: Account
) -> None:
    # 10 users: with 4, the ~16 tasks of a 3 s run missed the seat map (weight 5 of 17) about
    # once in 250 runs (seen once); with ~40 tasks, about once in a million.
    code, output = await run_locust(
        "browsing.py", server, admin, users=10, SEATLOCK_DATABASE_URL=""
    )
    assert code == 0, output
    assert "BOOKS OK" in output, output
    assert summary_count(output, "GET", "availability") > 0, output


async def test_watchers(server: LiveServer, admin: Account) -> None:
    code, output = await run_locust("watchers.py", server, admin, users=6)
    assert code == 0, output
    assert "BOOKS OK" in output, output
    assert summary_count(output, "WS", "connect") >= 1, output
    assert summary_count(output, "WS", "update delay") > 0, output
    assert "last-watcher delay over" in output, output


@pytest.mark.parametrize("scenario", ["release_day.py"])
async def test_a_failed_setup_fails_the_run(
    scenario: str, server: LiveServer, admin: Account
) -> None:
    code, output = await run_locust(
        scenario, server, admin, users=1, SEATLOCK_LOAD_SCREENING_ID="987654321"
    )
    assert code == 1, output
    assert "SETUP FAILED" in output and "BOOKS NOT CHECKED" in output, output


async def test_books_check_reports_a_lost_booking(server: LiveServer) -> None:
    """The end-of-run check fails when a ticket the run saw answered 201 is not in PostgreSQL."""
    url = server.settings.database_url
    code = (
        "import loadkit;"
        "loadkit.STATE.booked[987654321] = (1, 1);"
        f"print(loadkit.books_from_postgres({url!r}))"
    )
    status, out = await run_tool(
        sys.executable, "-c", code, cwd=ROOT / "loadtests", env=dict(os.environ), timeout_s=30
    )
    assert status == 0, out
    assert out.strip().splitlines()[-1] == "['lost: 1']", out
