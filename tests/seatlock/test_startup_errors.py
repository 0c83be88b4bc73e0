"""Start-up after an unclean stop, and start-up failures told in one line (no traceback)."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from seatlock.server import embedded
from seatlock.server.cli import redact
from seatlock.server.embedded import EmbeddedError, EmbeddedPostgres
from seatlock.settings import Settings
from tests.support import REPO, SERVE, processes_mentioning, scratch_dir, serve_env, wait_until_gone


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with scratch_dir("seatlock-startup-") as path:
        yield path


def name_in_pid_file(pid_file: Path, pid: int, status: str | None = None) -> None:
    """Write ``pid`` (and ``status``) into a postmaster.pid, as PID reuse or a stop would."""
    lines = pid_file.read_text().splitlines()
    lines[0] = str(pid)
    if status is not None:
        lines[7] = status
    pid_file.write_text("\n".join(lines) + "\n")


def test_a_stale_postmaster_pid_naming_another_live_process_is_removed(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After an unclean stop the pid in postmaster.pid may be another process's by now:
    PostgreSQL refused to start ("lock file already exists") with a page of its log."""
    first = EmbeddedPostgres(data_dir / "data", persistent=False)
    first.start()
    assert first.proc is not None
    first.proc.kill()  # kill -9: its postmaster.pid stays behind
    first.proc.wait()
    assert wait_until_gone(data_dir) == []  # its backends noticed and went
    pid_file = data_dir / "data" / "postmaster.pid"
    # A process of the user PostgreSQL runs as (the service account under root): PostgreSQL
    # itself ignores another user's pid (kill(pid, 0) is refused).
    owner = pid_file.stat().st_uid if os.geteuid() == 0 else None
    other = subprocess.Popen(["sleep", "600"], user=owner)
    try:
        name_in_pid_file(pid_file, other.pid)
        second = EmbeddedPostgres(data_dir / "data", persistent=False)
        with caplog.at_level(logging.WARNING, logger="seatlock.server.embedded"):
            second.start()
        try:
            assert second.proc is not None
            assert pid_file.read_text().splitlines()[0] == str(second.proc.pid)
        finally:
            second.stop()
        assert other.poll() is None  # not touched
    finally:
        other.kill()
        other.wait()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"removed a stale postmaster.pid from {data_dir / 'data'}" in w for w in warnings)
    assert wait_until_gone(data_dir) == []


def test_a_postgres_running_on_the_data_dir_is_refused_in_one_line(data_dir: Path) -> None:
    first = EmbeddedPostgres(data_dir / "data", persistent=False)
    first.start()
    try:
        assert first.proc is not None
        pid = first.proc.pid
        with pytest.raises(EmbeddedError) as refused:
            EmbeddedPostgres(data_dir / "data", persistent=False).start()
        assert str(refused.value) == (
            f"embedded PostgreSQL: a postgres (pid {pid}) already runs on {data_dir / 'data'};"
            f" stop it (kill -INT {pid}) and start again"
        )
        assert first._ready()  # its postmaster.pid left alone
    finally:
        first.stop()


def test_a_postgres_whose_directory_cannot_be_read_is_not_taken_for_stale(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root without CAP_SYS_PTRACE (a container's default) cannot read the service account's
    /proc/PID/cwd: a live postmaster of this very directory was judged stale, its lock file
    removed under it."""
    first = EmbeddedPostgres(data_dir / "data", persistent=False)
    first.start()
    try:
        assert first.proc is not None

        def unreadable(a: object, b: object) -> bool:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(embedded.os.path, "samefile", unreadable)
        with pytest.raises(EmbeddedError, match="already runs on"):
            EmbeddedPostgres(data_dir / "data", persistent=False).start()
        monkeypatch.undo()
        assert first._ready()  # its postmaster.pid left alone
    finally:
        first.stop()


def test_a_postgres_of_the_data_dir_that_is_stopping_is_waited_for(data_dir: Path) -> None:
    """A killed serve's postgres gets its death signal and stops: a serve started again at
    once waits for it instead of failing."""
    first = EmbeddedPostgres(data_dir / "data", persistent=False)
    first.start()
    assert first.proc is not None
    name_in_pid_file(data_dir / "data" / "postmaster.pid", first.proc.pid, "stopping")
    stopper = threading.Timer(1.0, first.stop)
    stopper.start()
    second = EmbeddedPostgres(data_dir / "data", persistent=False)
    try:
        second.start()
        assert first.proc.poll() is not None and second._ready()
    finally:
        stopper.join()
        second.stop()


def serve_fails(command: tuple[str, ...] = ("serve",), **settings: object) -> list[str]:
    """``seatlock serve`` (or another ``command``) with ``settings`` (warnings only), which must
    stop with status 1: the lines it wrote to stderr."""
    env = serve_env(log_level="warning", bcrypt_rounds=4, **settings)
    argv = [*SERVE[:-1], *command]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, timeout=90, check=False)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 1, stderr
    assert "Traceback" not in stderr and "secret" not in stderr, stderr
    return stderr.strip().splitlines()


def test_an_unreachable_postgres_is_one_line_with_no_password(data_dir: Path) -> None:
    url = "postgresql://app:secret@127.0.0.1:1/x"
    assert serve_fails(data_dir=data_dir, workers=1, database_url=url) == [
        "seatlock: cannot reach PostgreSQL at postgresql://app:***@127.0.0.1:1/x:"
        " connection refused"
    ]
    assert processes_mentioning(data_dir) == []  # the embedded Redis it started was stopped


@pytest.mark.parametrize(
    "command",
    [
        ("migrate",),
        ("seed-demo",),
        ("create-admin", "boss@example.com", "--password", "Boss-pass-123"),
    ],
    ids=["migrate", "seed-demo", "create-admin"],
)
def test_the_other_commands_say_an_unreachable_postgres_in_one_line(
    data_dir: Path, command: tuple[str, ...]
) -> None:
    url = "postgresql://app:secret@127.0.0.1:1/x"
    assert serve_fails(command, data_dir=data_dir, database_url=url) == [
        "seatlock: cannot reach PostgreSQL at postgresql://app:***@127.0.0.1:1/x:"
        " connection refused"
    ]
    assert processes_mentioning(data_dir) == []


def test_a_database_url_that_is_no_postgres_dsn_is_one_line(data_dir: Path) -> None:
    (line,) = serve_fails(data_dir=data_dir, workers=1, database_url="mysql://x/y")
    assert line.startswith("seatlock: cannot use PostgreSQL at mysql://x/y: invalid DSN"), line


def test_an_unreachable_redis_is_one_line_before_any_worker_starts(data_dir: Path) -> None:
    """Each worker printed its traceback, then 'a worker could not start; stopping'."""
    lines = serve_fails(
        data_dir=data_dir,
        workers=2,
        redis_url="redis://:secret@127.0.0.1:1/0",
        database_url="postgresql://127.0.0.1:1/x",  # not reached: Redis is checked first
    )
    assert lines == [
        "seatlock: cannot reach Redis at redis://:***@127.0.0.1:1/0: connection refused"
    ]


def test_a_data_dir_that_cannot_be_made_is_one_line() -> None:
    assert serve_fails(data_dir="/proc/nope") == [
        "seatlock: cannot use the data directory /proc/nope (SEATLOCK_DATA_DIR):"
        " no such file or directory"
    ]


def test_port_0_is_refused_by_name() -> None:
    """It started, said it served on port 0, and each worker listened on a random port of its
    own, none of them logged."""
    with pytest.raises(ValueError, match="SEATLOCK_PORT: 0 must be from 1 to 65535"):
        Settings.from_env({"SEATLOCK_PORT": "0"})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("postgresql://app:p@ss/w0rd@db/x", "postgresql://app:***@db/x"),
        (
            "postgresql://app@db/x?password=s3cret&sslmode=off",
            "postgresql://app@db/x?password=***&sslmode=off",
        ),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis+cluster://u:s3cret@a:7000,b:7001", "redis+cluster://u:***@a:7000,b:7001"),
        (
            "postgresql://postgres@127.0.0.1:5440/seatlock",
            "postgresql://postgres@127.0.0.1:5440/seatlock",
        ),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact(url) == shown
