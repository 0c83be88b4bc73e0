"""The status codes have one source, ``Status`` in seatlock/engine/scripts.py: the Lua constants
are generated from it, no script assigns one by hand, and every status a script returns exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from redis.asyncio import Redis

from seatlock.engine.scripts import NAMES, PRELUDE, Status, lua_dir, source, status_constants

STATUSES = frozenset(status.name for status in Status)
# A string, or a comment to the end of the line: what is left is code.
NOT_CODE = re.compile(r"""'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|--[^\n]*""")
# `local A, B =` or `A, B =` at the start of a statement (not `==`).
ASSIGNED = re.compile(r"^\s*(?:local\s+)?(\w+(?:\s*,\s*\w+)*)\s*=(?!=)", re.MULTILINE)
RETURNED = re.compile(r"\{\s*([A-Z][A-Z0-9_]*)\b")  # {TAKEN, ...: in code and in headers
REFUSED = re.compile(r"\brefusal\(\s*([A-Z][A-Z0-9_]*)\b")
CONSTANT = re.compile(r"\b[A-Z][A-Z0-9_]+\b")


def lua_files() -> list[Path]:
    return sorted(lua_dir().glob("*.lua"))


def code(path: Path) -> str:
    return NOT_CODE.sub(" ", path.read_text())


def prelude_constants() -> set[str]:
    """The upper-case names the prelude defines itself (its KEYS aliases, BATCH, ...)."""
    names: set[str] = set()
    for match in ASSIGNED.finditer(code(lua_dir() / f"{PRELUDE}.lua")):
        names.update(n.strip() for n in match[1].split(",") if CONSTANT.fullmatch(n.strip()))
    return names


def test_the_generated_line_matches_the_enum() -> None:
    line = status_constants()
    match = re.fullmatch(r"local ([\w, ]+) = ([\d, ]+)", line)
    assert match, line
    names, values = match[1].split(", "), [int(v) for v in match[2].split(", ")]
    assert list(zip(names, values, strict=True)) == [(s.name, s.value) for s in Status]
    assert all(source(name).startswith(line + "\n") for name in NAMES)


async def test_redis_sees_the_enum_values(redis: Redis) -> None:
    names = ", ".join(status.name for status in Status)
    reply = await redis.eval(f"{status_constants()}\nreturn {{{names}}}", 0)
    assert reply == [status.value for status in Status]


@pytest.mark.parametrize("path", lua_files(), ids=lambda p: p.name)
def test_no_script_assigns_a_status_by_hand(path: Path) -> None:
    for match in ASSIGNED.finditer(code(path)):
        assigned = {name.strip() for name in match[1].split(",")}
        assert not assigned & STATUSES, f"{path.name}: {match[0].strip()!r}"


@pytest.mark.parametrize("path", lua_files(), ids=lambda p: p.name)
def test_every_status_a_script_returns_is_a_status(path: Path) -> None:
    text = path.read_text()  # the header's "Returns" counts too
    named = set(RETURNED.findall(text)) | set(REFUSED.findall(text))
    assert named <= STATUSES, f"{path.name}: {sorted(named - STATUSES)} not in Status"


@pytest.mark.parametrize("path", lua_files(), ids=lambda p: p.name)
def test_every_constant_a_script_uses_is_defined(path: Path) -> None:
    # An undefined upper-case name is a status someone forgot to add to Status (Lua reads nil).
    known = STATUSES | prelude_constants() | {"KEYS", "ARGV"}
    used = set(CONSTANT.findall(code(path)))
    assert used <= known, f"{path.name}: {sorted(used - known)} defined nowhere"


def test_the_script_names_come_from_the_folder() -> None:
    files = {path.stem for path in lua_files()} - {PRELUDE}
    assert set(NAMES) == files and "hold" in NAMES and PRELUDE not in NAMES
