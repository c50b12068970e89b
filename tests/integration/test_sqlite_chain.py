"""SQLite backup/restore round trips at many points in time across full, diff and log backups."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from backupflow.config import Settings
from backupflow.errors import (
    BackupflowError,
    IntegrityError,
    RestoreTargetError,
    SourceNotFoundError,
)
from backupflow.models import BackupKind
from tests.support.chain import content_digest, restore, snapshot_copy, take_backup


def _create(path: Path, rows: int, *, wal: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    with conn:
        conn.execute("CREATE TABLE workload (id INTEGER PRIMARY KEY, who TEXT, day TEXT, h REAL)")
        conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
        conn.executemany(
            "INSERT INTO workload (who, day, h) VALUES (?, ?, ?)",
            [(f"eng{i % 37}", f"2026-11-{i % 28 + 1:02d}", i % 9) for i in range(rows)],
        )
    conn.close()


def _mutate(path: Path, rng: random.Random) -> str:
    conn = sqlite3.connect(path)
    action = rng.choice(["insert", "update", "delete", "blob", "vacuum"])
    with conn:
        if action == "insert":
            conn.executemany(
                "INSERT INTO workload (who, day, h) VALUES (?, ?, ?)",
                [(f"new{rng.randrange(99)}", "2026-12-01", rng.random()) for _ in range(500)],
            )
        elif action == "update":
            conn.execute("UPDATE workload SET h = h + 1 WHERE id % ? = 0", (rng.randrange(2, 50),))
        elif action == "delete":
            conn.execute("DELETE FROM workload WHERE id % ? = 1", (rng.randrange(5, 30),))
        elif action == "blob":
            conn.execute("INSERT INTO blobs (data) VALUES (?)", (rng.randbytes(200_000),))
    if action == "vacuum":
        conn.execute("DELETE FROM blobs")
        conn.commit()
        conn.execute("VACUUM")  # shrinks the file: page count goes down
    conn.close()
    return action


@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
def test_restores_at_random_points_match_the_source(
    settings: Settings, tmp_path: Path, wal: bool
) -> None:
    rng = random.Random(20261126 + wal)
    live = settings.database.sqlite_path
    _create(live, 20_000, wal=wal)
    points = []  # (manifest, copy of the source at its restore point)
    kinds = [BackupKind.FULL] + [rng.choice([BackupKind.DIFF, BackupKind.LOG]) for _ in range(9)]
    kinds[5] = BackupKind.FULL  # a second chain
    for index, kind in enumerate(kinds):
        if index:
            _mutate(live, rng)
        manifest = take_backup(settings, kind)
        assert manifest.kind is kind
        points.append((manifest, snapshot_copy(live, tmp_path / "copies" / f"{index}.db")))

    first, last = points[0][0].restore_point, points[-1][0].restore_point
    span = (last - first).total_seconds()
    targets = [m.restore_point for m, _ in points]
    targets += [first + timedelta(seconds=rng.uniform(0, span)) for _ in range(8)]
    for n, target in enumerate(targets):
        expected = max(
            (p for p in points if p[0].restore_point <= target), key=lambda p: p[0].restore_point
        )
        plan, outcome = restore(settings, target, tmp_path / "restored" / f"{n}.db")
        assert plan.restore_point == expected[0].restore_point
        assert plan.last.id == expected[0].id
        assert plan.steps[0].manifest.kind is BackupKind.FULL
        assert content_digest(outcome.target) == content_digest(expected[1])
        restored_sha = hashlib.sha256(outcome.target.read_bytes()).hexdigest()
        assert restored_sha == expected[0].position["state_sha256"]

    plan, outcome = restore(settings, None, tmp_path / "restored" / "latest.db")
    assert plan.last.id == points[-1][0].id
    assert content_digest(outcome.target) == content_digest(live)


def test_log_stores_only_changed_pages(settings: Settings) -> None:
    live = settings.database.sqlite_path
    _create(live, 50_000)
    full = take_backup(settings, BackupKind.FULL)
    conn = sqlite3.connect(live)
    with conn:
        conn.execute("UPDATE workload SET h = 99 WHERE id = 1")
    conn.close()
    log = take_backup(settings, BackupKind.LOG)
    assert log.parent_id == full.id
    assert log.position["changed_pages"] <= 3
    assert log.object("data").raw_size < full.object("data").raw_size / 20


def test_diff_contains_everything_since_the_full(settings: Settings, tmp_path: Path) -> None:
    live = settings.database.sqlite_path
    _create(live, 5_000)
    full = take_backup(settings, BackupKind.FULL)
    for _ in range(3):
        conn = sqlite3.connect(live)
        with conn:
            conn.execute("INSERT INTO workload (who, day, h) VALUES ('x', '2026-12-02', 1)")
        conn.close()
        take_backup(settings, BackupKind.LOG)
    diff = take_backup(settings, BackupKind.DIFF)
    assert diff.parent_id == full.id and diff.base_id == full.id
    plan, outcome = restore(settings, None, tmp_path / "r.db")
    assert [s.manifest.id for s in plan.steps] == [full.id, diff.id]
    assert content_digest(outcome.target) == content_digest(live)


def test_missing_source_database_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        take_backup(settings, BackupKind.FULL)


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_corrupted_object_is_refused_and_nothing_is_written(
    settings: Settings, tmp_path: Path
) -> None:
    live = settings.database.sqlite_path
    _create(live, 5_000)
    full = take_backup(settings, BackupKind.FULL)
    for tier in ("backups", "secondary", "dr"):
        _flip(tmp_path / tier / full.object("data").key)
    target = tmp_path / "restored.db"
    with pytest.raises(IntegrityError, match=full.object("data").key):
        restore(settings, None, target)
    assert not target.exists()
    assert not list(target.parent.glob(".restored.db.restoring-*"))


def test_a_damaged_copy_falls_back_to_the_next_tier(settings: Settings, tmp_path: Path) -> None:
    live = settings.database.sqlite_path
    _create(live, 5_000)
    full = take_backup(settings, BackupKind.FULL)
    _flip(tmp_path / "backups" / full.object("data").key)
    _plan, outcome = restore(settings, None, tmp_path / "r.db")
    assert outcome.tiers_used == {full.id: "secondary"}
    assert "primary copy of backup" in outcome.problems[0]
    assert content_digest(outcome.target) == content_digest(live)


def test_missing_object_names_it(settings: Settings, tmp_path: Path) -> None:
    live = settings.database.sqlite_path
    _create(live, 1_000)
    take_backup(settings, BackupKind.FULL)
    log = take_backup(settings, BackupKind.LOG)
    for tier in ("backups", "secondary", "dr"):
        (tmp_path / tier / log.object("data").key).unlink()
    with pytest.raises(BackupflowError, match=log.object("data").key.rsplit("/", 1)[-1]):
        restore(settings, None, tmp_path / "r.db")
    assert not (tmp_path / "r.db").exists()


def test_replace_keeps_the_live_database_aside(settings: Settings, tmp_path: Path) -> None:
    live = settings.database.sqlite_path
    _create(live, 2_000)
    take_backup(settings, BackupKind.FULL)
    before = content_digest(live)
    conn = sqlite3.connect(live)
    with conn:
        conn.execute("DELETE FROM workload")  # the accident
    conn.close()
    after_accident = live.read_bytes()
    with pytest.raises(RestoreTargetError, match="replace=true"):
        restore(settings, None, live)
    assert live.read_bytes() == after_accident
    _plan, outcome = restore(settings, None, live, replace=True)
    assert content_digest(live) == before
    assert len(outcome.kept_aside) == 1
    assert outcome.kept_aside[0].read_bytes() == after_accident


def test_a_stale_wal_next_to_a_deleted_database_is_kept_aside(
    settings: Settings, tmp_path: Path
) -> None:
    live = settings.database.sqlite_path
    _create(live, 1_000)
    take_backup(settings, BackupKind.FULL)
    expected = content_digest(live)
    live.unlink()  # "someone deleted the database", but its -wal stayed
    stale = Path(f"{live}-wal")
    stale.write_bytes(b"stale write-ahead log")
    _plan, outcome = restore(settings, None, live)
    assert content_digest(live) == expected
    assert not stale.exists()
    assert [p.name[-4:] for p in outcome.kept_aside] == ["-wal"]
