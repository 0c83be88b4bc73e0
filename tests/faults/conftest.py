"""Backends of the fault suite's own: the suite kills them, so never the session's shared ones."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Backends


@pytest.fixture(autouse=True)
def clean() -> None:
    """Replaces the suite's cleaning of the shared servers: these tests never use them, and
    each run works on screenings and accounts of its own."""


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    root = Path(tempfile.mkdtemp(prefix="seatlock-faults-"))
    started = Backends.start(root)
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(root, ignore_errors=True)
