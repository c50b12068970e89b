"""No import circles in the core: every module can be imported first, on its own.

Modules are parsed, never imported.  An import at module level (outside ``if TYPE_CHECKING:``)
is an edge; an import inside a function is not, since it runs after every module has loaded.
The vocabulary helpers sit in a leaf module so that the engines and the planners never import
the parameter checks (which import the settings and the targets).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "src" / "backupflow"


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(CORE.parent).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(path): path for path in sorted(CORE.rglob("*.py"))}


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, into ``if``/``try`` blocks but not ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, ast.If):
            if "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            yield from _statements(node.body)
            yield from _statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _statements(block)
            for handler in node.handlers:
                yield from _statements(handler.body)
        else:
            yield node


def _targets(node: ast.AST) -> Iterator[str]:
    """The core modules an import statement loads (``from a import b``: ``a.b`` when it is a
    module, else ``a``)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names if alias.name in MODULES)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            if full in MODULES:
                yield full
            elif node.module in MODULES:
                yield node.module


def module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return {target for node in _statements(tree.body) for target in _targets(node)}


def all_imports(path: Path) -> set[str]:
    """Every core module ``path`` imports, wherever the import stands (functions, TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return {target for node in ast.walk(tree) for target in _targets(node)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_among_core_modules() -> None:
    graph = {name: module_level_imports(path) for name, path in MODULES.items()}
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_vocabulary_is_a_leaf() -> None:
    assert all_imports(CORE / "vocabulary.py") == set()


def test_engines_and_planners_never_import_the_parameter_checks() -> None:
    for module in ("backupflow.engines.base", "backupflow.planning", "backupflow.engines.sqlite"):
        assert "backupflow.parameters" not in all_imports(MODULES[module]), module


ENGINE_SETTINGS = (
    "backupflow.engines.sqlite_settings",
    "backupflow.engines.mssql.settings",
    "backupflow.engines.postgres.settings",
)


def test_each_engine_settings_module_imports_only_pydantic() -> None:
    for module in ENGINE_SETTINGS:
        assert all_imports(MODULES[module]) == set(), module


def test_any_module_can_be_imported_first() -> None:
    """The settings import the engines' settings, the engines import the settings: whichever
    comes first, both load (the engine packages' ``__init__`` load their names lazily)."""
    first = (
        *ENGINE_SETTINGS,
        "backupflow.engines",
        "backupflow.engines.mssql",
        "backupflow.engines.registry",
        "backupflow.config",
        "backupflow.catalog",
        "backupflow.targets",
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for module in first:
        script = (
            f"import {module}\n"
            "from backupflow.config import DatabaseSettings\n"
            "from backupflow.engines import SqliteEngine, open_engine\n"
            "from backupflow.engines.mssql import SqlServerEngine\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
        )
        assert done.returncode == 0, f"{module}: {done.stderr}"
