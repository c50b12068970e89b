"""Issue 12, classes 4 and 5: what backupflow writes is private whatever the umask, and its
staging folder is its own.

Every test runs under ``umask 022`` (the usual default, under which ``open`` makes 0644
files), and tries what another local user of the worker could: plant links where backupflow
will write, pre-create its folders, or hand it a log that is not its own.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backupflow.backup import BackupJob, decide_backup, dump_database, remove_staging
from backupflow.backup_run import FileSetSubject
from backupflow.backuplog import BackupLog
from backupflow.config import FileSetSettings, Settings
from backupflow.engines import open_engine
from backupflow.errors import ConfigError, RestoreTargetError
from backupflow.fsutil import ensure_private_dir, fresh_private_dir
from backupflow.models import BackupKind, Category, Manifest
from backupflow.planning import BackupDecision
from backupflow.storage import LocalStorage, open_tiers
from backupflow.storage.base import put_bytes
from tests.support.chain import content_digest, restore, take_backup


@pytest.fixture(autouse=True)
def _umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _make_db(path: Path, rows: int = 2_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(rows)])
    conn.close()


def _not_us(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every file we own look like another user's (no root needed)."""
    someone_else = os.geteuid() + 4242
    monkeypatch.setattr(os, "geteuid", lambda: someone_else)


# -- tier objects and manifests -------------------------------------------------------------


def test_tier_objects_and_manifests_are_0600_in_0700_folders(settings: Settings) -> None:
    _make_db(settings.database.sqlite_path)
    take_backup(settings, BackupKind.FULL)
    take_backup(settings, BackupKind.LOG)
    for tier in ("backups", "secondary", "dr"):
        root = settings.database.sqlite_path.parent.parent / tier
        files = [p for p in root.rglob("*") if p.is_file()]
        folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
        assert any(p.name.endswith(".json") for p in files), f"no manifest in {tier}"
        assert len(files) >= 6  # data + page map + manifest, twice
        assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
        assert {str(p): _mode(p) for p in folders} == {str(p): 0o700 for p in folders}


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_a_stored_object_is_exactly_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    os.umask(umask)
    storage = LocalStorage(tmp_path / "repo")
    put_bytes(storage, "database/gantt/2026-11-26/x.data", b"secret rows")
    assert _mode(tmp_path / "repo/database/gantt/2026-11-26/x.data") == 0o600
    assert _mode(tmp_path / "repo/database/gantt") == 0o700
    with storage.open("database/gantt/2026-11-26/x.data") as handle:
        assert handle.read() == b"secret rows"


def test_a_link_planted_in_a_tier_is_not_an_object(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:$6$hash")
    storage = LocalStorage(tmp_path / "repo")
    put_bytes(storage, "database/gantt/real.data", b"ok")
    os.symlink(secret, tmp_path / "repo/database/gantt/planted.data")
    assert [info.key for info in storage.list("database/")] == ["database/gantt/real.data"]
    with pytest.raises(Exception, match="is a link, not an object"):
        storage.stat("database/gantt/planted.data")
    with (
        pytest.raises(Exception, match="is a link, not an object"),
        storage.open("database/gantt/planted.data"),
    ):
        pass


# -- the backup log -------------------------------------------------------------------------


def test_a_new_backup_log_and_its_new_folder_are_0640_and_0750(tmp_path: Path) -> None:
    log = BackupLog(tmp_path / "var" / "log" / "backup.log")
    log.check_writable()
    assert _mode(log.path) == 0o640
    assert _mode(log.path.parent) == 0o750
    assert _mode(log.path.parent.parent) == 0o750
    log.append("backup", status="completed")
    assert _mode(log.path) == 0o640
    assert [r["status"] for r in log.read()] == ["completed"]


def test_a_new_backup_log_in_an_existing_folder_is_0640_from_its_creation(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    folder.mkdir(mode=0o755)
    log = BackupLog(folder / "backup.log")
    log.append("backup", status="completed")  # append alone creates it
    assert _mode(log.path) == 0o640
    assert _mode(folder) == 0o755  # a folder that was there is left as it was


def test_a_pre_existing_world_readable_log_is_narrowed_to_0640(tmp_path: Path) -> None:
    path = tmp_path / "backup.log"
    path.write_text('{"event": "old"}\n')
    os.chmod(path, 0o666)
    BackupLog(path).append("backup", status="completed")
    assert _mode(path) == 0o640
    assert [r["event"] for r in BackupLog(path).read()] == ["old", "backup"]


def test_a_log_planted_as_a_link_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim.conf"
    victim.write_text("original\n")
    os.chmod(victim, 0o644)
    link = tmp_path / "log" / "backup.log"
    link.parent.mkdir()
    os.symlink(victim, link)
    log = BackupLog(link)
    with pytest.raises(ConfigError, match=r"backup\.log is a link"):
        log.check_writable()
    with pytest.raises(ConfigError, match="is a link"):
        log.append("backup", status="completed")
    assert victim.read_text() == "original\n"
    assert _mode(victim) == 0o644


def test_a_dangling_link_at_the_log_path_creates_nothing(tmp_path: Path) -> None:
    link = tmp_path / "backup.log"
    os.symlink(tmp_path / "elsewhere.log", link)
    with pytest.raises(ConfigError, match="is a link"):
        BackupLog(link).check_writable()
    assert not (tmp_path / "elsewhere.log").exists()


def test_a_log_that_is_not_ours_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "backup.log"
    path.write_text("")
    _not_us(monkeypatch)
    with pytest.raises(ConfigError, match="belongs to user id"):
        BackupLog(path).check_writable()
    assert path.read_text() == ""


def test_a_log_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "backup.log"
    os.mkfifo(path)
    with pytest.raises(ConfigError, match="not a regular file"):
        BackupLog(path).check_writable()


# -- staging --------------------------------------------------------------------------------


def _job(settings: Settings) -> BackupJob:
    decision, parent_tier = decide_backup(open_tiers(settings), BackupKind.FULL, settings)
    return BackupJob.start(settings.database.name, decision, datetime.now(UTC), parent_tier)


def test_staging_folders_are_0700_and_the_snapshot_files_0600(settings: Settings) -> None:
    _make_db(settings.database.sqlite_path)
    job = _job(settings)
    dump = dump_database(open_engine(settings), job, settings)
    staging = job.staging(settings)
    assert _mode(settings.staging_dir) == 0o700
    assert _mode(staging) == 0o700
    names = {p.name: _mode(p) for p in staging.iterdir()}
    assert names == {"snapshot.db": 0o600, "pages.bin": 0o600, ".job.lock": 0o600}
    assert {f.path.name for f in dump.files} <= set(names)
    remove_staging(job, settings)
    assert not staging.exists()


def test_the_config_tar_with_its_env_file_is_0600_in_staging(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "api"
    root.mkdir()
    (root / ".env").write_text("DB_PASSWORD=hunter2\n")
    os.chmod(root / ".env", 0o600)
    (root / "settings.toml").write_text("debug = false\n")
    settings = settings.model_copy(
        update={
            "files": settings.files.model_copy(
                update={"config": FileSetSettings(root=root, include=["**"])}
            )
        }
    )
    subject = FileSetSubject("config", settings)
    decision: BackupDecision[Manifest] = BackupDecision(BackupKind.FULL)
    job = BackupJob.start("config", decision, datetime.now(UTC), category=Category.CONFIG)
    dump = subject.dump(job, logging.getLogger("test"))
    staging = job.staging(settings)
    assert _mode(staging) == 0o700
    assert {f.path.name: _mode(f.path) for f in dump.files} == {
        "files.tar": 0o600,
        "members.jsonl": 0o600,
    }
    assert b"hunter2" in (staging / "files.tar").read_bytes()  # the secret really is in it


@pytest.mark.parametrize("where", ["staging_dir", "job folder"])
def test_a_link_planted_at_the_staging_path_is_refused_and_nothing_lands_there(
    settings: Settings, tmp_path: Path, where: str
) -> None:
    _make_db(settings.database.sqlite_path)
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    os.chmod(open_folder, 0o777)
    job = _job(settings)
    if where == "staging_dir":
        os.symlink(open_folder, settings.staging_dir)
    else:
        ensure_private_dir(settings.staging_dir)
        os.symlink(open_folder, job.staging(settings))
    with pytest.raises(ConfigError, match="is a link"):
        dump_database(open_engine(settings), job, settings)
    assert list(open_folder.iterdir()) == []
    remove_staging(job, settings)  # the flows' clean-up does not follow it either
    assert open_folder.is_dir()
    assert os.path.islink(settings.staging_dir if where == "staging_dir" else job.staging(settings))


def test_clean_up_never_deletes_through_a_planted_staging_link(
    settings: Settings, tmp_path: Path
) -> None:
    job = _job(settings)
    other = tmp_path / "someone-elses"
    (other / job.backup_id).mkdir(parents=True)
    (other / job.backup_id / "keep.txt").write_text("mine")
    os.symlink(other, settings.staging_dir)
    remove_staging(job, settings)
    assert (other / job.backup_id / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770, 0o720])
def test_a_staging_folder_others_can_write_to_is_refused(settings: Settings, mode: int) -> None:
    settings.staging_dir.mkdir()
    os.chmod(settings.staging_dir, mode)
    _make_db(settings.database.sqlite_path)
    job = _job(settings)
    with pytest.raises(ConfigError, match="writable by other users"):
        dump_database(open_engine(settings), job, settings)
    assert list(settings.staging_dir.iterdir()) == []


def test_a_staging_folder_of_another_user_is_refused(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.staging_dir.mkdir(mode=0o700)
    _make_db(settings.database.sqlite_path)
    job = _job(settings)
    _not_us(monkeypatch)
    with pytest.raises(ConfigError, match="belongs to user id"):
        dump_database(open_engine(settings), job, settings)
    assert list(settings.staging_dir.iterdir()) == []


def test_a_staging_path_that_is_a_file_is_one_sentence(settings: Settings) -> None:
    settings.staging_dir.write_text("not a folder")
    with pytest.raises(ConfigError, match="is not a folder; remove it or choose another path"):
        ensure_private_dir(settings.staging_dir)


def test_our_own_private_staging_folder_is_reused_and_a_leftover_job_folder_replaced(
    settings: Settings,
) -> None:
    settings.staging_dir.mkdir(mode=0o700)
    leftover = fresh_private_dir(settings.staging_dir / "20261126T053301Z-full-3f9a1c")
    (leftover / "snapshot.db").write_bytes(b"old")
    fresh_private_dir(leftover)
    assert list(leftover.iterdir()) == []
    assert _mode(leftover) == 0o700


# -- the restored database ------------------------------------------------------------------


def test_a_restored_new_database_is_0600(settings: Settings, tmp_path: Path) -> None:
    _make_db(settings.database.sqlite_path)
    take_backup(settings, BackupKind.FULL)
    _, outcome = restore(settings, None, tmp_path / "restored" / "new.db")
    assert _mode(outcome.target) == 0o600
    assert _mode(outcome.target.parent) == 0o700  # the folder the restore made
    assert content_digest(outcome.target) == content_digest(settings.database.sqlite_path)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o660])
def test_replace_keeps_the_live_database_mode_and_owner(
    settings: Settings, tmp_path: Path, mode: int
) -> None:
    live = settings.database.sqlite_path
    _make_db(live)
    take_backup(settings, BackupKind.FULL)
    os.chmod(live, mode)
    owner = (os.geteuid() + 1000, os.getegid() + 1000) if os.geteuid() == 0 else None
    if owner is not None:
        os.chown(live, *owner)  # as root: prove a foreign owner survives too
    before = os.stat(live)
    _, outcome = restore(settings, None, live, replace=True)
    after = os.stat(outcome.target)
    assert outcome.target == live
    assert stat.S_IMODE(after.st_mode) == mode
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert after.st_ino != before.st_ino  # really replaced, not edited in place


def test_replace_refuses_when_the_owner_cannot_be_kept(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = settings.database.sqlite_path
    _make_db(live)
    take_backup(settings, BackupKind.FULL)
    os.chmod(live, 0o600)
    original = live.read_bytes()
    before = os.stat(live)

    def fake_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        real = real_lstat(path, *args, **kwargs)  # type: ignore[call-overload]
        if os.fspath(path) != os.fspath(live):  # type: ignore[arg-type]
            return real
        fields = list(real)
        fields[4] = real.st_uid + 77  # st_uid: a user we cannot chown to
        return os.stat_result(fields)

    def no_chown(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", fake_stat)
    monkeypatch.setattr(os, "fchown", no_chown)
    with pytest.raises(RestoreTargetError, match="which this user cannot give the restored file"):
        restore(settings, None, live, replace=True)
    monkeypatch.undo()
    assert live.read_bytes() == original  # nothing moved, nothing kept aside
    assert os.stat(live).st_ino == before.st_ino
    assert sorted(p.name for p in live.parent.iterdir()) == ["gantt.db"]


def test_a_link_planted_at_the_scratch_name_is_not_written_through(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_db(settings.database.sqlite_path)
    take_backup(settings, BackupKind.FULL)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "restored" / "new.db"
    target.parent.mkdir()
    planted = target.parent / ".new.db.restoring-guessed"
    os.symlink(victim, planted)
    engine_type = type(open_engine(settings))
    monkeypatch.setattr(engine_type, "scratch_path", lambda self, target: planted)
    with pytest.raises(RestoreTargetError, match="restoring-guessed already exists"):
        restore(settings, None, target)
    assert victim.read_bytes() == b"precious"
    assert not target.exists()
