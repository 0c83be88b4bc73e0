"""The Lua scripts of ``lua/``, registered once per Redis client (EVALSHA, NOSCRIPT fallback)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

NAMES = (
    "hold",
    "extend",
    "release",
    "claim",
    "sell",
    "unsell",
    "expire",
    "sweep",
    "load",
    "seatmap",
)
PRELUDE = "lib"


class Status(IntEnum):
    """The first element of every script's reply (the constants at the top of ``lua/lib.lua``)."""

    OK = 0
    NOT_LOADED = 1
    STARTED = 2
    UNKNOWN = 3
    BOOKED = 4
    TAKEN = 5
    TOO_MANY = 6
    NOT_HELD = 7
    EXPIRED = 8


def lua_dir() -> Path:
    """``lua/`` next to the package in a checkout, ``seatlock/lua`` in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "lua", here.parent / "lua"):
        if (candidate / f"{PRELUDE}.lua").is_file():
            return candidate
    raise FileNotFoundError(f"no Lua scripts next to {here}")


@functools.cache
def source(name: str) -> str:
    """The text sent to Redis: the shared prelude, then the script itself."""
    folder = lua_dir()
    prelude = (folder / f"{PRELUDE}.lua").read_text()
    return prelude + "\n" + (folder / f"{name}.lua").read_text()


class Scripts:
    """Every script registered on one client; Redis compiles each once (SCRIPT LOAD on NOSCRIPT)."""

    def __init__(self, redis: Redis) -> None:
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(source(name)) for name in NAMES
        }

    async def run(self, name: str, keys: Sequence[str], args: Sequence[int | str]) -> list[Any]:
        reply = await self._scripts[name](keys=keys, args=args)
        return list(reply)
