"""The one backup run and the one restore run: the steps every caller goes through.

The flows run these same functions with Prefect tasks as steps (tests/flows checks the task
runs a flow run shows); here a recording runner shows the order, and what it proves.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from backupflow import steps as step_names
from backupflow.backup_run import DatabaseSubject, FileSetSubject, run_backup, run_database_backups
from backupflow.catalog import Catalog
from backupflow.config import FileSetSettings, Settings
from backupflow.engines import open_engine
from backupflow.errors import BackupflowError, TierError
from backupflow.models import BackupKind, Category
from backupflow.restore_run import run_restore
from backupflow.series import all_series, databases
from backupflow.storage import open_tiers
from tests.support.chain import content_digest

T = TypeVar("T")


@dataclass
class Recording:
    """A step runner that records every step, in order, then runs it."""

    names: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("test"))

    def run(self, name: str, label: str, fn: Callable[[], T], *, hold: str | None = None) -> T:
        self.names.append(name)
        self.labels.append(label)
        return fn()


def _db(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"row{i}",) for i in range(rows)])
    conn.close()


def test_a_backup_runs_its_steps_in_order_and_writes_each_manifest_after_its_data(
    settings: Settings,
) -> None:
    _db(settings.database.sqlite_path, 100)
    recording = Recording()
    outcome = run_backup(
        DatabaseSubject(open_engine(settings), settings),
        open_tiers(settings),
        recording,
        kind=BackupKind.FULL,
    )
    s = step_names
    assert recording.names == [
        s.REPLICATE,
        s.CLEAN,
        s.CLEAN,
        s.CLEAN,
        s.DECIDE,
        s.DUMP,
        s.STORE,
        s.MANIFEST,
        s.COPY,
        s.MANIFEST,
        s.COPY,
        s.MANIFEST,
        s.LOG,
        s.PRUNE,
        s.PRUNE,
        s.PRUNE,
    ]
    backup_id = outcome.manifest.id
    assert recording.labels[6:12] == [
        f"compress-and-store-{backup_id}-primary",
        f"write-manifest-{backup_id}-primary",
        f"copy-{backup_id}-primary-to-secondary",
        f"write-manifest-{backup_id}-secondary",
        f"copy-{backup_id}-primary-to-dr",
        f"write-manifest-{backup_id}-dr",
    ]
    assert outcome.stored_on == ["primary", "secondary", "dr"] and outcome.complete
    for tier in open_tiers(settings):
        assert [
            e.id for e in Catalog(tier.storage, tier.keyring).entries(Category.DATABASE, "gantt")
        ] == [backup_id]


def test_a_tier_that_fails_is_named_the_others_hold_the_backup_and_nothing_is_pruned(
    settings: Settings, tmp_path: Path
) -> None:
    _db(settings.database.sqlite_path, 50)
    blocked = tmp_path / "secondary"
    blocked.write_text("not a folder")  # the secondary tier cannot be written
    recording = Recording()
    published = []
    with pytest.raises(TierError, match="secondary") as caught:
        run_backup(
            DatabaseSubject(open_engine(settings), settings),
            open_tiers(settings),
            recording,
            kind=BackupKind.FULL,
            on_stored=published.append,
        )
    assert "nothing was pruned" in str(caught.value)
    assert step_names.PRUNE not in recording.names
    assert [o.stored_on for o in published] == [["primary", "dr"]]


def test_the_restore_run_plans_then_restores_the_same_data(
    settings: Settings, tmp_path: Path
) -> None:
    live = settings.database.sqlite_path
    _db(live, 200)
    run_backup(DatabaseSubject(open_engine(settings), settings), open_tiers(settings), Recording())
    _db(live, 30)
    run_backup(
        DatabaseSubject(open_engine(settings), settings),
        open_tiers(settings),
        Recording(),
        kind=BackupKind.LOG,
    )
    recording = Recording()
    report = run_restore(
        open_engine(settings),
        open_tiers(settings, ("dr",)),
        "gantt",
        recording,
        target_time=None,
        into=tmp_path / "restored.db",
    )
    assert recording.names == [step_names.PLAN, step_names.RESTORE]
    assert [m.kind for m in report.plan.manifests] == [BackupKind.FULL, BackupKind.LOG]
    assert report.outcome is not None and set(report.outcome.tiers_used.values()) == {"dr"}
    assert content_digest(tmp_path / "restored.db") == content_digest(live)
    dry = run_restore(
        open_engine(settings),
        open_tiers(settings),
        "gantt",
        Recording(),
        target_time=None,
        into=tmp_path / "not-written.db",
        dry_run=True,
    )
    assert dry.outcome is None and not (tmp_path / "not-written.db").exists()


def test_every_database_the_settings_name_is_backed_up_and_is_a_series(
    settings: Settings, tmp_path: Path
) -> None:
    """``database.databases`` is decided once: the backup run, and every series-wide job
    (health, prune, verify, replicate, drill), see the same list."""
    settings = settings.model_copy(
        update={"database": settings.database.model_copy(update={"databases": ["gantt", "other"]})}
    )

    def engine_for(one: Settings):  # type: ignore[no-untyped-def]
        path = tmp_path / "app" / f"{one.database.name}.db"
        _db(path, 10)
        return open_engine(
            one.model_copy(
                update={"database": one.database.model_copy(update={"sqlite_path": path})}
            )
        )

    outcomes = run_database_backups(
        settings, Recording(), kind=BackupKind.FULL, open_engine=engine_for, open_tiers=open_tiers
    )
    assert [o.manifest.database for o in outcomes] == ["gantt", "other"]
    assert databases(settings) == (["gantt", "other"], 0)
    assert [(s.category, s.name) for s in all_series(settings)] == [
        (Category.DATABASE, "gantt"),
        (Category.DATABASE, "other"),
        (Category.CONFIG, "config"),
        (Category.LOGS, "logs"),
        (Category.UPLOADS, "uploads"),
    ]


def test_a_file_set_goes_through_the_same_run(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "api"
    (root / "uploads").mkdir(parents=True)
    (root / "uploads" / "a.bin").write_bytes(b"a" * 1000)
    settings = settings.model_copy(
        update={
            "files": settings.files.model_copy(
                update={"uploads": FileSetSettings(root=root, include=["uploads/**"])}
            )
        }
    )
    recording = Recording()
    outcome = run_backup(FileSetSubject("uploads", settings), open_tiers(settings), recording)
    assert recording.names.count(step_names.STORE) == 1
    assert recording.names.count(step_names.MANIFEST) == 3
    assert outcome.manifest.category is Category.UPLOADS and outcome.complete
    report = run_restore(
        FileSetSubject("uploads", settings).engine,
        open_tiers(settings, ("secondary",)),
        "uploads",
        Recording(),
        target_time=None,
        into=tmp_path / "out",
        category=Category.UPLOADS,
    )
    assert report.outcome is not None
    assert (tmp_path / "out" / "uploads" / "a.bin").read_bytes() == b"a" * 1000


def test_a_failed_backup_is_logged_once_and_leaves_no_staging(settings: Settings) -> None:
    recording = Recording()  # no database file: the source is missing
    with pytest.raises(BackupflowError):
        run_backup(
            DatabaseSubject(open_engine(settings), settings), open_tiers(settings), recording
        )
    lines = settings.backup_log.read_text().splitlines()
    assert len(lines) == 1 and '"status": "failed"' in lines[0]
    assert not any(settings.staging_dir.iterdir()) if settings.staging_dir.exists() else True
