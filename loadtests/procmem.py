"""Resident memory of a process tree, from /proc (Linux): the bench's memory per watcher."""

from __future__ import annotations

import contextlib
from pathlib import Path

PROC = Path("/proc")


def tree_rss_kb(pid: int) -> int:
    """VmRSS (kB) of ``pid`` and all its descendants (a server's supervisor and its workers);
    0 where /proc is not there."""
    children = children_of()
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += rss_kb(current)
        todo += children.get(current, [])
    return total


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children_of() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process /proc shows."""
    children: dict[int, list[int]] = {}
    for entry in PROC.glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])  # after "(comm)": state, ppid
            children.setdefault(parent, []).append(int(entry.name))
    return children
