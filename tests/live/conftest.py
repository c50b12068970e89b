"""The live SQL Server suite is deselected from ``make test`` (``-m 'not mssql'`` in
pyproject.toml: no SQL Server can run on the development machines).  Deselected tests are
not reported as skipped, so this says in the summary that they did not run; it is a note,
never a failure, also under ``CI=true`` (``make test-mssql`` runs them where a server is).
"""

from __future__ import annotations

import pytest

_deselected: list[str] = []


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.extend(item.nodeid for item in items if item.get_closest_marker("mssql"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Under pytest-xdist the workers collect, so the controller sees no deselection: it
    # reads the marker expression instead.
    excluded = "not mssql" in (terminalreporter.config.option.markexpr or "")
    if _deselected or excluded:
        count = f"{len(_deselected)} tests deselected" if _deselected else "deselected"
        terminalreporter.write_line(
            f"SQL Server live suite: not run (no server; {count}, "
            "run make test-mssql with BACKUPFLOW_TEST_MSSQL_DSN set)"
        )
