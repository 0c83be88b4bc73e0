"""The Lua scripts of ``lua/``: their names, the status codes they return, their text and SHA.

The engine runs them through its transport (``seatlock.engine.transport``).
"""

from __future__ import annotations

import functools
import hashlib
from enum import IntEnum
from pathlib import Path

PRELUDE = "lib"
# The command lua/lib.lua publish() sends every seat event with: a catalogue is built for one of
# them (``source(name, publish)``), so the choice costs a script run nothing. SPUBLISH (Redis >= 7)
# keeps an event on the shard of the screening's slot; PUBLISH is forwarded to every node.
PUBLISH = "PUBLISH"
SPUBLISH = "SPUBLISH"


class Status(IntEnum):
    """The first element of every script's reply; ``source()`` defines the same names in Lua."""

    OK = 0
    NOT_LOADED = 1
    STARTED = 2
    UNKNOWN = 3
    BOOKED = 4
    TAKEN = 5
    TOO_MANY = 6
    NOT_HELD = 7
    EXPIRED = 8
    # Best available seats and the single-gap rule (lua/hold_best.lua, lua/hold.lua).
    GAP = 9
    NO_BLOCK = 10
    STALE = 11
    # The screening was deleted (its tombstone: lua/forget.lua); load and refresh write nothing.
    DELETED = 12


def lua_dir() -> Path:
    """``lua/`` at the top of a checkout, ``seatlock/lua`` in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "lua", here.parent.parent / "lua"):
        if (candidate / f"{PRELUDE}.lua").is_file():
            return candidate
    raise FileNotFoundError(f"no Lua scripts next to {here}")


# Every script of lua/ but the prelude: a new state change is a new file there, not a name here.
NAMES = tuple(sorted(path.stem for path in lua_dir().glob("*.lua") if path.stem != PRELUDE))


@functools.cache
def source(name: str, publish: str = PUBLISH) -> str:
    """The text sent to Redis: the status constants, the publish command, the shared prelude,
    then the script itself."""
    if publish not in (PUBLISH, SPUBLISH):
        raise ValueError(f"no publish command {publish!r}")
    folder = lua_dir()
    prelude = (folder / f"{PRELUDE}.lua").read_text()
    head = f"{status_constants()}\nlocal publish_command = '{publish}'"
    return head + "\n" + prelude + "\n" + (folder / f"{name}.lua").read_text()


def status_constants() -> str:
    """The Lua line defining every ``Status`` (``local OK, NOT_LOADED, ... = 0, 1, ...``): the
    codes have this one source, and no script assigns them by hand."""
    names = ", ".join(status.name for status in Status)
    values = ", ".join(str(status.value) for status in Status)
    return f"local {names} = {values}"


@functools.cache
def sha(name: str, publish: str = PUBLISH) -> str:
    return hashlib.sha1(source(name, publish).encode()).hexdigest()
