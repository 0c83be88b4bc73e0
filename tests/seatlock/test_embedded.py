from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from seatlock.server import embedded
from seatlock.server.embedded import EmbeddedPostgres, EmbeddedRedis, embedded_services
from tests.support import processes_mentioning, wait_until_gone


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A directory outside pytest's tmp root: PostgreSQL runs as another user when we are root,
    and every pytest session resets that root to mode 0700 (other sessions may run meanwhile)."""
    path = Path(tempfile.mkdtemp(prefix="seatlock-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def redis_roundtrip(url: str, key: str, value: bytes | None = None) -> bytes | None:
    client = Redis.from_url(url)
    try:
        assert await client.ping()
        if value is not None:
            await client.set(key, value)
        got: bytes | None = await client.get(key)
        return got
    finally:
        await client.aclose()


async def test_both_answer_and_stop_leaves_nothing(data_dir: Path) -> None:
    with embedded_services(data_dir, persistent=False) as (redis_url, database_url):
        running = " ".join(cmdline for _, cmdline in processes_mentioning(data_dir))
        assert "redis-server" in running
        assert "postgres -D" in running
        assert await redis_roundtrip(redis_url, "k", b"v") == b"v"
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT current_database()") == "seatlock"
        finally:
            await conn.close()
    assert processes_mentioning(data_dir) == []


async def test_redis_data_survives_a_restart(data_dir: Path) -> None:
    first = EmbeddedRedis(data_dir / "redis", persistent=True)
    try:
        await redis_roundtrip(first.start(), "sold", b"A1")
    finally:
        first.stop()
    assert first.proc is not None and first.proc.returncode is not None
    second = EmbeddedRedis(data_dir / "redis", persistent=True)
    try:
        assert await redis_roundtrip(second.start(), "sold") == b"A1"
    finally:
        second.stop()
    assert processes_mentioning(data_dir) == []


async def test_postgres_data_survives_a_restart(data_dir: Path) -> None:
    data = data_dir / "postgres" / "data"
    first = EmbeddedPostgres(data, persistent=True)
    try:
        conn = await asyncpg.connect(first.start())
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('sold')")
        await conn.close()
    finally:
        first.stop()
    assert wait_until_gone(data) == []
    second = EmbeddedPostgres(data, persistent=True)
    try:
        conn = await asyncpg.connect(second.start())
        assert await conn.fetchval("SELECT v FROM kept") == "sold"
        await conn.close()
    finally:
        second.stop()
    assert wait_until_gone(data) == []


async def test_redis_runs_with_the_settings_holds_rely_on(redis: Redis) -> None:
    """The session's Redis is the embedded one: prompt expiry and skiplist sorted sets."""
    config = await redis.config_get("*")
    assert config["hz"] == "100"
    assert config["active-expire-effort"] == "3"
    assert "x" in config["notify-keyspace-events"].lower()
    assert config["zset-max-ziplist-entries"] == "0"
    await redis.zadd("sl:test:zset", {"1": 1})
    assert await redis.object("encoding", "sl:test:zset") == b"skiplist"


def test_ports_are_picked_below_the_ephemeral_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outgoing connections take their local ports from the ephemeral range: a server port
    picked there may be gone before the server binds it. Picked below it, never twice, with a
    cluster bus (port + span) free and below it too; the kernel's choice when there is no room."""
    ranges = tmp_path / "ip_local_port_range"
    monkeypatch.setattr(embedded, "EPHEMERAL_RANGE", ranges)
    ranges.write_text("32768\t60999\n")
    ports = [embedded.free_port() for _ in range(50)]
    assert all(embedded.PICK_FROM <= p < 32768 for p in ports) and len(set(ports)) == 50
    paired = embedded.free_port(span=10_000)
    assert paired + 10_000 < 32768
    forbidden = [paired + 10_000, paired]  # drawn first: its bus is not handed out either
    randint = embedded.random.randint
    with monkeypatch.context() as m:
        m.setattr(
            embedded.random, "randint", lambda a, b: forbidden.pop() if forbidden else randint(a, b)
        )
        assert embedded.free_port() not in (paired, paired + 10_000) and not forbidden
    with socket.socket() as s:  # a port taken now is never picked
        s.bind(("127.0.0.1", 0))
        taken = s.getsockname()[1]
        ranges.write_text(f"{taken + 1} 60999\n")
        monkeypatch.setattr(embedded, "PICK_FROM", taken - 1000)
        assert taken not in {embedded.free_port() for _ in range(100)}
    ranges.write_text("1024 65535\n")  # no room below the range
    assert 1024 <= embedded.free_port() < 65536
    ranges.write_text("garbage")  # unreadable: Linux's default range
    assert embedded.ephemeral_low() == 32768


@pytest.mark.parametrize("kind", [EmbeddedRedis, EmbeddedPostgres])
async def test_a_free_port_taken_before_the_server_binds_it_is_given_up_for_another(
    kind: type[EmbeddedRedis] | type[EmbeddedPostgres],
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process (a parallel test run, any tool) binds the port picked for the server
    before the server does: the server starts on another port instead of failing start-up."""
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", 0))
        thief.listen()
        taken = thief.getsockname()[1]
        picks = [taken]  # the pick goes to the thief first, as in the race
        pick = embedded.free_port
        monkeypatch.setattr(embedded, "free_port", lambda: picks.pop() if picks else pick())
        server = kind(data_dir / kind.name, persistent=False)
        try:
            url = server.start()
            assert server.port != taken and not picks
            if kind is EmbeddedRedis:
                assert await redis_roundtrip(url, "k", b"v") == b"v"
            else:
                conn = await asyncpg.connect(url)
                await conn.close()
        finally:
            server.stop()


# Started in a child process that is then killed (kill -9: no clean-up of its own runs): the
# embedded Redis of ``seatlock serve`` and the throw-away nodes of the cluster tests and bench.
ORPHANS = """
import sys, time
from pathlib import Path
from seatlock.server.embedded import EmbeddedRedis, free_port
from seatlock.server.redisnodes import RedisNodes

class One(RedisNodes):
    def start(self):
        port = free_port()
        self.ports.append(port)
        self.procs.append(self._spawn(port))
        self._wait(lambda: self._pings(port), "a node")
        return self

root = Path(sys.argv[1])
EmbeddedRedis(root / "embedded", persistent=False).start()
One(root / "nodes").start()
print("up", flush=True)
time.sleep(120)
"""


def test_redis_servers_end_with_the_process_that_started_them(data_dir: Path) -> None:
    run = [sys.executable, "-c", ORPHANS, str(data_dir)]
    with subprocess.Popen(run, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "up"
            assert len(processes_mentioning(data_dir)) == 3  # the child, its two redis-servers
        finally:
            child.kill()
    assert wait_until_gone(data_dir) == []
