"""The DR drill, the health check and the review under the Prefect harness."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client

from backupflow.config import DrillSettings, Settings, use_settings
from backupflow.errors import NoBackupError, ParameterError
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


def _history(since: int = 0, database: str = "gantt") -> list[dict[str, object]]:
    """The drill history as the Prefect API returns it, from row ``since`` on (the harness
    server is shared by the session, so earlier tests' drills are in it too)."""
    artifact = Artifact.get(f"dr-drill-{database}")
    rows: list[dict[str, object]] = [] if artifact is None else json.loads(str(artifact.data))
    return rows[since:]


def _summary(database: str = "gantt") -> str:
    summary = Artifact.get(f"dr-drill-{database}-summary")
    assert summary is not None
    return str(summary.data)


LEADING = ["result", "rto_minutes", "rpo_minutes", "target", "restore_point"]


def test_drill_restores_from_dr_alone_and_appends_its_figures(settings: Settings) -> None:
    before = len(_history())
    _seed(settings.database.sqlite_path)
    with use_settings(settings):
        backup_database(kind=BackupKind.FULL)
        first = dr_drill()
        second = dr_drill(keep=True)
    assert first.result.passed and first.smoke == {"tasks": 300}
    assert not first.target.exists()  # dropped
    assert second.target.exists()  # kept
    rows = _history(before)
    assert len(rows) == 2 and [r["result"] for r in rows] == ["passed", "passed"]
    row = rows[-1]
    # what the UI shows without scrolling: result, RTO, RPO, target, restore point; chain last
    assert list(row)[:5] == LEADING and list(row)[-1] == "chain"
    assert row["tier"] == "dr" and row["target"] == "latest" and row["reason"] == "—"
    assert row["chain"] == f"{second.chain[0]} (1 backup)"
    # times in the settings' timezone with the offset, and in UTC
    assert "+09:00 (" in str(row["restore_point"]) and "UTC)" in str(row["restore_point"])
    # RPO for the latest state: the run's start minus the restore point
    expected = (second.result.started - second.result.restore_point).total_seconds() / 60
    assert row["rpo_minutes"] == round(expected, 2)
    text = _summary()
    assert text.index("result") < text.index("RTO") < text.index("RPO") < text.index("chain")
    assert "passed" in text and "•" not in text


def test_a_drill_to_a_past_time_records_the_target_and_its_rpo(settings: Settings) -> None:
    before = len(_history())
    _seed(settings.database.sqlite_path)
    with use_settings(settings):
        full = backup_database(kind=BackupKind.FULL)[0]
        target = full.restore_point + timedelta(seconds=3)
        time.sleep(3.5)
        report = dr_drill(target_time=target.astimezone(ZoneInfo("Asia/Seoul")))
    assert report.result.restore_point == full.restore_point
    # RPO for a time target: the target minus the restore point, not the time since
    assert report.result.rpo == timedelta(seconds=3)
    row = _history(before)[-1]
    assert row["rpo_minutes"] == 0.05 and row["result"] == "passed"
    assert str(row["target"]).startswith(
        f"{target.astimezone(ZoneInfo('Asia/Seoul')):%Y-%m-%d %H:%M:%S}+09:00"
    )


def test_a_missed_objective_fails_the_drill_and_is_recorded(settings: Settings) -> None:
    before = len(_history())
    _seed(settings.database.sqlite_path)
    strict = settings.model_copy(update={"drill": DrillSettings(rto_hours=4, rpo_hours=1e-6)})
    with use_settings(strict):
        backup_database(kind=BackupKind.FULL)
        with pytest.raises(ObjectiveMissedError, match="RPO"):
            dr_drill()
    [row] = _history(before)
    assert row["result"] == "missed objective" and "RPO" in str(row["reason"])
    assert row["restore_point"] != "—" and row["rpo_objective_minutes"] == 0.0
    assert "missed objective" in _summary()


def test_a_failed_drill_is_recorded_with_its_reason_then_a_pass_replaces_the_summary(
    settings: Settings,
) -> None:
    before = len(_history())
    _seed(settings.database.sqlite_path)
    with use_settings(settings):
        with pytest.raises(NoBackupError) as failure:
            dr_drill()  # nothing backed up yet
        [failed] = _history(before)
        assert failed["result"] == "failed" and failed["reason"] == str(failure.value)
        assert [failed[c] for c in ("rto_minutes", "rpo_minutes", "restore_point")] == ["—"] * 3
        assert failed["target"] == "latest" and failed["tier"] == "dr"
        summary = _summary()
        assert summary.startswith("# DR drill of gantt from the dr tier: failed\n")
        assert str(failure.value) in summary
        backup_database(kind=BackupKind.FULL)
        dr_drill()
    assert [r["result"] for r in _history(before)] == ["failed", "passed"]
    assert _summary().startswith("# DR drill of gantt from the dr tier: passed\n")


def test_a_refused_target_time_is_a_failed_drill_on_record(settings: Settings) -> None:
    before = len(_history())
    _seed(settings.database.sqlite_path)
    future = datetime.now(UTC) + timedelta(days=1)
    with use_settings(settings):
        backup_database(kind=BackupKind.FULL)
        with pytest.raises(ParameterError, match="target_time"):
            dr_drill(target_time=future)
    [row] = _history(before)
    assert row["result"] == "failed" and "target_time" in str(row["reason"])
    assert row["target"] != "latest"


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
    # read by an operator in Seoul: the settings' timezone first, then UTC
    assert text.startswith("# Backup health at ") and "+09:00 (" in text.splitlines()[0]
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
    assert "it's 3 rows" in _summary()
