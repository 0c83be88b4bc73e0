"""The release-day crowd, as each simulated user lives it (run in the load generator processes).

Every user of a ``crowd`` job arrives at a random moment of the ``job.duration``-second window
after ``job.start_at``, opens a connection of its own and tries to buy 1-4 neighbouring seats of
one screening: read the availability; if nothing is free, the answer is "sold out"; otherwise hold
some of the free seats near the middle; a 409 (somebody was faster) sends it back to the
availability; a won hold is booked at once with a payment id (book-from-reservation), and the
201 is the answer "seat". Each user's (arrival, answer, kind) lands in ``Sample.answers`` and
each request's latency in ``Sample.steps`` under its step ("availability", "hold", "book").
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence

import msgspec
import orjson

from loadtests.loadgen import API, Http, Job, Sample, untimed_send

MAX_GROUP = 4  # seats a user wants: 1 to MAX_GROUP
MAX_TRIES = 200  # hold attempts before a user gives up (its answer is then "none")
GIVE_UP_S = 60.0  # after the arrival window: a user still busy by then has no answer
SEAT, SOLD_OUT, NONE = "seat", "sold out", "none"


async def crowd(job: Job) -> Sample:
    """Run the users of ``job.tokens`` (one token each) and return what they saw."""
    sample = Sample()
    arrivals = [job.start_at + random.random() * job.duration for _ in job.tokens]
    deadline = job.start_at + job.duration + GIVE_UP_S
    users = [
        asyncio.create_task(user(job, n, token, at, deadline, sample))
        for n, (token, at) in enumerate(zip(job.tokens, arrivals, strict=True))
    ]
    await asyncio.gather(*users)
    return sample


async def user(
    job: Job, n: int, token: str, arrive_at: float, deadline: float, sample: Sample
) -> None:
    await asyncio.sleep(max(0.0, arrive_at - time.time()))
    arrived = time.time()
    http = Http(job.host, job.port)
    answer = NONE
    try:
        answer = await asyncio.wait_for(buy(job, http, n, token, sample), deadline - arrived)
    except TimeoutError:
        pass
    finally:
        await http.close()
    sample.answers.append((arrived, time.time(), answer))


async def buy(job: Job, http: Http, n: int, token: str, sample: Sample) -> str:
    """One user's purchase: the answer it ends with (SEAT, SOLD_OUT, or NONE on an error)."""
    sid = job.screening_id
    read = http.encode("GET", f"{API}/seat-reservations/screening/{sid}/availability", None, token)
    wanted = 1 + int(random.random() * MAX_GROUP)
    for _ in range(MAX_TRIES):
        status, raw = await step(http, sample, "availability", read)
        if status != 200:
            return NONE
        free = free_seats(raw)
        if not free:
            return SOLD_OUT
        seats = choose(free, wanted)
        body = {"screening_id": sid, "seat_ids": seats}
        hold = http.encode("POST", f"{API}/seat-reservations/reserve", body, token)
        status, raw = await step(http, sample, "hold", hold)
        if status == 201:
            return await book(job, http, sample, token, seats, f"crowd-{os.getpid()}-{n}")
        if status != 409:
            note(sample, f"crowd hold {status}: {raw[:200]!r}")
            return NONE
    return NONE


async def book(
    job: Job, http: Http, sample: Sample, token: str, seats: list[int], payment: str
) -> str:
    body = {"screening_id": job.screening_id, "seat_ids": seats, "payment_id": payment}
    request = http.encode("POST", f"{API}/tickets/book-from-reservation", body, token)
    status, raw = await step(http, sample, "book", request)
    if status != 201:
        note(sample, f"crowd book {status}: {raw[:200]!r}")
        return NONE
    tickets = orjson.loads(raw)
    sample.won += len(tickets)
    sample.tickets += [(t["id"], t["screening_id"], t["seat_id"]) for t in tickets]
    sample.sold.append((time.time(), len(tickets)))
    return SEAT


async def step(http: Http, sample: Sample, name: str, request: bytes) -> tuple[int, bytes]:
    """One request of the flow: counted with the others and timed under its step's name."""
    started = time.perf_counter()
    status, raw = await untimed_send(http, sample, request)
    sample.record(status, started)
    sample.step(name, started)
    return status, raw


class _Seat(msgspec.Struct):
    id: int


class _Entry(msgspec.Struct):
    seat: _Seat
    status: str


# Only the two fields a user looks at, decoded into Structs: half the CPU of parsing the whole
# map into dicts (~120 vs ~240 µs for 500 seats), which the crowd's clients do tens of
# thousands of times on the server's cores.
_MAP = msgspec.json.Decoder(list[_Entry])


def free_seats(raw: bytes) -> list[int]:
    """The ids of the seats an availability answer shows free, in the room's order."""
    return [entry.seat.id for entry in _MAP.decode(raw) if entry.status == "available"]


def choose(free: Sequence[int], wanted: int) -> list[int]:
    """``wanted`` free seats next to each other in the list (fewer when fewer are left), around
    the middle, where everybody wants to sit."""
    count = min(wanted, len(free))
    middle = len(free) // 2 + int(random.gauss(0, len(free) / 8))
    first = min(max(0, middle - count // 2), len(free) - count)
    return list(free[first : first + count])


def note(sample: Sample, error: str) -> None:
    if len(sample.errors) < 5:
        sample.errors.append(error)
