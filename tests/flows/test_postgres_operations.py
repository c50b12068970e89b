"""Operations on a PostgreSQL series through the flows, against one live archiving cluster
(its tiers on moto's S3 server): backups, the DR drill, health, verify, review and the
whole-system restore, each as an operator would run it under the Prefect harness.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.artifacts import Artifact

from backupflow.config import Settings, use_settings
from backupflow.models import BackupKind
from backupflow.storage import open_tiers
from backupflow.verify import VerificationFailedError
from flows.backup_database import backup_database
from flows.backup_files import backup_files
from flows.backup_health import backup_health
from flows.backup_review import backup_review
from flows.dr_drill import dr_drill
from flows.restore_system import restore_system
from flows.verify_backups import verify_backups
from tests.live.postgres_support import DB, LivePg, events_cluster, rows, start_restored
from tests.support.s3 import MotoServer
from tests.support.trees import make_api_tree


@pytest.fixture(scope="module")
def pg(_shared_moto_server: MotoServer) -> Iterator[LivePg]:
    with events_cluster(_shared_moto_server) as live:
        yield live


def _with_files(settings: Settings, api: Path, **database: Any) -> Settings:
    files = settings.files.model_copy(
        update={
            name: getattr(settings.files, name).model_copy(update={"root": api})
            for name in ("config", "logs", "uploads")
        }
        | {"post_restore_hook": []}
    )
    db = settings.database.model_copy(update=database)
    return settings.model_copy(update={"files": files, "database": db})


@pytest.fixture
def settings(pg: LivePg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for key in pg.env:
        monkeypatch.setenv(key, pg.env[key])
    api = tmp_path / "api"
    make_api_tree(api)
    yield _with_files(pg.settings(tmp_path), api)


def insert(pg: LivePg, first: int, count: int, note: str) -> None:
    with pg.cluster.connect() as conn:
        for i in range(first, first + count):
            conn.execute("INSERT INTO events (id, note) VALUES (%s, %s)", (i, f"{note}-{i}"))


def live_rows(pg: LivePg) -> list[tuple[Any, ...]]:
    with pg.cluster.connect() as conn:
        return rows(conn)


def _servers_under(folder: Path) -> set[str]:
    """The data folders (``-D``) of the PostgreSQL servers running under ``folder``."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[0].endswith("postgres") and "-D" in argv[:-1]:
            data = argv[argv.index("-D") + 1]
            if data.startswith(str(folder)):
                found.add(data)
    return found


def _drill_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(_artifact(f"dr-drill-{DB}"))
    return rows


def _artifact(key: str) -> str:
    artifact = Artifact.get(key)
    assert artifact is not None, key
    return str(artifact.data)


def test_backups_then_drill_health_verify_and_review(pg: LivePg, settings: Settings) -> None:
    insert(pg, 1, 100, "base")
    with use_settings(settings):
        [full] = backup_database(kind=BackupKind.FULL)
        insert(pg, 200, 30, "log")
        [log] = backup_database(kind=BackupKind.LOG)
        for file_set in ("config", "logs", "uploads"):
            backup_files(file_set=file_set)
        assert log.base_id == full.id and log.position["files"]
        before = sorted(p.name for p in pg.cluster.data.parent.iterdir())

        report = dr_drill(source="primary")
        assert report.result.passed and report.chain == (full.id, log.id)
        assert report.result.restore_point == log.restore_point
        # the smoke query counted the checked copy's rows before it was dropped
        assert report.smoke == {"postgres/public.events": len(live_rows(pg))}
        assert not report.target.exists()
        assert report.target.parent == pg.cluster.data.parent
        assert sorted(p.name for p in pg.cluster.data.parent.iterdir()) == before
        # no copy server left running beside the live one
        assert _servers_under(pg.root) == {str(pg.cluster.data)}
        drill = _artifact(f"dr-drill-{DB}-summary")
        assert "passed" in drill and "**RTO**" in drill and "**RPO**" in drill
        assert "postgres/public.events 130 rows" in drill
        [row] = [r for r in _drill_rows() if r["chain"].startswith(full.id)]
        assert row["result"] == "passed" and row["tier"] == "primary"
        assert row["rto_minutes"] == round(report.result.rto.total_seconds() / 60, 2)
        assert row["rpo_minutes"] == round(report.result.rpo.total_seconds() / 60, 2)
        assert row["tables_checked"] == 1
        print("drill figures:", row["rto_minutes"], row["rpo_minutes"])

        health = backup_health()
        assert {(r.job, r.state.value) for r in health} >= {
            ("database_full", "ok"),
            ("database_log", "ok"),
        }
        text = _artifact("backup-health")
        assert "| ok | database_full | primary |" in text
        assert "| ok | database_log | primary |" in text
        assert "database_diff" not in text
        # the archived WAL's own row per tier: its lag behind the first tier
        [wal] = [r for r in health if r.job == "database_wal"]
        assert wal.tier == "primary" and wal.state.value == "ok" and wal.newest is not None
        assert "| ok | database_wal | primary |" in text

        verified = verify_backups(read_data_percent=100)
        assert verified.findings == []
        [summary] = [s for s in verified.summaries if s.series == f"database/{DB}"]
        # every object of both backups read in full: base, its manifest, each WAL file and
        # its record (WAL archived after the log backup is listed but belongs to no backup)
        assert summary.backups == 2
        assert summary.sampled == 2 + 2 * len(log.position["files"]) <= summary.objects

        # A WAL segment the log lists is lost: verify names it, then it is put back.
        sysid = log.position["system_identifier"]
        segment = log.position["last"]
        (obj,) = [o for o in log.objects if o.role == f"wal:{sysid}/{segment}"]
        storage = open_tiers(settings)[0].storage
        with storage.open(obj.key) as handle:
            saved = handle.read()
        storage.delete(obj.key)
        try:
            with pytest.raises(VerificationFailedError):
                verify_backups(read_data_percent=0)
            [finding] = [f for f in json.loads(_artifact(f"verify-{DB}")) if f["kind"] != "summary"]
            assert finding["kind"] == "missing-object"
            lost = f"{obj.key} of backup {log.id} is missing"
            assert lost in finding["detail"]
        finally:
            storage.put(obj.key, [saved])

        markdown = backup_review()
        assert "| database/full | " in markdown and "| database/log | " in markdown
    assert pg.cluster.pid() is not None


def test_restore_system_builds_the_cluster_in_a_new_folder(
    pg: LivePg, settings: Settings, tmp_path: Path
) -> None:
    insert(pg, 5000, 50, "system")
    with use_settings(settings):
        backup_database(kind=BackupKind.FULL)
        insert(pg, 5100, 10, "system-log")
        backup_database(kind=BackupKind.LOG)
        for file_set in ("config", "uploads"):
            backup_files(file_set=file_set)
    expected = live_rows(pg)
    host = pg.new_folder("standby")
    standby = _with_files(settings, tmp_path / "standby-api", pg_data_dir=host / "data")
    with use_settings(standby):
        report = restore_system(source="primary")
    assert [s["result"] for s in report.steps] == ["ok"] * 3
    with start_restored(host / "data") as copy, copy.connect() as conn:
        assert rows(conn) == expected
    assert os.path.exists(tmp_path / "standby-api" / "config" / "app.json")
