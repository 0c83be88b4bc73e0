"""Browsing: anonymous visitors read the catalog, search, showtimes and seat maps.

    .venv/bin/locust -f loadtests/browsing.py --headless -u 200 -r 50 -t 2m \
        --host http://127.0.0.1:8000

The hot screening of loadkit.prepare makes sure there is something to browse; whatever else the
server holds (e.g. the demo data) is browsed too.
"""

from __future__ import annotations

import random
from typing import Any

import loadkit
from loadkit import API, STATE
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopUser

SEARCH_TERMS = ["release", "day", "action", "the", "love", "star", "night"]


@events.test_start.add_listener
def on_test_start(environment: Environment, **_: Any) -> None:
    loadkit.prepare(environment)


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:
    loadkit.check_books(environment)


class Visitor(FastHttpUser):
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        if not STATE.ready:
            raise StopUser()
        self.movie_ids = self.ids(f"{API}/movies/", "movies")
        self.cinema_ids = self.ids(f"{API}/cinemas/", "cinemas")
        self.screening_ids = self.ids(f"{API}/screenings/", "screenings") or [STATE.screening_id]

    def ids(self, path: str, name: str) -> list[int]:
        with self.client.get(path, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{name} {r.status_code}")
                return []
            return [int(item["id"]) for item in r.json()]

    def pick(self, ids: list[int]) -> int | None:
        return random.choice(ids) if ids else None

    @task(4)
    def movies(self) -> None:
        self.client.get(f"{API}/movies/?limit=20", name="movies")
        movie = self.pick(self.movie_ids)
        if movie is not None:
            self.client.get(f"{API}/movies/{movie}", name="movie")
            self.client.get(f"{API}/movies/{movie}/showtimes", name="movie showtimes")

    @task(3)
    def search(self) -> None:
        q = random.choice(SEARCH_TERMS)
        self.client.get(f"{API}/movies/search?q={q}", name="movie search")
        self.client.get(f"{API}/cinemas/search?city=Loadville", name="cinema search")

    @task(2)
    def cinemas(self) -> None:
        self.client.get(f"{API}/cinemas/", name="cinemas")
        cinema = self.pick(self.cinema_ids)
        if cinema is not None:
            self.client.get(f"{API}/cinemas/{cinema}", name="cinema")
            self.client.get(f"{API}/cinemas/{cinema}/showtimes", name="cinema showtimes")

    @task(3)
    def showtimes(self) -> None:
        self.client.get(f"{API}/showtimes/", name="showtimes")
        self.client.get(f"{API}/screenings/", name="screenings")

    @task(5)
    def seat_map(self) -> None:
        screening = self.pick(self.screening_ids) or STATE.screening_id
        self.client.get(loadkit.availability_path(screening), name="availability")
        self.client.get(f"{API}/screenings/{screening}/available-seats", name="available-seats")
        self.client.get(f"{API}/showtimes/{screening}/seats", name="showtime seats")
