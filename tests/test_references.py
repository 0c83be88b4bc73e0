"""What the prose of the repository cites is there: every path a comment, a docstring or a
Markdown file names exists (files move, and a comment citing the old place misleads), every
"invariant N" is one of docs/invariants.md, and every test the docs name is defined.
"""

from __future__ import annotations

import ast
import functools
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("seatlock", "api", "db", "lua", "loadtests", "tests", "docs", "bench")
# A path inside one of the project's folders, ending in a file name: not a glob, not a URL's.
PATH = re.compile(
    r"(?<![\w./-])((?:seatlock|api|db|lua|loadtests|tests|docs)/[\w./-]*\w\.(?:py|lua|sql|md))\b"
)
LUA_COMMENT = re.compile(r"--[^\n]*")
INVARIANTS = ROOT / "docs" / "invariants.md"
CITED = re.compile(r"\b[Ii]nvariants? (\d+(?:(?:, | and | or )\d+)*)")
TEST_ID = re.compile(r"(tests/[\w/]+\.py)::(test_\w+)")
TEST_NAME = re.compile(r"`(test_\w+)`")


def documents() -> Iterator[Path]:
    yield from sorted(ROOT.glob("*.md"))
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".lua", ".sql", ".md") and "__pycache__" not in path.parts:
                yield path


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of the comments and docstrings of a file, or the whole of a Markdown file."""
    text = path.read_text()
    if path.suffix == ".md":
        yield 1, text
    elif path.suffix == ".py":
        yield from _python_prose(text)
    else:  # Lua and SQL: -- comments
        for match in LUA_COMMENT.finditer(text):
            yield text.count("\n", 0, match.start()) + 1, match[0]


def _python_prose(text: str) -> Iterator[tuple[int, str]]:
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None:
                yield node.body[0].lineno, docstring


@functools.cache
def all_prose() -> list[tuple[str, int, str]]:
    """(file, line, text) of the prose of the repository: read and parsed once for every
    pattern (tokenizing and parsing every file is most of this module's time)."""
    return [
        (str(path.relative_to(ROOT)), line, text)
        for path in documents()
        for line, text in prose(path)
    ]


@functools.cache
def in_prose(pattern: re.Pattern[str]) -> list[tuple[str, int, re.Match[str]]]:
    """(file, line, match) for every match of pattern in the prose of the repository."""
    found = []
    for where, line, text in all_prose():
        for match in pattern.finditer(text):
            found.append((where, line + text.count("\n", 0, match.start()), match))
    return found


def named_paths() -> list[tuple[str, int, str]]:
    """(file, line, path named) for every path named in prose."""
    return [(where, line, match[1]) for where, line, match in in_prose(PATH)]


def test_every_path_named_in_prose_exists() -> None:
    missing = [
        f"{where}:{line}: {named} does not exist"
        for where, line, named in named_paths()
        if not (ROOT / named).exists()
    ]
    assert not missing, "stale paths in comments, docstrings or Markdown:\n  " + "\n  ".join(
        missing
    )


def test_every_invariant_cited_is_one_of_docs_invariants_md() -> None:
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", INVARIANTS.read_text(), re.M)]
    assert numbers == list(range(1, 11)), numbers
    wrong = [
        f"{where}:{line}: {match[0]!r}"
        for where, line, match in in_prose(CITED)
        if not set(map(int, re.findall(r"\d+", match[1]))) <= set(numbers)
    ]
    assert not wrong, "invariants cited that docs/invariants.md does not define:\n  " + "\n  ".join(
        wrong
    )


def test_the_tests_the_docs_name_exist() -> None:
    docs = [INVARIANTS, ROOT / "CONTRIBUTING.md"]
    defined = {
        match[1]
        for path in (ROOT / "tests").rglob("test_*.py")
        for match in re.finditer(r"def (test_\w+)\(", path.read_text())
    }
    missing = []
    for doc in docs:
        text = doc.read_text()
        for path, name in TEST_ID.findall(text):
            if not re.search(rf"def {name}\(", (ROOT / path).read_text()):
                missing.append(f"{doc.name}: {path}::{name}")
        missing += [
            f"{doc.name}: {name}" for name in TEST_NAME.findall(text) if name not in defined
        ]
    assert not missing, "tests named in the docs that do not exist:\n  " + "\n  ".join(missing)


def test_the_scan_reads_comments_docstrings_and_markdown() -> None:
    found = {(where, path) for where, _, path in named_paths()}
    assert ("lua/lib.lua", "seatlock/engine/scripts.py") in found  # a Lua comment
    assert ("seatlock/engine/seats.py", "seatlock/engine/mirrors.py") in found  # a Python comment
    assert ("api/auth.py", "seatlock/accounts/sessions.py") in found  # a docstring
    assert ("loadtests/README.md", "lua/hold.lua") in found  # Markdown
    assert ("lua/hold.lua", "lua/lib.lua") not in found  # "(lib.lua)" names no folder
