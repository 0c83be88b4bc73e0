"""The import-direction rule (CONTRIBUTING.md), read from the source with ``ast``: every import,
also those inside functions and under ``TYPE_CHECKING``, points down the layers, and the
module-level imports of the project form no cycle.

    kernel    seatlock (package) and the modules of KERNEL (.errors, .metrics, ...): only kernel
    engine    seatlock.engine.*: kernel, engine          (engine and accounts never meet)
    accounts  seatlock.accounts.*: kernel, accounts
    db        db.*: kernel, engine, accounts, db
    services  seatlock.services.*: kernel, engine, accounts, db, services
    api       api.*: all of the above and api; never seatlock.server or loadtests
    server    seatlock.server.*: anything but loadtests (the bench command's lazy import aside)
    loadtests loadtests.*: anything
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("seatlock", "api", "db", "loadtests")
KERNEL = frozenset(
    {
        "seatlock",
        "seatlock.errors",
        "seatlock.settings",
        "seatlock.keys",
        "seatlock.process",
        "seatlock.metrics",
        "seatlock.heartbeats",
        "seatlock.failfast",
    }
)
LAYERS = ("engine", "accounts", "services", "server")  # the sub-packages of seatlock
ALLOWED = {
    "kernel": {"kernel"},
    "engine": {"kernel", "engine"},
    "accounts": {"kernel", "accounts"},
    "db": {"kernel", "engine", "accounts", "db"},
    "services": {"kernel", "engine", "accounts", "db", "services"},
    "api": {"kernel", "engine", "accounts", "db", "services", "api"},
    "server": {"kernel", "engine", "accounts", "db", "services", "api", "server"},
    "loadtests": {"kernel", "engine", "accounts", "db", "services", "api", "server", "loadtests"},
}
# (importer, imported): allowed only inside a function, so the runtime never loads the tools.
LAZY_ONLY = {("seatlock.server.cli", "loadtests.bench")}


@dataclass(frozen=True)
class Import:
    module: str  # the importer
    target: str  # the project module imported
    line: int
    lazy: bool  # inside a function: runs only when called
    typing_only: bool  # under TYPE_CHECKING: never runs

    @property
    def runtime(self) -> bool:
        """An import that runs while the importer itself is being imported."""
        return not self.lazy and not self.typing_only

    def where(self, root: Path) -> str:
        return f"{module_path(root, self.module)}:{self.line}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(root: Path, module: str) -> str:
    base = root / module.replace(".", "/")
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    return str(path.relative_to(root))


def project_modules(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(root, path)] = path
    return found


def layer(module: str) -> str | None:
    """The layer a project module belongs to; None for a seatlock module of no layer."""
    if module in KERNEL:
        return "kernel"
    top, _, rest = module.partition(".")
    if top != "seatlock":
        return top
    sub = rest.split(".", 1)[0]
    return sub if sub in LAYERS else None


class _Imports(ast.NodeVisitor):
    """Every import of one module, resolved to project modules, with where it sits."""

    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module, self.is_package, self.known = module, is_package, known
        self.found: list[Import] = []
        self.depth = 0  # functions we are inside
        self.typing_only = False

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        was, self.typing_only = self.typing_only, True
        for child in node.body:
            self.visit(child)
        self.typing_only = was
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._absolute(node.module or "", node.level)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            self._add(full if full in self.known else base, node.lineno)

    def _absolute(self, name: str, level: int) -> str:
        if level == 0:
            return name
        parts = self.module.split(".")
        keep = len(parts) - level + (1 if self.is_package else 0)
        return ".".join([*parts[:keep], *([name] if name else [])])

    def _add(self, target: str, line: int) -> None:
        while target and target not in self.known:  # `import seatlock.engine.seats as s` etc.
            if target.split(".", 1)[0] not in PACKAGES:
                return
            target = target.rpartition(".")[0]
        if target and target != self.module:
            self.found.append(Import(self.module, target, line, self.depth > 0, self.typing_only))


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def imports_of(root: Path) -> list[Import]:
    modules = project_modules(root)
    known = set(modules)
    found: list[Import] = []
    for module, path in modules.items():
        visitor = _Imports(module, path.name == "__init__.py", known)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        found += visitor.found
    return found


def violations(root: Path) -> Iterator[str]:
    for imp in imports_of(root):
        source, target = layer(imp.module), layer(imp.target)
        if source is None or target is None:
            nameless = imp.module if source is None else imp.target
            yield f"{imp.where(root)}: {nameless} is in no layer (add it to tests/test_layers.py)"
        elif (imp.module, imp.target) in LAZY_ONLY:
            if not imp.lazy:
                yield (
                    f"{imp.where(root)}: {imp.module} imports {imp.target} at module level; "
                    "import it inside the function that needs it"
                )
        elif target not in ALLOWED[source]:
            allowed = ", ".join(sorted(ALLOWED[source]))
            yield (
                f"{imp.where(root)}: {imp.module} ({source}) imports {imp.target} ({target}); "
                f"{source} may import only: {allowed}"
            )


def cycles(root: Path) -> list[list[str]]:
    """One cycle per strongly connected group of module-level imports (Tarjan)."""
    graph: dict[str, set[str]] = {module: set() for module in project_modules(root)}
    for imp in imports_of(root):
        if imp.runtime:
            graph[imp.module].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while (top := stack.pop()) != node:
                group.append(top)
            group.append(node)
            if len(group) > 1 or node in graph[node]:
                groups.append(_cycle_through(graph, set(group), min(group)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _cycle_through(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """A path start -> ... -> start inside one strongly connected group (breadth first)."""
    paths = {start: [start]}
    queue = [start]
    for node in queue:
        for nxt in sorted(graph[node] & group):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


def test_imports_point_down_the_layers() -> None:
    found = list(violations(ROOT))
    assert not found, "imports against the layer rule:\n  " + "\n  ".join(found)


def test_no_import_cycle() -> None:
    found = [" -> ".join(cycle) for cycle in cycles(ROOT)]
    assert not found, "import cycles (module-level imports):\n  " + "\n  ".join(found)


def test_the_bench_command_imports_the_bench_tools_lazily() -> None:
    lazy = [i for i in imports_of(ROOT) if (i.module, i.target) in LAZY_ONLY]
    assert lazy and all(i.lazy for i in lazy), lazy


def test_every_layer_is_seen() -> None:
    seen = {layer(module) for module in project_modules(ROOT)}
    assert seen == set(ALLOWED), seen


# The checker itself, on a tiny tree: it must see what hides in functions and TYPE_CHECKING.
FAKE = {
    "seatlock/__init__.py": "",
    "seatlock/keys.py": "",
    "seatlock/engine/__init__.py": "",
    "seatlock/engine/seats.py": "from seatlock import keys\nfrom . import model\n",
    "seatlock/engine/model.py": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from seatlock.accounts import tokens\n"
        "import seatlock.engine.seats\n"
    ),
    "seatlock/accounts/__init__.py": "",
    "seatlock/accounts/tokens.py": "def f() -> None:\n    import api.app\n",
    "seatlock/server/__init__.py": "",
    "seatlock/server/cli.py": "from loadtests import bench\n",
    "api/__init__.py": "",
    "api/app.py": "",
    "db/__init__.py": "",
    "loadtests/__init__.py": "",
    "loadtests/bench.py": "",
}


@pytest.fixture
def fake_tree(tmp_path: Path) -> Path:
    for name, text in FAKE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_checker_finds_hidden_imports_and_cycles(fake_tree: Path) -> None:
    found = list(violations(fake_tree))
    assert len(found) == 3, found
    assert found[0].startswith("seatlock/accounts/tokens.py:2: seatlock.accounts.tokens (accounts)")
    assert "imports api.app (api)" in found[0]
    assert found[1].startswith("seatlock/engine/model.py:3: seatlock.engine.model (engine)")
    assert "imports seatlock.accounts.tokens (accounts)" in found[1]
    assert found[2].startswith("seatlock/server/cli.py:1: seatlock.server.cli imports")
    assert "at module level" in found[2]
    # model -> seats is at module level, seats -> model via a relative import: a cycle.
    assert cycles(fake_tree) == [
        ["seatlock.engine.model", "seatlock.engine.seats", "seatlock.engine.model"]
    ]
