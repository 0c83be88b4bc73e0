"""``GET /metrics`` through real HTTP, summed over the workers of a real ``seatlock serve``, and
readiness that fails while a background loop is stalled.

The in-process test servers share one default registry (one pytest process, several apps):
counters add up over every server and test, so these tests compare deltas, never absolutes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from seatlock.accounts import sessions
from seatlock.engine.errors import SeatsUnavailable, TooManySeats
from seatlock.errors import Unavailable, ValidationFailed
from seatlock.heartbeats import Heartbeats
from seatlock.metrics import Tally
from seatlock.server.cli import METRICS_DIR_VARIABLE, metrics_dir
from seatlock.server.workers import can_share_port
from seatlock.services.container import Services
from seatlock.services.holds import refusal
from seatlock.settings import Settings
from tests import factories as make
from tests.support import (
    PASSWORD,
    Account,
    LiveServer,
    Served,
    backends_of,
    book_held,
    reserve,
    scratch_dir,
    serving,
    watch,
)

Labels = dict[str, str]


def value(text: str, name: str, labels: Labels | None = None) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = (labels or {}).items()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and wanted <= sample.labels.items()
    )


async def scrape(client: httpx.AsyncClient, **kw: Any) -> str:
    r = await client.get("/metrics", **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def holds(text: str, outcome: str) -> float:
    return value(text, "seatlock_holds_total", {"outcome": outcome})


async def test_hold_booking_and_websocket_metrics_move(
    client: httpx.AsyncClient,
    server: LiveServer,
    db: asyncpg.Connection,
    user: Account,
    other_user: Account,
) -> None:
    show = await make.show(db, 4)
    before = await scrape(client)
    assert (await reserve(client, user, show, show.seat_ids[:2])).status_code == 201
    assert (await reserve(client, other_user, show, show.seat_ids[:1])).status_code == 409
    assert (await book_held(client, user, show, show.seat_ids[:2], "pay-m1")).status_code == 201
    assert (await book_held(client, user, show, show.seat_ids[:2], "pay-m1")).status_code == 201
    ws = await watch(server, show.id)
    try:
        during = await scrape(client)
    finally:
        await ws.close()
    assert holds(during, "granted") - holds(before, "granted") == 1
    assert holds(during, "taken") - holds(before, "taken") == 1
    bookings = "seatlock_bookings_total"
    for outcome in ("booked", "replayed"):
        moved = value(during, bookings, {"outcome": outcome}) - value(
            before, bookings, {"outcome": outcome}
        )
        assert moved == 1, outcome
    connections = "seatlock_ws_connections"
    assert value(during, connections) - value(before, connections) == 1
    # The booking's seat change reached the fan-out, and every loop has beaten.
    assert value(during, "seatlock_loop_last_beat_timestamp_seconds", {"loop": "expiry_sweep"}) > 0
    after = await _settled(client, connections, value(before, connections))
    assert value(after, connections) == value(before, connections)


async def _settled(client: httpx.AsyncClient, name: str, expected: float) -> str:
    """The metrics once ``name`` is back to ``expected`` (a closed socket leaves soon after)."""
    async with asyncio.timeout(5):
        while True:
            text = await scrape(client)
            if value(text, name) == expected:
                return text
            await asyncio.sleep(0.05)


async def test_metrics_text_names_no_user_or_screening(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: Account
) -> None:
    show = await make.show(db, 2)
    assert (await reserve(client, user, show, show.seat_ids)).status_code == 201
    for family in text_string_to_metric_families(await scrape(client)):
        for sample in family.samples:
            assert not {"user", "user_id", "screening", "screening_id"} & sample.labels.keys()


async def test_the_event_loop_lag_is_sampled(client: httpx.AsyncClient) -> None:
    name = "seatlock_event_loop_lag_seconds_count"
    before = value(await scrape(client), name)
    for _ in range(50):  # four samples a second: two within a second or so, even on a busy box
        await asyncio.sleep(0.1)
        text = await scrape(client)
        if value(text, name) >= before + 2:
            break
    assert value(text, name) >= before + 2
    assert value(text, "seatlock_loop_last_beat_timestamp_seconds", {"loop": "loop_lag"}) > 0


async def test_metrics_token_is_required_when_set(make_server: Any) -> None:
    live: LiveServer = make_server(metrics_token="scrape-me-please")
    async with httpx.AsyncClient(base_url=live.url) as client:
        r = await client.get("/metrics")
        assert r.status_code == 401
        assert r.json() == {"detail": "A valid metrics token is required"}
        wrong = {"Authorization": "Bearer scrape-me-not"}
        assert (await client.get("/metrics", headers=wrong)).status_code == 401
        right = {"Authorization": "Bearer scrape-me-please"}
        assert "seatlock_holds_total" in await scrape(client, headers=right)


def services_of(live: LiveServer) -> Services:
    services: Services = live._server.config.app.state.services
    return services


async def wait_ready_status(client: httpx.AsyncClient, status: int, within: float) -> Any:
    async with asyncio.timeout(within):
        while True:
            r = await client.get("/health/ready")
            if r.status_code == status:
                return r
            await asyncio.sleep(0.1)


async def test_ready_fails_while_a_loop_is_stalled_and_recovers(
    make_server: Any, db: asyncpg.Connection
) -> None:
    live: LiveServer = make_server(loop_silence_seconds=1.5)
    services = services_of(live)
    release = threading.Event()

    async def stall(stage: str, conn: Any) -> None:  # runs in the server's loop: it stays there
        while stage == "commit":
            if release.is_set():
                return
            await asyncio.sleep(0.05)

    services.booking_writer.commit_hook = stall
    show = await make.show(db, 2)
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        assert (await client.get("/health/ready")).status_code == 200
        buyer = await _account(client, "stall@example.com")
        assert (await reserve(client, buyer, show, show.seat_ids)).status_code == 201
        booking = asyncio.create_task(book_held(client, buyer, show, show.seat_ids, "pay-stall"))
        r = await wait_ready_status(client, 503, within=10)
        assert r.headers["retry-after"] == "5"
        assert r.json()["stalled"] == ["booking_writer"]
        assert r.json()["loops"]["booking_writer"].startswith("silent for")
        assert (await client.get("/health/live")).status_code == 200  # alive, just not ready
        release.set()
        assert (await booking).status_code == 201
        r = await wait_ready_status(client, 200, within=10)
        assert r.json()["stalled"] == []


async def test_ready_fails_when_a_loop_task_ends(make_server: Any) -> None:
    live: LiveServer = make_server()
    heartbeats: Heartbeats = services_of(live).heartbeats
    task = heartbeats._tasks["expiry_sweep"]
    task.get_loop().call_soon_threadsafe(task.cancel)
    async with httpx.AsyncClient(base_url=live.url) as client:
        r = await wait_ready_status(client, 503, within=5)
    assert r.json()["loops"]["expiry_sweep"] == "stopped"
    assert r.json()["stalled"] == ["expiry_sweep"]


async def test_a_loop_that_raises_is_logged_and_started_again(
    make_server: Any, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    live: LiveServer = make_server()
    writer = services_of(live).history_writer

    async def fail_once(stop: asyncio.Event) -> None:  # before it takes a batch: nothing lost
        del writer._pace  # the class's own from now on
        raise RuntimeError("a bug in the history writer")

    writer._pace = fail_once  # type: ignore[method-assign]
    show = await make.show(db, 2)
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        holder = await _account(client, "loop@example.com")
        assert (await reserve(client, holder, show, show.seat_ids)).status_code == 201
        query = "SELECT count(*) FROM reservations WHERE screening_id = $1"
        for _ in range(100):  # started again after RESTART_FIRST_S, then it writes the rows
            if await db.fetchval(query, show.id) == 2:
                break
            await asyncio.sleep(0.1)
        assert await db.fetchval(query, show.id) == 2
        r = await client.get("/health/ready")
        assert r.status_code == 200 and r.json()["loops"]["history_writer"] == "ok"
    failed = [r for r in caplog.records if "background loop history_writer failed" in r.message]
    assert len(failed) == 1 and failed[0].levelname == "ERROR"
    assert "a bug in the history writer" in failed[0].message


async def test_the_session_feed_is_started_again_after_it_raised(
    make_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = sessions._follow_once
    failures = [RuntimeError("a bug in the session feed")]

    async def fail_once(*args: Any) -> None:
        if failures:
            raise failures.pop()
        await real(*args)

    monkeypatch.setattr(sessions, "_follow_once", fail_once)
    live: LiveServer = make_server()
    trust = services_of(live).sessions
    for _ in range(100):  # started again after RESTART_FIRST_S: it follows the feed again
        if trust.live:
            break
        await asyncio.sleep(0.1)
    assert not failures and trust.live
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        r = await wait_ready_status(client, 200, within=10)
        assert r.json()["loops"]["session_feed"] == "ok"
    failed = [r for r in caplog.records if "background loop session_feed failed" in r.message]
    assert len(failed) == 1 and failed[0].levelname == "ERROR"


async def _account(client: httpx.AsyncClient, email: str) -> Account:
    body = {"email": email, "password": PASSWORD, "full_name": "Metrics"}
    r = await client.post("/api/v1/auth/register", json=body)
    assert r.status_code == 201, r.text
    login = await client.post("/api/v1/auth/login", json=body)
    tokens = login.json()
    return Account(r.json()["id"], email, PASSWORD, tokens["access_token"], tokens["refresh_token"])


# -- two workers of a real ``seatlock serve`` --------------------------------------------------


@pytest.fixture
def two_workers(base_settings: Settings) -> Iterator[tuple[Served, Path]]:
    if not can_share_port():
        pytest.skip("needs SO_REUSEPORT")
    with (
        scratch_dir("seatlock-metrics-") as data_dir,
        serving(
            data_dir, workers=2, bcrypt_rounds=4, log_level="warning", **backends_of(base_settings)
        ) as process,
    ):
        yield process, data_dir / "metrics" / str(process.proc.pid)


def per_worker(directory: Path, scratch: Path, name: str, labels: Labels) -> dict[int, float]:
    """Each process's own value of a counter, read from its file alone (public API only)."""
    from prometheus_client import generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    found: dict[int, float] = {}
    for file in directory.glob("counter_*.db"):
        pid = int(file.stem.split("_")[1])
        alone = scratch / str(pid)
        alone.mkdir()
        shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, str(alone))  # type: ignore[no-untyped-call]
        found[pid] = value(generate_latest(registry).decode(), name, labels)
    return found


async def test_metrics_are_summed_over_two_workers(
    two_workers: tuple[Served, Path], db: asyncpg.Connection, tmp_path: Path
) -> None:
    process, directory = two_workers
    show = await make.show(db, 4)
    async with httpx.AsyncClient(base_url=process.url) as client:
        holder = await _account(client, "holder@example.com")
        racer = await _account(client, "racer@example.com")
        assert (await reserve(client, holder, show, show.seat_ids)).status_code == 201
    attempts = 60

    async def refused_on_a_new_connection() -> None:
        # A client per request: a new connection, which SO_REUSEPORT gives to either worker.
        async with httpx.AsyncClient(base_url=process.url) as one:
            assert (await reserve(one, racer, show, show.seat_ids[:1])).status_code == 409

    for _ in range(attempts // 10):
        await asyncio.gather(*(refused_on_a_new_connection() for _ in range(10)))
    async with httpx.AsyncClient(base_url=process.url) as client, asyncio.timeout(10):
        while True:  # the other worker adds its tally within a second (seatlock/metrics.py)
            text = await scrape(client)
            if holds(text, "taken") >= attempts:
                break
            await asyncio.sleep(0.2)
    assert holds(text, "taken") == attempts
    assert holds(text, "granted") == 1
    by_worker = per_worker(directory, tmp_path, "seatlock_holds_total", {"outcome": "taken"})
    answered = {pid: n for pid, n in by_worker.items() if n}
    assert len(answered) == 2, by_worker  # both workers refused some, and /metrics summed them
    assert sum(answered.values()) == attempts
    assert process.proc.pid not in answered


async def test_a_dead_worker_leaves_the_live_gauges_and_a_starting_one_breaks_nothing(
    two_workers: tuple[Served, Path],
) -> None:
    process, directory = two_workers
    workers = _worker_pids(directory, process.proc.pid)
    assert len(workers) == 2
    victim = workers[0]
    os.kill(victim, 9)
    async with asyncio.timeout(20):  # the supervisor replaces it and forgets its live gauges
        while True:
            if not (directory / f"gauge_livesum_{victim}.db").exists():
                break
            await asyncio.sleep(0.1)
    # The other worker may still be between its start-up and listening (its gauges are written
    # from the start-up on), so the port can refuse until it or the replacement listens.
    async with asyncio.timeout(20), httpx.AsyncClient(base_url=process.url) as client:
        while True:
            try:
                assert "seatlock_ws_connections" in await scrape(client)
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.1)
        # A starting worker creates its files, then sizes them: a scrape in between reads empty
        # files, which hold nothing yet (and made /metrics answer 500).
        for name in ("counter_4194305.db", "gauge_livesum_4194305.db", "histogram_4194305.db"):
            (directory / name).touch()
        text = await scrape(client)
        assert "seatlock_ws_connections" in text


def _worker_pids(directory: Path, supervisor: int) -> list[int]:
    deadline = time.monotonic() + 20
    while True:
        pids = {int(f.stem.rsplit("_", 1)[1]) for f in directory.glob("gauge_livesum_*.db")} - {
            supervisor
        }
        if len(pids) >= 2 or time.monotonic() > deadline:
            return sorted(pids)
        time.sleep(0.1)


def test_the_cli_leaves_prometheus_client_unimported_until_serve_sets_the_directory() -> None:
    # prometheus-client reads PROMETHEUS_MULTIPROC_DIR once, when first imported: the
    # supervisor's own metrics (embedded restarts) are summed only if serve() set it first.
    code = "import sys, seatlock.server.cli; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_metrics_dir_is_fresh_and_keeps_running_servers_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(METRICS_DIR_VARIABLE, "")  # restored after the test
    root = tmp_path / "metrics"
    stale, running = root / "999999999", root / str(os.getppid())
    for directory in (stale, running):
        directory.mkdir(parents=True)
        (directory / "counter_1.db").write_bytes(b"old")
    path = metrics_dir(Settings(data_dir=tmp_path))
    assert path == root / str(os.getpid())
    assert os.environ[METRICS_DIR_VARIABLE] == str(path)
    assert list(path.iterdir()) == []
    assert not stale.exists()  # a server that is gone: its counters would add up
    assert (running / "counter_1.db").exists()  # another server sharing the data_dir


async def test_expired_holds_are_counted_once_by_timer_listener_or_sweep(
    make_server: Any, db: asyncpg.Connection
) -> None:
    live: LiveServer = make_server(hold_seconds=1)
    show = await make.show(db, 3)
    async with httpx.AsyncClient(base_url=live.url) as client:
        holder = await _account(client, "expiring@example.com")
        before = value(await scrape(client), "seatlock_hold_expiries_total")
        assert (await reserve(client, holder, show, show.seat_ids[:2])).status_code == 201
        async with asyncio.timeout(10):
            while True:
                freed = value(await scrape(client), "seatlock_hold_expiries_total") - before
                if freed >= 2:
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # a second pass of the sweep counts nothing more
        assert value(await scrape(client), "seatlock_hold_expiries_total") - before == 2


def test_refusal_reasons_are_a_few_fixed_labels() -> None:
    assert refusal(SeatsUnavailable([1], booked=False)) == "taken"
    assert refusal(SeatsUnavailable([1], booked=True)) == "booked"
    assert refusal(TooManySeats(10)) == "too_many"
    assert refusal(Unavailable("down")) == "unavailable"
    assert refusal(ValidationFailed("bad")) == "invalid"


def test_a_tally_adds_its_counts_to_the_counter_once() -> None:
    registry = CollectorRegistry()
    counter = Counter("tally_test", "a test counter", ["outcome"], registry=registry)
    tally = Tally(counter, ("yes", "no"))
    tally.counts["yes"] += 2
    assert registry.get_sample_value("tally_test_total", {"outcome": "yes"}) == 0
    tally.flush()
    tally.flush()
    assert registry.get_sample_value("tally_test_total", {"outcome": "yes"}) == 2
    assert registry.get_sample_value("tally_test_total", {"outcome": "no"}) == 0
