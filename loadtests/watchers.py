"""Watchers: many idle WebSocket clients on one screening, and how late each update reaches them.

One "Changer" user holds and releases seats at SEATLOCK_LOAD_CHANGES_PER_S (default 10); every
other user is a Watcher with one WebSocket. Each update a watcher receives is reported as a custom
Locust request "WS / update delay" whose response time is receive time minus the server's
``timestamp``; at the end the worst delay per update (the last watcher) is printed as p50/p99.
Client and server clocks must agree (same machine, or NTP-synchronised hosts).

    .venv/bin/locust -f loadtests/watchers.py --headless -u 1000 -r 100 -t 2m \
        --host http://127.0.0.1:8000
"""

from __future__ import annotations

import json
import os
import time
from itertools import cycle
from typing import Any

import gevent
import loadkit
import websocket
from loadkit import API, STATE
from locust import FastHttpUser, User, constant, constant_throughput, events, task
from locust.env import Environment
from locust.exception import StopUser

CHANGES_PER_S = float(os.environ.get("SEATLOCK_LOAD_CHANGES_PER_S", "10"))


@events.test_start.add_listener
def on_test_start(environment: Environment, **_: Any) -> None:
    loadkit.prepare(environment)


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:
    loadkit.report_last_watcher()
    loadkit.check_books(environment)


class Changer(FastHttpUser):
    """Makes the seat changes the watchers wait for: hold one seat, release it, next seat."""

    fixed_count = 1
    wait_time = constant_throughput(CHANGES_PER_S / 2)  # two changes per task

    def on_start(self) -> None:
        if not STATE.ready:
            raise StopUser()
        _, token = loadkit.register_and_login(self.host, "changer")
        self.headers = loadkit.bearer(token)
        self.seats = cycle([s.id for s in STATE.seats[-50:]])  # the back rows: nobody else's

    @task
    def flip(self) -> None:
        seat = next(self.seats)
        body = {"screening_id": STATE.screening_id, "seat_ids": [seat]}
        self.client.post(
            f"{API}/seat-reservations/reserve", json=body, headers=self.headers, name="reserve"
        )
        self.client.delete(
            f"{API}/seat-reservations/cancel/{STATE.screening_id}?seat_ids={seat}",
            headers=self.headers,
            name="cancel",
        )


class Watcher(User):
    """One idle seat map: a WebSocket and nothing else."""

    wait_time = constant(5)

    def on_start(self) -> None:
        if not STATE.ready:
            raise StopUser()
        started = time.perf_counter()
        error: Exception | None = None
        try:
            self.ws: websocket.WebSocket | None = loadkit.open_ws(self.host, STATE.screening_id)
            self.reader = gevent.spawn(self.listen, self.ws)
        except (OSError, RuntimeError, websocket.WebSocketException) as exc:
            self.ws, error = None, exc
        events.request.fire(
            request_type="WS",
            name="connect",
            response_length=0,
            response_time=(time.perf_counter() - started) * 1000,
            exception=error,
            context={},
        )

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.reader.kill(block=False)

    @staticmethod
    def listen(ws: websocket.WebSocket) -> None:
        try:
            while raw := ws.recv():
                received = time.time()
                for key, delay in loadkit.update_delays(json.loads(raw), received):
                    loadkit.note_delivery(key, delay)
                    events.request.fire(
                        request_type="WS",
                        name="update delay",
                        response_time=delay,
                        response_length=len(raw),
                        exception=None,
                        context={},
                    )
        except (OSError, websocket.WebSocketException):
            return

    @task
    def idle(self) -> None:
        """Watchers only listen."""
