"""The PostgreSQL engine against a real cluster: base backups and log backups through the one
backup run, restores through the one restore run, checked (pg_verifybackup, pg_amcheck)
before anything is installed; ``--replace`` over a running cluster.

One archiving cluster per module (its tiers on moto's S3 server); each restore goes into a
new folder under the module's work folder, removed with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backupflow.engines import open_engine
from backupflow.engines.postgres.archive import archived
from backupflow.engines.postgres.engine import PostgresEngine
from backupflow.engines.postgres.server import Copy
from backupflow.errors import (
    ChainGapError,
    EngineError,
    IntegrityError,
    RestoreTargetError,
    SourceNotFoundError,
)
from backupflow.models import BackupKind
from backupflow.storage import open_tiers
from tests.live.postgres_support import LivePg, events_cluster, rows, start_restored
from tests.support.chain import restore, take_backup
from tests.support.pgcluster import free_port
from tests.support.s3 import MotoServer


@pytest.fixture(scope="module")
def pg(_shared_moto_server: MotoServer) -> Iterator[LivePg]:
    with events_cluster(_shared_moto_server) as live:
        yield live


@pytest.fixture
def settings(pg: LivePg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in pg.env:
        monkeypatch.setenv(key, pg.env[key])
    return pg.settings(tmp_path)


def insert(pg: LivePg, first: int, count: int, note: str) -> None:
    with pg.cluster.connect() as conn:
        for i in range(first, first + count):
            conn.execute("INSERT INTO events (id, note) VALUES (%s, %s)", (i, f"{note}-{i}"))


def live_rows(pg: LivePg) -> list[tuple[Any, ...]]:
    with pg.cluster.connect() as conn:
        return rows(conn)


def test_a_base_backup_restores_every_row_checked_before_install(pg: LivePg, settings: Any) -> None:
    insert(pg, 1, 200, "base")
    manifest = take_backup(settings, BackupKind.FULL)
    position = manifest.position
    assert position["system_identifier"].isdigit() and position["timeline"] == 1
    assert {o.role for o in manifest.objects} == {"base", "backup-manifest"}
    expected = live_rows(pg)
    insert(pg, 1000, 5, "after")  # not in the backup

    target = pg.new_folder("restore") / "data"
    plan, outcome = restore(settings, manifest.restore_point, target)
    assert outcome.target == target and [m.id for m in plan.manifests] == [manifest.id]
    checks = " | ".join(_CHECKS)
    assert "pg_verifybackup" in checks and "pg_amcheck --all" in checks
    assert not any(p.name.startswith(".data.restoring") for p in target.parent.iterdir())
    with start_restored(target) as copy, copy.connect() as conn:
        assert rows(conn) == expected


_CHECKS: list[str] = []


@pytest.fixture(autouse=True)
def _record_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks each restore passed (Restored.checks), as the report would show them."""
    _CHECKS.clear()
    original = PostgresEngine.restore

    def recording(self: PostgresEngine, *args: Any, **kwargs: Any) -> Any:
        restored = original(self, *args, **kwargs)
        _CHECKS.extend(restored.checks)
        return restored

    monkeypatch.setattr(PostgresEngine, "restore", recording)


def test_a_restore_over_the_live_folder_without_replace_is_refused(
    pg: LivePg, settings: Any
) -> None:
    manifest = take_backup(settings, BackupKind.FULL)
    before = live_rows(pg)
    with pytest.raises(RestoreTargetError, match=r"already exists; pass .*replace"):
        restore(settings, manifest.restore_point, pg.cluster.data)
    engine = open_engine(settings)
    link = pg.root / "link-to-live"
    link.symlink_to(pg.cluster.data)
    with pytest.raises(RestoreTargetError, match="is a link"):
        engine.check_target(link, True)
    assert live_rows(pg) == before and pg.cluster.pid() is not None


def test_an_unreachable_server_a_wrong_password_and_a_tablespace_are_one_sentence(
    pg: LivePg, tmp_path: Path, settings: Any
) -> None:
    wrong = open_engine(pg.settings(tmp_path, password="not-the-password"))
    with pytest.raises(EngineError, match="refused the login 'backupflow'") as refused:
        wrong.check_source()
    assert "not-the-password" not in str(refused.value) and "\n" not in str(refused.value)
    closed = open_engine(pg.settings(tmp_path, port=free_port()))
    with pytest.raises(SourceNotFoundError, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1"):
        closed.check_source()

    location = pg.new_folder("tablespace")
    pg.cluster.execute(f"CREATE TABLESPACE elsewhere LOCATION '{location}'")
    try:
        with pytest.raises(EngineError, match=r"tablespaces outside its data folder \(elsewhere\)"):
            open_engine(settings).check_source()
    finally:
        pg.cluster.execute("DROP TABLESPACE elsewhere")
    open_engine(settings).check_source()


def test_a_corrupted_page_in_the_copy_fails_the_check_and_the_live_cluster_serves_on(
    pg: LivePg, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert(pg, 2000, 300, "corrupt")
    manifest = take_backup(settings, BackupKind.FULL)
    before = live_rows(pg)

    def corrupt(self: PostgresEngine, copy: Copy) -> None:
        with copy.connect("postgres") as conn:
            row = conn.execute("SELECT pg_relation_filepath('events')").fetchone()
        assert row is not None
        copy.stop()
        heap = copy.data / str(row[0])
        with heap.open("r+b") as handle:  # inside page 0's tuples: its checksum no longer fits
            handle.seek(4000)
            handle.write(b"\xde\xad\xbe\xef" * 64)
        copy.start(copy.extra or {})  # the restore's own options: never the live archive
        for _ in range(200):
            try:
                with copy.connect("postgres"):
                    return
            except Exception:
                time.sleep(0.1)

    monkeypatch.setattr(PostgresEngine, "_before_check", corrupt)
    target = pg.new_folder("corrupt") / "data"
    with pytest.raises(IntegrityError, match=r"integrity check.*nothing live was touched"):
        restore(settings, manifest.restore_point, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the scratch copy is gone, stopped
    assert live_rows(pg) == before and pg.cluster.pid() is not None


def test_a_target_between_two_log_backups_holds_exactly_the_rows_committed_by_then(
    pg: LivePg, settings: Any
) -> None:
    full = take_backup(settings, BackupKind.FULL)
    insert(pg, 3000, 50, "log1")
    log1 = take_backup(settings, BackupKind.LOG)
    insert(pg, 3100, 20, "between-a")
    time.sleep(0.3)
    middle = datetime.now(UTC)
    time.sleep(0.3)
    insert(pg, 3200, 20, "between-b")
    log2 = take_backup(settings, BackupKind.LOG)
    assert log1.position["files"] and log2.position["files"]
    assert log2.position["first"] > log1.position["last"]
    assert {o.role.split(":")[0] for o in log2.objects} == {"wal", "walrec"}
    expected = [r for r in live_rows(pg) if r[2] <= middle]
    assert any(r[0] == 3119 for r in expected) and not any(r[0] >= 3200 for r in expected)

    target = pg.new_folder("pitr") / "data"
    plan, _outcome = restore(settings, middle, target)
    assert plan.manifests[0].id == full.id
    assert log2.id in [m.id for m in plan.manifests]
    assert any("recovery_target_time" in c for c in _CHECKS)
    with start_restored(target) as copy, copy.connect() as conn:
        assert rows(conn) == expected
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)

    sysid = int(full.position["system_identifier"])
    pushed = archived(open_tiers(settings)[0], settings.database.name, sysid)
    assert pushed and all(n.timeline == 1 for n in pushed)  # a copy never pushes its timeline


def test_a_damaged_archived_segment_stops_the_restore_before_postgresql_reads_it(
    pg: LivePg, settings: Any
) -> None:
    full = take_backup(settings, BackupKind.FULL)
    insert(pg, 4000, 40, "damaged")
    log = take_backup(settings, BackupKind.LOG)
    before = live_rows(pg)
    sysid = full.position["system_identifier"]
    name = log.position["last"]  # holds the rows: recovery must read it
    (obj,) = [o for o in log.objects if o.role == f"wal:{sysid}/{name}"]
    storage = open_tiers(settings)[0].storage
    with storage.open(obj.key) as handle:
        data = bytearray(handle.read())
    data[len(data) // 2] ^= 0xFF  # same size: only its checksum can tell
    storage.put(obj.key, [bytes(data)])

    target = pg.new_folder("damaged") / "data"
    with pytest.raises(IntegrityError, match=rf"{name} is damaged.*caught by its checksum"):
        restore(settings, None, target)
    assert not target.exists() and list(target.parent.iterdir()) == []
    assert live_rows(pg) == before and pg.cluster.pid() is not None


def test_a_deleted_archived_segment_is_a_gap_named_in_the_error(pg: LivePg, settings: Any) -> None:
    full = take_backup(settings, BackupKind.FULL)
    insert(pg, 4500, 40, "gap")
    log = take_backup(settings, BackupKind.LOG)
    sysid = full.position["system_identifier"]
    name = log.position["last"]
    storage = open_tiers(settings)[0].storage
    for obj in log.objects:
        if obj.role in (f"wal:{sysid}/{name}", f"walrec:{sysid}/{name}"):
            storage.delete(obj.key)

    for until in (None, log.restore_point):  # --latest, and a time only that segment reaches
        target = pg.new_folder("gap") / "data"
        with pytest.raises(ChainGapError, match=rf"{name} .*on no tier.*latest point"):
            restore(settings, until, target)
        assert not target.exists() and list(target.parent.iterdir()) == []


def test_replace_over_a_running_cluster_keeps_the_old_folder_and_serves_the_restored_rows(
    pg: LivePg, settings: Any
) -> None:
    """Runs last in this module: afterwards the module's cluster is the restored one."""
    insert(pg, 5000, 30, "replace")
    manifest = take_backup(settings, BackupKind.FULL)
    expected = live_rows(pg)
    insert(pg, 6000, 10, "lost")  # after the backup: gone once the copy is installed
    old_pid = pg.cluster.pid()
    assert old_pid is not None

    _plan, outcome = restore(settings, manifest.restore_point, pg.cluster.data, replace=True)
    assert outcome.target == pg.cluster.data
    (aside,) = outcome.kept_aside
    assert aside.name.startswith("data.before-restore-") and (aside / "PG_VERSION").exists()
    new_pid = pg.cluster.pid()
    assert new_pid is not None and new_pid != old_pid  # running again, from the new folder
    assert live_rows(pg) == expected  # same port and socket: the live cluster's config
    assert "archive_mode = 'off'" not in (pg.cluster.data / "postgresql.auto.conf").read_text()
    assert not any(r[0] >= 6000 for r in live_rows(pg))

    # The restored cluster runs on a new timeline: the next log backup follows it.
    insert(pg, 7000, 15, "timeline2")
    log = take_backup(settings, BackupKind.LOG)
    assert log.position["timeline"] == 2 and "00000002.history" in log.position["files"]
    after = live_rows(pg)
    latest = pg.new_folder("tl2") / "data"
    plan, _outcome = restore(settings, None, latest)
    assert [m.id for m in plan.manifests] == [manifest.id, log.id]
    with start_restored(latest) as copy, copy.connect() as conn:
        assert rows(conn) == after
