"""The DR drill, the health check and the review under the Prefect harness."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client

from backupflow.config import DrillSettings, Settings, use_settings
from backupflow.models import BackupKind
from backupflow.objectives import HealthState
from flows.backup_database import backup_database
from flows.backup_health import StaleBackupsError, backup_health
from flows.backup_review import backup_review
from flows.dr_drill import ObjectiveMissedError, dr_drill


def _seed(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO tasks (name) VALUES (?)", [(f"t{i}",) for i in range(300)])
    conn.close()


def test_drill_restores_from_dr_alone_and_appends_its_figures(settings: Settings) -> None:
    _seed(settings.database.sqlite_path)
    with use_settings(settings):
        backup_database(kind=BackupKind.FULL)
        first = dr_drill()
        second = dr_drill(keep=True)
    assert first.result.passed and first.smoke == {"tasks": 300}
    assert not first.target.exists()  # dropped
    assert second.target.exists()  # kept
    artifact = Artifact.get("dr-drill-gantt")
    assert artifact is not None
    rows = json.loads(str(artifact.data))
    assert len(rows) >= 2 and rows[-1]["tier"] == "dr" and rows[-1]["result"] == "pass"
    summary = Artifact.get("dr-drill-gantt-summary")
    assert summary is not None and "RTO" in str(summary.data)


def test_a_missed_objective_fails_the_drill(settings: Settings) -> None:
    _seed(settings.database.sqlite_path)
    strict = settings.model_copy(update={"drill": DrillSettings(rto_hours=4, rpo_hours=1e-6)})
    with use_settings(strict):
        backup_database(kind=BackupKind.FULL)
        with pytest.raises(ObjectiveMissedError, match="RPO"):
            dr_drill()


def test_health_fails_when_jobs_are_stale_and_the_review_reports(settings: Settings) -> None:
    _seed(settings.database.sqlite_path)
    with use_settings(settings):
        backup_database(kind=BackupKind.FULL)
        with pytest.raises(StaleBackupsError, match="config in primary"):
            backup_health()  # no file backups at all yet
        markdown = backup_review()
    health = Artifact.get("backup-health")
    assert health is not None
    text = str(health.data)
    assert "| ok | database_full | primary |" in text and "| **never** | config | primary |" in text
    assert "(- old)" not in text
    assert "| database/full | 1 | 0 |" in markdown
    assert "database/gantt in dr:" in markdown


def _change(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany("INSERT INTO tasks (name) VALUES (?)", [(f"n{i}",) for i in range(rows)])
    conn.close()


def test_health_flags_a_lost_middle_backup_as_an_incomplete_chain(
    settings: Settings, tmp_path: Path
) -> None:
    live = settings.database.sqlite_path
    _seed(live)
    with use_settings(settings):
        backup_database(kind=BackupKind.FULL)
        _change(live, 10)
        middle = backup_database(kind=BackupKind.LOG)[0].id
        _change(live, 10)
        last = backup_database(kind=BackupKind.LOG)[0].id
        for tier in ("backups", "secondary"):  # lost in two tiers; DR still holds it
            [manifest] = (tmp_path / tier).rglob(f"*_{middle}_*")
            manifest.unlink()
        state = backup_health(return_state=True)
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert (
        f"database_log in primary: incomplete chain (log {last} of " in message
        and f"lacks its parent {middle}, which only tier(s) dr hold" in message
    ), message
    assert "database_log in dr" not in message  # whole there
    health = Artifact.get("backup-health")
    assert health is not None
    text = str(health.data)
    incomplete = f"**{HealthState.INCOMPLETE_CHAIN.value}**"
    assert f"| {incomplete} | database_log | primary |" in text
    assert f"| {incomplete} | database_log | secondary |" in text
    assert "| ok | database_log | dr |" in text
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)  # type: ignore[arg-type]
    # Named for its start in the settings' timezone, never at random.
    assert re.fullmatch(r"backup-health-\d{4}-\d\d-\d\dT\d\d:\d\d\+09:00", run.name), run.name


ODD_TABLES = ['odd"name', "a]b", "it's", "[bracket]", "select", "x; DROP TABLE tasks; --", "é 表"]


def test_drill_smoke_query_quotes_odd_table_names(settings: Settings) -> None:
    """Class 11: a table named "odd""name" broke the drill's smoke query."""
    _seed(settings.database.sqlite_path)
    conn = sqlite3.connect(settings.database.sqlite_path)
    with conn:
        for rows, table in enumerate(ODD_TABLES, start=1):
            quoted = '"' + table.replace('"', '""') + '"'
            conn.execute(f"CREATE TABLE {quoted} (v INTEGER)")
            conn.executemany(f"INSERT INTO {quoted} VALUES (?)", [(i,) for i in range(rows)])
    conn.close()
    with use_settings(settings):
        backup_database(kind=BackupKind.FULL)
        report = dr_drill()
    expected = {table: rows for rows, table in enumerate(ODD_TABLES, start=1)}
    assert report.smoke == {"tasks": 300, **expected}
    assert report.result.passed
    summary = Artifact.get("dr-drill-gantt-summary")
    assert summary is not None and "it's 3 rows" in str(summary.data)
