"""The diff deployment on an engine without differential backups (PostgreSQL): the run
takes nothing, ends Completed and says why in its log, its artifact, the backup log and the
CLI; an engine with differentials (SQLite) keeps taking them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from prefect.artifacts import Artifact

from backupflow.backuplog import BackupLog
from backupflow.catalog import Catalog
from backupflow.config import Settings, use_settings
from backupflow.engines import Capabilities, Engine, SqliteEngine
from backupflow.models import BackupKind, Category
from backupflow.storage import open_tiers
from flows.backup_database import backup_database

SKIPPED = (
    "PostgreSQL has no differential backups; nothing was taken: the WAL archive and the "
    "hourly log backups cover the time since the full"
)


class NoDifferentials(SqliteEngine):
    """SQLite files, but the capabilities of an engine that has no differential backups."""

    name = "postgres"
    capabilities = Capabilities(differential=False, log=True, point_in_time="exact")


@pytest.fixture
def no_diff(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    live = settings.database.sqlite_path
    live.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(live) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(500)])
    conn.close()

    def open_engine(s: Settings) -> Engine:
        return NoDifferentials(s.database.sqlite_path, chunk_bytes=s.pipeline.chunk_bytes)

    monkeypatch.setattr("flows.backup_database.open_engine", open_engine)
    monkeypatch.setattr("backupflow.engines.open_engine", open_engine)
    monkeypatch.setattr("flows.backup_health.open_engine", open_engine)
    return settings


def _kinds(settings: Settings) -> list[str]:
    tier = open_tiers(settings)[0]
    entries, _ = Catalog(tier.storage, tier.keyring).listing(Category.DATABASE, "gantt")
    return [entry.kind.value for entry in entries]


def test_a_diff_run_on_an_engine_without_differentials_is_completed_and_says_why(
    no_diff: Settings,
) -> None:
    with use_settings(no_diff):
        backup_database(kind=BackupKind.FULL)
        state = backup_database(kind=BackupKind.DIFF, return_state=True)
    assert state.is_completed()
    assert state.result() == []
    assert _kinds(no_diff) == ["full"]  # nothing taken, nothing promoted to a full
    artifact = Artifact.get("backup-database-gantt-diff")
    assert artifact is not None
    assert SKIPPED in str(artifact.data)
    skipped = [r for r in BackupLog(no_diff.backup_log).read() if r["event"] == "backup-skipped"]
    assert [(r["kind"], r["database"], r["message"]) for r in skipped] == [
        ("diff", "gantt", SKIPPED)
    ]
    # The review counts backups taken: a skipped one is not among them.
    taken = [r for r in BackupLog(no_diff.backup_log).read() if r["event"] == "backup"]
    assert [r["kind"] for r in taken] == ["full"]


def test_the_cli_says_why_nothing_was_taken(
    no_diff: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from backupflow_app import cli

    monkeypatch.setattr(cli, "cli_settings", lambda: no_diff)
    cli.backup_database_cmd(kind=BackupKind.DIFF)
    out = " ".join(capsys.readouterr().out.split())
    assert f"diff backup skipped: {SKIPPED}." in out
    assert _kinds(no_diff) == []  # not even promoted to a full: the full job takes those


def test_sqlite_keeps_its_differentials(settings: Settings, tmp_path: Path) -> None:
    live = settings.database.sqlite_path
    live.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(live) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    conn.close()
    with use_settings(settings):
        backup_database(kind=BackupKind.FULL)
        diff = backup_database(kind=BackupKind.DIFF)
    assert [m.kind for m in diff] == [BackupKind.DIFF]
    assert _kinds(settings) == ["full", "diff"]


def test_health_has_no_diff_row_for_an_engine_without_differentials(no_diff: Settings) -> None:
    from flows.backup_health import backup_health

    with use_settings(no_diff):
        backup_database(kind=BackupKind.FULL)
        backup_health(return_state=True)
    artifact = Artifact.get("backup-health")
    assert artifact is not None
    table = str(artifact.data)
    assert "| database_full |" in table and "| database_log |" in table
    assert "database_diff" not in table
