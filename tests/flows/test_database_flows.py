"""The backup-database and restore-database flows under a real (temporary) Prefect server."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort

from backupflow.backuplog import BackupLog
from backupflow.catalog import Catalog
from backupflow.config import Settings, use_settings
from backupflow.errors import NoBackupError, ParameterError, TargetNotReachedError
from backupflow.models import BackupKind, Category
from backupflow.storage import open_primary
from flows.backup_database import backup_database
from flows.restore_database import restore_database
from tests.support.chain import content_digest, snapshot_copy
from tests.support.keys import KEYRING


def _seed(path: Path, rows: int = 3_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT, progress REAL)")
        conn.executemany(
            "INSERT INTO tasks (name, progress) VALUES (?, ?)",
            [(f"task {i}", 0.0) for i in range(rows)],
        )
    conn.close()


def _touch(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(sql)
    conn.close()


def test_full_diff_log_then_point_in_time_restore(settings: Settings, tmp_path: Path) -> None:
    live = settings.database.sqlite_path
    _seed(live)
    with use_settings(settings):
        full = backup_database(kind=BackupKind.FULL)[0]
        _touch(live, "UPDATE tasks SET progress = 0.5 WHERE id < 100")
        diff = backup_database(kind=BackupKind.DIFF)[0]
        at_diff = snapshot_copy(live, tmp_path / "at_diff.db")
        _touch(live, "DELETE FROM tasks WHERE id > 2000")
        log = backup_database(kind=BackupKind.LOG)[0]

        assert (diff.parent_id, log.parent_id) == (full.id, diff.id)
        between = diff.restore_point + (log.restore_point - diff.restore_point) / 2
        restored = live.parent  # restore targets lie under an allowed root
        report = restore_database(target_time=between, into=str(restored / "middle.db"))
        assert report.outcome is not None
        assert [s.manifest.id for s in report.plan.steps] == [full.id, diff.id]
        assert content_digest(restored / "middle.db") == content_digest(at_diff)
        assert report.plan.notes and "earlier than the requested" in report.plan.notes[0]

        latest = restore_database(into=str(restored / "latest.db"))
        assert latest.plan.last.id == log.id
        assert content_digest(restored / "latest.db") == content_digest(live)

    events = BackupLog(settings.backup_log).read()
    assert [(e["event"], e["status"], e.get("kind")) for e in events] == [
        ("backup", "completed", "full"),
        ("backup", "completed", "diff"),
        ("backup", "completed", "log"),
        ("restore", "completed", None),
        ("restore", "completed", None),
    ]
    assert events[0]["message"].startswith("Database backup completed at")
    artifact = Artifact.get("backup-database-gantt-log")
    assert artifact is not None
    assert json.loads(str(artifact.data))[0]["id"] == log.id
    assert "+09:00 (" in json.loads(str(artifact.data))[0]["restore_point"]
    restored = Artifact.get("restore-gantt")
    assert restored is not None
    assert json.loads(str(restored.data))[0]["backups_applied"] == 3


def test_log_without_full_is_promoted_and_says_so(settings: Settings) -> None:
    _seed(settings.database.sqlite_path)
    with use_settings(settings):
        manifest = backup_database(kind=BackupKind.LOG)[0]
    assert manifest.kind is BackupKind.FULL
    assert "instead of the requested log backup" in manifest.notes[0]


def test_missing_full_can_be_a_failure_that_stores_nothing(settings: Settings) -> None:
    _seed(settings.database.sqlite_path)
    strict = settings.model_copy(
        update={"database": settings.database.model_copy(update={"missing_full": "fail"})}
    )
    with use_settings(strict), pytest.raises(NoBackupError, match="no full backup"):
        backup_database(kind=BackupKind.DIFF)[0]
    assert not list(open_primary(strict).list(""))
    [event] = BackupLog(strict.backup_log).read()
    assert (event["status"], event["kind"]) == ("failed", "diff")
    assert "no full backup" in event["error"]


def test_interrupted_backup_is_never_listed_and_is_cleaned_next_time(settings: Settings) -> None:
    _seed(settings.database.sqlite_path)
    primary = Path(settings.repository.primary.url)
    with use_settings(settings):
        good = backup_database(kind=BackupKind.FULL)[0]
    day = primary / "database" / "gantt" / datetime.now(UTC).strftime("%Y-%m-%d")
    orphan = day / "20261126T000000Z-full-abcdef.data.zst"  # data written, manifest never was
    orphan.write_bytes(b"half a backup")
    partial = day / ".tmp-20261126T000000Z-full-abcdef.pages.zst.1234"
    partial.write_bytes(b"interrupted write")
    old = time.time() - 2 * 3600
    for path in (orphan, partial):
        os.utime(path, (old, old))
    scan = Catalog(open_primary(settings), KEYRING).scan(Category.DATABASE, "gantt")
    assert [m.id for m in scan.manifests] == [good.id]

    with use_settings(settings):
        backup_database(kind=BackupKind.LOG)[0]
    assert not orphan.exists() and not partial.exists()
    scan = Catalog(open_primary(settings), KEYRING).scan(Category.DATABASE, "gantt")
    assert len(scan.manifests) == 2
    assert (primary / good.object("data").key).exists()


def test_restore_refuses_future_and_prehistoric_targets(settings: Settings, tmp_path: Path) -> None:
    _seed(settings.database.sqlite_path)
    with use_settings(settings):
        full = backup_database(kind=BackupKind.FULL)[0]
        with pytest.raises(ParameterError, match=r"target_time .* is .*later than now"):
            restore_database(target_time=datetime.now(UTC) + timedelta(hours=1))
        with pytest.raises(NoBackupError, match="earliest restore point"):
            restore_database(target_time=full.restore_point - timedelta(days=1))
    assert not list(tmp_path.glob("app/*.restored-*"))


def test_naive_target_time_is_read_in_the_settings_timezone(settings: Settings) -> None:
    _seed(settings.database.sqlite_path)
    with use_settings(settings):
        full = backup_database(kind=BackupKind.FULL)[0]
        seoul = full.restore_point.astimezone(ZoneInfo("Asia/Seoul"))  # read as UTC: +9 h, future
        report = restore_database(target_time=seoul.replace(tzinfo=None), dry_run=True)
    assert report.plan.last.id == full.id
    assert report.outcome is None
    assert not report.target.exists()  # a dry run writes nothing


def test_several_databases_are_backed_up_in_one_run(settings: Settings) -> None:
    _seed(settings.database.sqlite_path)
    several = settings.model_copy(
        update={"database": settings.database.model_copy(update={"databases": ["gantt", "audit"]})}
    )
    with use_settings(several):
        manifests = backup_database(kind=BackupKind.FULL)
    assert [m.database for m in manifests] == ["gantt", "audit"]
    catalog = Catalog(open_primary(several), KEYRING)
    for name in ("gantt", "audit"):
        assert len(catalog.entries(Category.DATABASE, name)) == 1


def test_the_flow_shows_the_core_runs_steps_as_named_task_runs(settings: Settings) -> None:
    """The flow runs the core's one backup run; each step is a task run in the UI."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    _seed(settings.database.sqlite_path, 50)
    with use_settings(settings):
        state = backup_database(kind=BackupKind.FULL, return_state=True)
    manifest = state.result()[0]
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    expected = {
        f"decide-{BackupKind.FULL.value}-backup",
        f"dump-{manifest.id}",
        f"compress-and-store-{manifest.id}-primary",
        f"write-manifest-{manifest.id}-primary",
        f"copy-{manifest.id}-primary-to-secondary",
        f"copy-{manifest.id}-primary-to-dr",
        f"write-manifest-{manifest.id}-dr",
        "prune-gantt-primary",
    }
    # Task runs reach the API as events, a moment after the flow returns.
    deadline = time.monotonic() + 30
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        names = {run.name for run in runs}
        done = all(run.state is not None and run.state.is_completed() for run in runs)
        if (expected <= names and done) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert expected <= names, sorted(names)
    assert all(run.state is not None and run.state.is_completed() for run in runs)


def _latest_run(flow_name: str) -> FlowRun:
    """The newest run of ``flow_name`` as the Prefect API returns it."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
    assert runs, f"no {flow_name} run in the Prefect API"
    return runs[0]


def test_a_restore_to_a_past_time_reports_rto_and_rpo_as_defined(
    settings: Settings, tmp_path: Path
) -> None:
    """RPO of a past-time restore is the target minus the restore point (it was measured
    from now), RTO runs from the run's created start; the artifact leads with them."""
    live = settings.database.sqlite_path
    _seed(live, rows=50)
    seoul = ZoneInfo("Asia/Seoul")
    with use_settings(settings):
        full = backup_database(kind=BackupKind.FULL)[0]
        target = (full.restore_point + timedelta(seconds=1, milliseconds=500)).astimezone(seoul)
        time.sleep(3)  # "now" is well past the target: the old RPO was 3 s or more
        # After every backup: refused (nothing reaches it) unless the operator accepts
        with pytest.raises(TargetNotReachedError, match=r"lies after every backup of gantt"):
            restore_database(target_time=target, into=str(live.parent / "refused.db"))
        assert not (live.parent / "refused.db").exists()
        report = restore_database(
            target_time=target, into=str(live.parent / "past.db"), accept_earlier=True
        )
    assert report.outcome is not None and report.plan.restore_point == full.restore_point
    run = _latest_run("restore-database")
    assert run.name == f"restore-database-to-{target:%Y-%m-%dT%H:%M}+09:00"
    artifact = Artifact.get("restore-gantt")
    assert artifact is not None
    # The history, newest first: this restore, then the refused one with its reason.
    row, refused = json.loads(str(artifact.data))[:2]
    assert refused["result"] == "failed" and list(refused)[:2] == ["result", "reason"]
    assert "lies after every backup of gantt" in refused["reason"]
    assert "\n" not in refused["reason"] and len(refused["reason"]) <= 240
    assert list(row)[:6] == [
        "result", "reason", "rto_seconds", "rpo_seconds", "requested", "restore_point",
    ]  # fmt: skip
    assert list(row)[-1] == "chain" and row["chain"] == f"{full.id} (1 backup)"
    assert row["result"] == "restored and verified"
    assert row["rpo_seconds"] == 1.5
    assert run.expected_start_time is not None
    rto = report.outcome.finished_at - run.expected_start_time
    assert row["rto_seconds"] == round(rto.total_seconds(), 2)
    in_utc = target.astimezone(UTC)
    utc_part = f"{in_utc:%H:%M:%S}" if in_utc.date() == target.date() else f"{in_utc:%F %T}"
    assert row["requested"] == f"{target:%Y-%m-%d %H:%M:%S}+09:00 ({utc_part} UTC)"
    assert row["restore_point"].startswith(
        f"{full.restore_point.astimezone(seoul):%Y-%m-%d %H:%M:%S}+09:00"
    )
    assert row["kept_aside"] == "—" and "-" not in (row["problems"], row["kept_aside"])
