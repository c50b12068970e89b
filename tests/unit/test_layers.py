"""Package boundaries: layers point down, Prefect enters the core through one adapter, and
modules stay small.

Every module is parsed (never imported), so an import inside a function counts as much as
one at the top.
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
APP = REPO / "src" / "backupflow_app"
ADAPTER = CORE / "prefect_adapter.py"
MAX_LINES = 400
#: Modules over the bound that their owners are splitting now (issue 14); each must still be
#: over it: a module that has been split must leave this list.


def modules(*roots: Path) -> list[Path]:
    return sorted(path for root in roots for path in root.rglob("*.py"))


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every import in ``path``, wherever it stands."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def offences(paths: list[Path], banned: set[str]) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line} imports {package}"
        for path in paths
        for line, package in imported(path)
        if package in banned
    ]


def test_the_core_never_imports_the_layers_above_it() -> None:
    assert modules(CORE), "no core modules found"
    assert offences(modules(CORE), {"flows", "tasks", "backupflow_app", "deployments"}) == []


def test_prefect_enters_the_core_only_through_its_adapter() -> None:
    others = [path for path in modules(CORE) if path != ADAPTER]
    assert offences(others, {"prefect", "prefect_aws"}) == []
    assert {package for _, package in imported(ADAPTER)} >= {"prefect", "prefect_aws"}


def test_only_the_app_layer_imports_the_flows() -> None:
    below = modules(CORE, REPO / "tasks")
    assert offences(below, {"flows"}) == []
    assert offences(modules(REPO / "flows"), {"backupflow_app"}) == []
    assert offences(modules(REPO / "tasks"), {"backupflow_app"}) == []


def test_the_checks_see_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "sneaky.py"
    module.write_text("def f():\n    from prefect.blocks.system import Secret\n    import flows\n")
    assert [package for _, package in imported(module)] == ["prefect", "flows"]


def size_reason(path: Path) -> str | None:
    """The ``Size:`` line of the module docstring, if it gives one."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return next((line for line in doc.splitlines() if line.startswith("Size:")), None)


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


SIZED = modules(CORE, APP, REPO / "flows", REPO / "tasks")


def test_no_module_is_over_the_bound_without_a_reason() -> None:
    over = [
        f"{path.relative_to(REPO)} has {line_count(path)} lines"
        for path in SIZED
        if line_count(path) > MAX_LINES and size_reason(path) is None
    ]
    assert over == []


def test_importing_the_core_does_not_import_prefect(tmp_path: Path) -> None:
    names = sorted(
        ".".join(path.relative_to(CORE.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in modules(CORE)
    )
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'prefect_aws')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
