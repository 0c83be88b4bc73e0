"""Release day: many users open one hot screening and race for its best seats.

Each user registers and signs in, opens the seat map (availability + a WebSocket), grabs 1-6
neighbouring seats near the middle, then books them (book-from-reservation with a payment_id,
sometimes replayed to check idempotency), cancels them, or lets the hold lapse. A 409 on reserve is
a lost race, not an error. The books are checked when the run ends (see loadkit.check_books).

    .venv/bin/locust -f loadtests/release_day.py --headless -u 500 -r 50 -t 2m \
        --host http://127.0.0.1:8000
"""

from __future__ import annotations

import os
import random
import time
import uuid
from typing import Any

import gevent
import loadkit
import websocket
from loadkit import API, STATE, Seat
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopUser


@events.test_start.add_listener
def on_test_start(environment: Environment, **_: Any) -> None:
    loadkit.prepare(environment)


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:
    print(f"lost races: {STATE.lost_races} of {STATE.reserve_attempts} reserve attempts (409)")
    loadkit.check_books(environment)


class Fan(FastHttpUser):
    wait_time = between(0.2, 1.5)

    def on_start(self) -> None:
        if not STATE.ready:
            raise StopUser()
        self.sid = STATE.screening_id
        self.ws: websocket.WebSocket | None = None  # before sign_up: on_stop runs if it stops
        self.reader: gevent.Greenlet | None = None
        self.token = self.sign_up()
        self.headers = loadkit.bearer(self.token)
        self.idle_until = 0.0
        if os.environ.get("SEATLOCK_LOAD_WS", "1") != "0":
            self.watch()

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.reader is not None:
            self.reader.kill(block=False)

    def sign_up(self) -> str:
        email = f"fan-{STATE.run_id}-{uuid.uuid4().hex[:12]}@example.com"
        body = {"email": email, "password": loadkit.PASSWORD, "full_name": "Release Fan"}
        self.patiently(f"{API}/auth/register", body, "register")
        login = {"email": email, "password": loadkit.PASSWORD}
        status, answer = self.patiently(f"{API}/auth/login", login, "login")
        if status != 200:
            raise StopUser()
        return str(answer["access_token"])

    def patiently(self, path: str, body: dict[str, Any], name: str) -> tuple[int, Any]:
        """POST as a browser's client does: a 503 (the password hashing lane is full while a
        crowd signs up) is asked again after its Retry-After, for up to loadkit.PATIENCE_S;
        those answers count as successes of "<name> (503, retried)"."""
        deadline = time.monotonic() + loadkit.PATIENCE_S
        while True:
            with self.client.post(path, json=body, name=name, catch_response=True) as r:
                if r.status_code != 503 or time.monotonic() > deadline:
                    return r.status_code, r.json() if r.status_code < 300 else None
                r.request_meta["name"] = f"{name} (503, retried)"
                r.success()
                wait = int(r.headers.get("retry-after", "1"))
            gevent.sleep(wait)

    def watch(self) -> None:
        started = time.perf_counter()
        error: Exception | None = None
        try:
            self.ws = loadkit.open_ws(self.host, self.sid, self.token)
            self.reader = gevent.spawn(self.drain, self.ws)
        except (OSError, RuntimeError, websocket.WebSocketException) as exc:
            error = exc
        events.request.fire(
            request_type="WS",
            name="connect",
            response_length=0,
            response_time=(time.perf_counter() - started) * 1000,
            exception=error,
            context={},
        )

    @staticmethod
    def drain(ws: websocket.WebSocket) -> None:
        """Read the seat updates a real seat map would apply (and drop them)."""
        try:
            while ws.recv():
                pass
        except (OSError, websocket.WebSocketException):
            return

    @task
    def race(self) -> None:
        available = self.available_seats()
        if time.time() < self.idle_until or not available:
            return  # waiting for the abandoned hold to lapse, or sold out
        wanted = [s.id for s in loadkit.best_seats(available, random.randint(1, 6))]
        held = self.reserve(wanted)
        if not held:
            return
        choice = random.random()
        if choice < 0.55:
            self.book(wanted)
        elif choice < 0.85:
            self.cancel(wanted)
        else:
            self.idle_until = held  # let it expire; the per-user seat cap stays respected

    def available_seats(self) -> list[Seat]:
        path = loadkit.availability_path(self.sid)
        with self.client.get(
            path, headers=self.headers, name="availability", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"availability {r.status_code}")
                return []
            return [
                Seat(s["seat"]["id"], s["seat"]["row_label"], s["seat"]["seat_number"])
                for s in r.json()
                if s["status"] == "available"
            ]

    def reserve(self, seat_ids: list[int]) -> float:
        """Hold the seats; returns the hold's deadline (epoch seconds), 0 when the race was lost."""
        body = {"screening_id": self.sid, "seat_ids": seat_ids}
        with self.client.post(
            f"{API}/seat-reservations/reserve",
            json=body,
            headers=self.headers,
            name="reserve",
            catch_response=True,
        ) as r:
            STATE.reserve_attempts += 1
            if r.status_code == 409:
                r.success()  # somebody else was faster: a normal outcome on release day
                STATE.lost_races += 1
                return 0.0
            if r.status_code != 201:
                r.failure(f"reserve {r.status_code}: {r.text}")
                return 0.0
            reservations = r.json()["reservations"]
            if sorted(x["seat_id"] for x in reservations) != sorted(seat_ids):
                r.failure("reserve answered other seats than requested")
                return 0.0
            return loadkit.parse_ts(reservations[0]["expires_at"])

    def book(self, seat_ids: list[int]) -> None:
        payment_id = f"pay-{STATE.run_id}-{uuid.uuid4().hex}"
        first = self.book_once(seat_ids, payment_id, "book-from-reservation")
        if first and random.random() < 0.1:
            again = self.book_once(seat_ids, payment_id, "book-from-reservation (replay)")
            if again != first:
                events.request.fire(
                    request_type="CHECK",
                    name="idempotent replay",
                    response_time=0,
                    response_length=0,
                    context={},
                    exception=RuntimeError(f"{first} != {again}"),
                )

    def book_once(self, seat_ids: list[int], payment_id: str, name: str) -> list[int]:
        body = {"screening_id": self.sid, "seat_ids": seat_ids, "payment_id": payment_id}
        with self.client.post(
            f"{API}/tickets/book-from-reservation",
            json=body,
            headers=self.headers,
            name=name,
            catch_response=True,
        ) as r:
            if r.status_code != 201:
                r.failure(f"book {r.status_code}: {r.text}")
                return []
            tickets = r.json()
            if sorted(t["seat_id"] for t in tickets) != sorted(seat_ids):
                r.failure("booked other seats than held")
            for t in tickets:
                STATE.booked[int(t["id"])] = (int(t["screening_id"]), int(t["seat_id"]))
            return sorted(int(t["id"]) for t in tickets)

    def cancel(self, seat_ids: list[int]) -> None:
        ids = ",".join(str(s) for s in seat_ids)
        self.client.delete(
            f"{API}/seat-reservations/cancel/{self.sid}?seat_ids={ids}",
            headers=self.headers,
            name="cancel",
        )
