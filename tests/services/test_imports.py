"""Services sit below the HTTP layer: they import the engine, accounts and db, never api or
starlette (the full import-direction rule of the README is checked elsewhere)."""

from __future__ import annotations

import ast
from pathlib import Path

import seatlock.services

FORBIDDEN = ("api", "starlette", "seatlock.server")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_services_import_nothing_above_them() -> None:
    folder = Path(seatlock.services.__file__).parent
    found = {
        (path.name, name)
        for path in folder.glob("*.py")
        for name in imported(path)
        if any(name == top or name.startswith(f"{top}.") for top in FORBIDDEN)
    }
    assert found == set()
