"""Shared pieces of the Locust scenarios: configuration, setup, accounts, WebSockets, the books.

Configuration (environment):
  SEATLOCK_ADMIN_EMAIL / SEATLOCK_ADMIN_PASSWORD  an admin account; the setup step creates a
      cinema, a 500-seat room, a movie and a hot screening through the admin API with it.
  SEATLOCK_LOAD_SCREENING_ID  use this existing screening instead (no admin needed to run).
  SEATLOCK_DATABASE_URL  PostgreSQL of the server under test: the end-of-run check of the books
      reads it (psql); without it the admin API's ticket list is used.
  SEATLOCK_LOAD_WS=0  release day without a WebSocket per user.
  SEATLOCK_LOAD_CHANGES_PER_S  seat changes per second made while watchers watch (default 10).

Setup and the check run in each process that runs users (``events.test_start``/``quitting``);
distributed (--master/--worker) runs should pass SEATLOCK_LOAD_SCREENING_ID so every worker
races on the same screening (each worker then checks the tickets it saw).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import locust  # noqa: F401  (first: gevent patches ssl before requests imports it)
import requests
import websocket
from locust.env import Environment
from locust.runners import MasterRunner

logger = logging.getLogger("loadtests")

PASSWORD = "Load-test-pass1!"
API = "/api/v1"
ROWS = [chr(ord("A") + i) for i in range(20)]
SEATS_PER_ROW = 25  # 20 x 25 = the 500-seat hot room
ACTIVE = ("pending", "confirmed")
PATIENCE_S = 120  # how long a simulated user keeps retrying a 503 to sign up or in


@dataclass
class Seat:
    id: int
    row: str
    number: int


@dataclass
class RunState:
    """What the setup made and what the run saw; one per Locust process."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    ready: bool = False
    error: str = ""
    screening_id: int = 0
    seats: list[Seat] = field(default_factory=list)
    admin_token: str = ""
    booked: dict[int, tuple[int, int]] = field(default_factory=dict)  # ticket -> (screening, seat)
    last_watcher_ms: dict[str, float] = field(default_factory=dict)  # event key -> worst delay
    reserve_attempts: int = 0
    lost_races: int = 0
    master: bool = False  # a --master process runs no users: nothing to set up or check


STATE = RunState()


def fail_setup(environment: Environment, message: str) -> None:
    STATE.error = message
    environment.process_exit_code = 1
    logger.error("SETUP FAILED: %s", message)


def expect(response: requests.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise RuntimeError(f"{what}: expected {status}, got {response.status_code} {response.text}")
    return response.json() if response.content else None


def post_patiently(url: str, body: dict[str, Any]) -> requests.Response:
    """POST, and again after each 503's Retry-After for up to PATIENCE_S, as a browser's client
    does: a crowd signing in meets a full password hashing lane (seatlock/accounts/passwords.py)."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        response = requests.post(url, json=body)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(int(response.headers.get("retry-after", "1")))  # gevent's, under Locust


def login(host: str, email: str, password: str) -> str:
    r = post_patiently(f"{host}{API}/auth/login", {"email": email, "password": password})
    return str(expect(r, 200, f"login {email}")["access_token"])


def register_and_login(host: str, label: str) -> tuple[int, str]:
    """A fresh account for one simulated user: (user id, access token)."""
    email = f"load-{STATE.run_id}-{label}@example.com"
    body = {"email": email, "password": PASSWORD, "full_name": f"Load {label}"}
    user = expect(post_patiently(f"{host}{API}/auth/register", body), 201, "register")
    return int(user["id"]), login(host, email, PASSWORD)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def prepare(environment: Environment) -> None:
    """``events.test_start``: find or create the hot screening and learn its seats."""
    if isinstance(environment.runner, MasterRunner):
        STATE.master = True
        return
    host = (environment.host or "").rstrip("/")
    try:
        admin_email = os.environ.get("SEATLOCK_ADMIN_EMAIL", "")
        if admin_email:
            STATE.admin_token = login(host, admin_email, os.environ["SEATLOCK_ADMIN_PASSWORD"])
        given = os.environ.get("SEATLOCK_LOAD_SCREENING_ID", "")
        if given:
            STATE.screening_id = int(given)
        elif STATE.admin_token:
            STATE.screening_id = create_hot_screening(host, STATE.admin_token)
        else:
            raise RuntimeError("set SEATLOCK_ADMIN_EMAIL/PASSWORD or SEATLOCK_LOAD_SCREENING_ID")
        STATE.seats = read_seats(host, STATE.screening_id)
        STATE.ready = True
        logger.info(
            "run %s: screening %d, %d seats", STATE.run_id, STATE.screening_id, len(STATE.seats)
        )
    except (RuntimeError, requests.RequestException, KeyError, ValueError) as exc:
        fail_setup(environment, str(exc))


def create_hot_screening(host: str, token: str) -> int:
    """A cinema, a 500-seat room, a movie and a screening tomorrow, through the admin API."""
    h = bearer(token)

    def post(path: str, body: dict[str, Any]) -> Any:
        return expect(requests.post(f"{host}{API}{path}", json=body, headers=h), 201, path)

    tag = STATE.run_id
    cinema = post(
        "/cinemas/",
        {
            "name": f"Load Cinema {tag}",
            "city": "Loadville",
            "address": "1 Release St",
            "amenities": ["imax"],
        },
    )
    room = post(f"/cinemas/{cinema['id']}/rooms/", {"name": f"Hall {tag}"})
    post(f"/rooms/{room['id']}/seats/bulk", {"rows": ROWS, "seats_per_row": SEATS_PER_ROW})
    movie = post(
        "/movies/",
        {
            "title": f"Release Day {tag}",
            "duration_minutes": 150,
            "genre": "Action",
            "description": "The hit film",
        },
    )
    starts = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
    screening = post(
        "/screenings/",
        {
            "movie_id": movie["id"],
            "room_id": room["id"],
            "starts_at": starts.isoformat(),
            "price": 12.5,
        },
    )
    return int(screening["id"])


def availability_path(screening_id: int) -> str:
    return f"{API}/seat-reservations/screening/{screening_id}/availability"


def read_seats(host: str, screening_id: int) -> list[Seat]:
    seats = expect(requests.get(host + availability_path(screening_id)), 200, "availability")
    return [Seat(s["seat"]["id"], s["seat"]["row_label"], s["seat"]["seat_number"]) for s in seats]


def best_seats(available: list[Seat], count: int) -> list[Seat]:
    """Up to ``count`` neighbouring seats in one row, near the middle of the room (contended)."""
    if not available:
        return []
    rows = sorted({s.row for s in available})
    middle_row = rows[len(rows) * 2 // 3]  # a bit behind the centre: the seats everybody wants
    numbers = [s.number for s in available]
    centre = (min(numbers) + max(numbers)) / 2

    def score(s: Seat) -> float:
        return abs(rows.index(s.row) - rows.index(middle_row)) * 2 + abs(s.number - centre)

    anchor = random.choice(sorted(available, key=score)[:24])
    row = sorted(
        (s for s in available if s.row == anchor.row), key=lambda s: abs(s.number - anchor.number)
    )
    return row[:count]


def ws_url(host: str, screening_id: int, token: str = "") -> str:
    base = host.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    query = f"?token={token}" if token else ""
    return f"{base}/ws/screenings/{screening_id}{query}"


def open_ws(host: str, screening_id: int, token: str = "") -> websocket.WebSocket:
    """Connect and read ``connection_confirmed``; raises if the server says anything else."""
    ws = websocket.create_connection(ws_url(host, screening_id, token), timeout=15)
    first = ws.recv()
    if '"connection_confirmed"' not in str(first):
        ws.close()
        raise RuntimeError(f"expected connection_confirmed, got {first!r}")
    ws.settimeout(None)
    return ws


def parse_ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def update_delays(message: dict[str, Any], received: float) -> list[tuple[str, float]]:
    """(event key, delay ms) of a seat_update/bulk_seat_update: receive time - server timestamp."""
    kind = message.get("type")
    if kind not in ("seat_update", "bulk_seat_update") or "timestamp" not in message:
        return []
    delay = (received - parse_ts(message["timestamp"])) * 1000
    seats = [message] if kind == "seat_update" else message.get("updates", [])
    key = message["timestamp"] + ":" + ",".join(f"{u['seat_id']}{u['status']}" for u in seats)
    return [(key, delay)]


def note_delivery(key: str, delay_ms: float) -> None:
    if delay_ms > STATE.last_watcher_ms.get(key, float("-inf")):
        STATE.last_watcher_ms[key] = delay_ms


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report_last_watcher() -> None:
    worst = list(STATE.last_watcher_ms.values())
    print(
        f"last-watcher delay over {len(worst)} events: p50 {percentile(worst, 0.5):.1f} ms,"
        f" p99 {percentile(worst, 0.99):.1f} ms"
    )


# --- The books: checked once the run is over. ---


def check_books(environment: Environment) -> None:
    """``events.quitting``: no seat sold twice, never more than capacity, every 201 committed."""
    if STATE.master:
        return
    if STATE.error:
        print(f"BOOKS NOT CHECKED: setup failed: {STATE.error}")
        environment.process_exit_code = 1
        return
    try:
        if os.environ.get("SEATLOCK_DATABASE_URL"):
            problems = books_from_postgres(os.environ["SEATLOCK_DATABASE_URL"])
        elif STATE.admin_token:
            problems = books_from_admin_api((environment.host or "").rstrip("/"))
        else:
            problems = ["no SEATLOCK_DATABASE_URL and no admin account to read the tickets"]
    except (RuntimeError, requests.RequestException, OSError) as exc:
        problems = [f"could not read the books: {exc}"]
    verdict = "OK" if not problems else "FAILED: " + "; ".join(problems)
    print(f"BOOKS {verdict} ({len(STATE.booked)} tickets booked by this run)")
    if problems:
        environment.process_exit_code = 1


def books_from_postgres(url: str) -> list[str]:
    ids = ",".join(str(t) for t in STATE.booked)
    screenings = ",".join(str(s) for s, _ in STATE.booked.values())
    seats = ",".join(str(seat) for _, seat in STATE.booked.values())
    active = "('pending', 'confirmed')"
    sql = f"""
SELECT 'double-sold', count(*) FROM (SELECT 1 FROM tickets WHERE status IN {active}
    GROUP BY screening_id, seat_id HAVING count(*) > 1) d;
SELECT 'over-capacity', count(*) FROM (SELECT t.screening_id FROM tickets t
    JOIN screenings s ON s.id = t.screening_id WHERE t.status IN {active}
    GROUP BY t.screening_id, s.room_id
    HAVING count(*) > (SELECT count(*) FROM seats WHERE room_id = s.room_id)) o;
SELECT 'lost', count(*) FROM unnest('{{{ids}}}'::bigint[], '{{{screenings}}}'::bigint[],
    '{{{seats}}}'::bigint[]) AS b(id, screening_id, seat_id)
    WHERE NOT EXISTS (SELECT 1 FROM tickets t WHERE t.id = b.id
        AND t.screening_id = b.screening_id AND t.seat_id = b.seat_id AND t.status IN {active});
"""
    out = subprocess.run(
        ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-"],
        input=sql,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    counts = dict(line.split("|") for line in out.stdout.split())
    return [f"{name}: {n}" for name, n in counts.items() if n != "0"]


def books_from_admin_api(host: str) -> list[str]:
    tickets = list_tickets(host, STATE.screening_id)
    active = [t for t in tickets if t["status"] in ACTIVE]
    seats = [t["seat_id"] for t in active]
    problems = []
    if len(seats) != len(set(seats)):
        problems.append(f"double-sold: {len(seats) - len(set(seats))}")
    if len(seats) > len(STATE.seats):
        problems.append(f"over-capacity: {len(seats)} > {len(STATE.seats)}")
    have = {(t["id"], t["screening_id"], t["seat_id"]) for t in active}
    lost = [i for i, (s, seat) in STATE.booked.items() if (i, s, seat) not in have]
    if lost:
        problems.append(f"lost: {len(lost)}")
    return problems


def list_tickets(host: str, screening_id: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        r = requests.get(
            f"{host}{API}/tickets/",
            headers=bearer(STATE.admin_token),
            params={"screening_id": screening_id, "skip": len(found), "limit": 200},
        )
        page = expect(r, 200, "admin ticket list")
        found.extend(page)
        if len(page) < 200:
            return found
