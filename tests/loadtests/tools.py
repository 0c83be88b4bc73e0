"""Running a load tool as its user does: a process of its own, its output read whole."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def without_settings() -> dict[str, str]:
    """This environment without any SEATLOCK_ setting: a tool then runs on its own defaults."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SEATLOCK_")}


async def run_tool(
    *argv: str, timeout_s: float, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``argv`` (``env``: ``without_settings()`` when None) and return its exit code and
    its output (stdout and stderr together); killed after ``timeout_s``."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=without_settings() if env is None else env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:  # not left running after the test: its servers die with it
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")
