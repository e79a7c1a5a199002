"""The decision classes are plain: nothing they import, directly or through another
module of this project, reaches pykka, a socket, a thread or a future.

That is what keeps each rule of a session testable with a few lines of Python and
no network, and what lets a reader open one without meeting an actor. The walk
follows the import statements themselves (a package's ``__init__`` only when the
import names the package), so an ``actors/__init__`` that re-exports the actors
does not count against a module that never uses them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DECISIONS = sorted(p for p in (ROOT / "actors" / "decisions").glob("*.py")
                   if p.name != "__init__.py")
FORBIDDEN = {"pykka", "socket", "websocket", "threading", "concurrent", "selectors",
             "asyncio", "ssl"}
PROJECT = ("actors", "protocol")


def module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    if path.with_suffix(".py").exists():
        return path.with_suffix(".py")
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of what ``path`` imports at run time (``TYPE_CHECKING`` blocks and
    annotations are not run, so they do not count)."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (package[:len(package) - node.level + 1] if node.level else [])
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            for alias in node.names:  # ``from . import x`` may name a module
                if module_file(f"{module}.{alias.name}") is not None:
                    found.add(f"{module}.{alias.name}")
    return found


def reached_from(path: Path) -> dict[str, str]:
    """Every forbidden module reached from ``path``, with the chain that reaches it."""
    bad: dict[str, str] = {}
    seen: set[Path] = set()
    todo = [(path, module_name(path))]
    while todo:
        current, chain = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imports_of(current):
            top = name.split(".")[0]
            if top in FORBIDDEN:
                bad.setdefault(top, f"{chain} -> {name}")
            elif top in PROJECT:
                target = module_file(name)
                if target is not None:
                    todo.append((target, f"{chain} -> {name}"))
    return bad


@pytest.mark.parametrize("path", DECISIONS, ids=lambda p: p.stem)
def test_a_decision_module_reaches_no_actor_socket_thread_or_future(path: Path) -> None:
    assert reached_from(path) == {}


def test_every_decision_class_has_a_unit_test_file_of_its_own() -> None:
    here = Path(__file__).parent
    assert [p.stem for p in DECISIONS if not (here / f"test_{p.stem}.py").exists()] == []


def test_the_walk_finds_what_it_looks_for() -> None:
    """A module that imports a supervision actor does reach pykka and threading."""
    found = reached_from(ROOT / "actors" / "supervision" / "supervisor.py")
    assert {"pykka", "threading"} <= set(found)
