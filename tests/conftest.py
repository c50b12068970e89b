"""Shared fixtures.

A test that needs something this machine lacks calls :func:`need` (or is skipped some other
way).  Locally that is a skip; under CI (``CI=true``) every skip becomes a failure, so
nothing goes silently untested.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupflow.config import Settings, load_settings
from backupflow.keys import GeneratedKeys
from tests.support.keys import TEST_KEYS
from tests.support.s3 import MotoServer

UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip the calling test when ``condition`` is false (fail under CI)."""
    if not condition:
        if UNDER_CI:
            pytest.fail(f"required under CI: {reason}")
        pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if UNDER_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which is not allowed: {report.longrepr}"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own backupflow configuration."""
    for key in list(os.environ):
        if key.startswith("BACKUPFLOW_"):
            monkeypatch.delenv(key)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials for moto; nothing may reach a real AWS account."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def _shared_moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_server(aws_env: None, _shared_moto_server: MotoServer) -> MotoServer:
    """moto's S3 HTTP server on a loopback port, shared by the session.  moto keeps its state
    per process, so tests use bucket names of their own."""
    return _shared_moto_server


@pytest.fixture(scope="session")
def repo_keys() -> GeneratedKeys:
    """One set of repository keys for the whole test session."""
    return TEST_KEYS


def key_settings(keys: GeneratedKeys) -> dict[str, Any]:
    """The ``keys`` settings for a set of generated keys (every part of it)."""
    return {
        "recipients": [keys.recipient],
        "identities": keys.identity,
        "signing_key": keys.signing_key,
        "verify_keys": [keys.verify_key],
    }


@pytest.fixture
def settings(tmp_path: Path, repo_keys: GeneratedKeys) -> Settings:
    """Settings that keep every file of a test inside its tmp_path, with the session's keys."""
    return load_settings(
        crypto=key_settings(repo_keys),
        repository={
            "primary": {"url": str(tmp_path / "backups")},
            "secondary": {"url": str(tmp_path / "secondary")},
            "dr": {"url": str(tmp_path / "dr")},
        },
        database={"name": "gantt", "sqlite_path": tmp_path / "app" / "gantt.db"},
        backup_log=tmp_path / "log" / "backup.log",
        staging_dir=tmp_path / "staging",
        orphan_grace_minutes=60,
    )


# -- the live SQL Server suite ---------------------------------------------------------------
# It is deselected from ``make test`` (``-m 'not mssql'`` in pyproject.toml: no SQL Server can
# run on the development machines).  Deselected tests are not reported as skipped, so the
# summary says that they did not run; a note, never a failure, also under ``CI=true``
# (``make test-mssql`` runs them where a server is).  This lives in the top conftest because
# under pytest-xdist only the workers collect tests/live; the controller prints the summary.

_deselected_mssql: list[str] = []


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected_mssql.extend(item.nodeid for item in items if item.get_closest_marker("mssql"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    excluded = "not mssql" in (terminalreporter.config.option.markexpr or "")
    if _deselected_mssql or excluded:
        count = f"{len(_deselected_mssql)} tests deselected" if _deselected_mssql else "deselected"
        terminalreporter.write_line(
            f"SQL Server live suite: not run (no server; {count}, "
            "run make test-mssql with BACKUPFLOW_TEST_MSSQL_DSN set)"
        )
