"""Memory and CPU of a process tree, from /proc (Linux): the bench's memory per watcher and
server CPU per resume."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

PROC = Path("/proc")
Children = dict[int, list[int]]  # parent pid -> child pids (children_of)


def tree_rss_kb(pid: int) -> int:
    """VmRSS (kB) of ``pid`` and all its descendants (a server's supervisor and its workers);
    0 where /proc is not there."""
    return tree_sum(pid, rss_kb)


def tree_cpu_s(pid: int, children: Children | None = None) -> float:
    """User and system CPU seconds of ``pid`` and its descendants so far (0 where there is
    none). Workers are long-lived: none ends during a batch and takes its CPU along.
    ``children``: a ``children_of()`` already read, for several trees at one moment."""
    return tree_sum(pid, cpu_ticks, children) / os.sysconf("SC_CLK_TCK")


def tree_sum(pid: int, of: Callable[[int], int], children: Children | None = None) -> int:
    """``of(p)`` summed over ``pid`` and all its descendants."""
    children = children_of() if children is None else children
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += of(current)
        todo += children.get(current, [])
    return total


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid: int) -> int:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()  # after "(comm)": state is field 3
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15


def children_of() -> Children:
    """Parent pid -> child pids, for every process /proc shows."""
    children: dict[int, list[int]] = {}
    for entry in PROC.glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])  # after "(comm)": state, ppid
            children.setdefault(parent, []).append(int(entry.name))
    return children


def children_named(pid: int, name: str, children: Children | None = None) -> list[int]:
    """The direct children of ``pid`` whose command name (``/proc/<pid>/comm``) is ``name``:
    the bench's embedded ``redis-server`` and ``postgres`` (whose backends are its children)."""
    found = []
    for child in (children_of() if children is None else children).get(pid, []):
        with contextlib.suppress(OSError):
            if (PROC / str(child) / "comm").read_text().strip() == name:
                found.append(child)
    return found
