"""The world sits under the trainer: no module in toyworld/ imports the trainer, the Ray
rooms, the benchmarks or the research tools (they may import the world, not the reverse)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from configs.load import PROJECT_ROOT

WORLD = PROJECT_ROOT / "toyworld"
ABOVE_THE_WORLD = ("learner", "actors", "rewards", "bench", "tools", "ray")


def imported_roots(source: str, filename: str = "<source>") -> set[str]:
    """Top-level package names a module imports: `import a.b`, `from a.b import c`, and a
    literal `importlib.import_module("a.b")` / `__import__("a.b")` anywhere in it."""
    roots = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args:
            f, arg = node.func, node.args[0]
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            literal = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            if name in ("import_module", "__import__") and literal:
                roots.add(arg.value.split(".")[0])
    return roots


def world_modules() -> list[Path]:
    return sorted(WORLD.rglob("*.py"))


def test_the_scan_sees_every_import_form():
    source = (
        "import learner.update\n"
        "from actors import rollout\n"
        "from .grammar import parse\n"  # relative: inside the world, not a root
        "import importlib\n"
        "def f():\n"
        "    from tools import rl_check\n"
        "    return importlib.import_module('bench.stage'), __import__('ray')\n"
    )
    assert imported_roots(source) == {"learner", "actors", "tools", "importlib", "bench", "ray"}


def test_the_world_has_modules_to_scan():
    names = {p.name for p in world_modules()}
    assert {"render.py", "grammar.py", "checker.py", "build.py", "report.py"} <= names


@pytest.mark.parametrize("path", world_modules(), ids=lambda p: str(p.relative_to(WORLD)))
def test_world_module_imports_nothing_above_the_world(path):
    roots = imported_roots(path.read_text(encoding="utf-8"), str(path))
    above = sorted(roots & set(ABOVE_THE_WORLD))
    assert not above, f"{path.relative_to(PROJECT_ROOT)} imports {above}: the world sits under them"
