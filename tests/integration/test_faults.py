"""Reliability found by fault injection (issue 15): each fault an operator met, injected
here, and what the next run does about it.

- a killed backup's staging folder is removed by a later run, never a running one's;
- a damaged copy of a parent is read from the next tier, and repaired;
- a dropped download of a single-tier S3 restore resumes by range;
- multipart uploads of killed runs are aborted after the grace period;
- a backup is not stored on a tier that lacks its parent, and the next run repairs it;
- a backup whose parent no tier holds is named at backup time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backupflow.backup import (
    BackupJob,
    clean_interrupted,
    clean_staging,
    prepare_staging,
    remove_staging,
)
from backupflow.backup_run import BackupOutcome, DatabaseSubject, run_backup
from backupflow.catalog import Catalog, CatalogEntry
from backupflow.config import Settings, TierSettings
from backupflow.engines import open_engine
from backupflow.errors import StorageError, TierError
from backupflow.fsutil import JOB_MARKER
from backupflow.models import BackupKind, Category
from backupflow.planning import BackupDecision
from backupflow.steps import DirectSteps
from backupflow.storage import S3Storage, Tier, open_tiers
from backupflow.storage.base import ObjectInfo, Storage
from backupflow.storage.wrapper import StorageWrapper
from tests.support.chain import content_digest, restore
from tests.support.s3 import CuttingProxy, MotoServer, client_for, make_bucket

REGION = "ap-northeast-2"
MiB = 1 << 20


def _db(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"row{i}",) for i in range(rows)])
    conn.close()


def take_backup_outcome(
    settings: Settings, kind: BackupKind = BackupKind.FULL, tiers: list[Tier] | None = None
) -> BackupOutcome:
    """One backup through the core's one backup run."""
    subject = DatabaseSubject(open_engine(settings), settings)
    return run_backup(subject, tiers or open_tiers(settings), DirectSteps(), kind=kind)


# -- multipart uploads of killed runs --------------------------------------------------------


class Uploads:
    """Opens multipart uploads and stamps each with the moment it was started.

    moto answers ``ListMultipartUploads`` with one fixed ``Initiated`` (2010) for every
    upload; real S3 gives the moment each was started.  This puts that moment back into the
    parsed answer, so the age rule is tested against what S3 would say."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self.started: dict[str, datetime] = {}
        client.meta.events.register("after-call.s3.ListMultipartUploads", self._stamp)

    def _stamp(self, parsed: dict[str, Any], **_: Any) -> None:
        for upload in parsed.get("Uploads", []):
            upload["Initiated"] = self.started[upload["UploadId"]]

    def open(self, key: str, *, age: timedelta) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        self.client.upload_part(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=b"x" * 1024,
        )
        self.started[upload["UploadId"]] = datetime.now(UTC) - age

    def keys(self) -> list[str]:
        listed = self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return sorted(u["Key"] for u in listed)


def _bucket_with_uploads(server: MotoServer) -> tuple[S3Storage, Uploads]:
    client = client_for(REGION, server.url)
    bucket = f"stale-{uuid.uuid4().hex[:12]}"
    make_bucket(client, bucket, REGION)
    return S3Storage(client, bucket, "backupflow", part_bytes=5 * MiB), Uploads(client, bucket)


STALE = "backupflow/database/gantt/2026-11-26/20261126T020000Z-full-aaaaaa.data.zst"
FRESH = "backupflow/database/gantt/2026-11-26/20261126T030000Z-log-bbbbbb.pages.zst"
FOREIGN = "someone-else/big.bin"


def test_stale_multipart_uploads_under_our_prefix_are_aborted_fresh_ones_kept(
    moto_server: MotoServer,
) -> None:
    storage, uploads = _bucket_with_uploads(moto_server)
    uploads.open(STALE, age=timedelta(hours=3))
    uploads.open(FOREIGN, age=timedelta(days=3))
    uploads.open(FRESH, age=timedelta(minutes=5))

    aborted = storage.cleanup_incomplete(datetime.now(UTC) - timedelta(hours=1))

    assert aborted == [STALE.removeprefix("backupflow/")]
    assert uploads.keys() == sorted([FOREIGN, FRESH])
    assert [w.key for w in storage.unfinished_writes()] == [FRESH.removeprefix("backupflow/")]


def test_the_next_run_aborts_uploads_older_than_the_grace_period(
    moto_server: MotoServer,
) -> None:
    storage, uploads = _bucket_with_uploads(moto_server)
    uploads.open(STALE, age=timedelta(minutes=61))
    uploads.open(FRESH, age=timedelta(minutes=59))

    removed = clean_interrupted(
        storage, Category.DATABASE, "gantt", now=datetime.now(UTC), grace=timedelta(minutes=60)
    )

    assert removed == [STALE.removeprefix("backupflow/")]
    assert uploads.keys() == [FRESH]


# -- staging folders of killed backups ---------------------------------------------------------


def _job_folder(settings: Settings, name: str, *, age: timedelta, pid: int) -> Path:
    """A staging folder as a backup killed ``age`` ago leaves it: its snapshot and its
    marker, naming a process that is gone."""
    folder = settings.staging_dir / name
    folder.mkdir(mode=0o700, parents=True)
    settings.staging_dir.chmod(0o700)
    (folder / "snapshot.db").write_bytes(b"\0" * 4096)
    marker = folder / JOB_MARKER
    marker.write_text(json.dumps({"pid": pid, "started": time.time() - age.total_seconds()}))
    marker.chmod(0o600)
    then = time.time() - age.total_seconds()
    for path in (folder / "snapshot.db", marker, folder):
        os.utime(path, (then, then))
    return folder


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_backups_staging_is_removed_by_the_next_run_a_live_or_young_one_kept(
    settings: Settings,
) -> None:
    _db(settings.database.sqlite_path, 50)
    dead = _job_folder(
        settings, "20261126T020000Z-full-0a0a0a", age=timedelta(hours=3), pid=_dead_pid()
    )
    unmarked = _job_folder(settings, "20261126T020500Z-log-0b0b0b", age=timedelta(hours=3), pid=0)
    (unmarked / JOB_MARKER).unlink()
    os.utime(unmarked, (time.time() - 3 * 3600,) * 2)
    young = _job_folder(
        settings, "20261126T040000Z-log-0c0c0c", age=timedelta(minutes=5), pid=_dead_pid()
    )
    live = _job_folder(
        settings, "20261126T010000Z-full-0d0d0d", age=timedelta(hours=5), pid=os.getpid()
    )
    not_a_job = _job_folder(settings, "restored-config-x", age=timedelta(days=2), pid=0)
    (not_a_job / JOB_MARKER).unlink()
    os.utime(not_a_job, (time.time() - 2 * 86400,) * 2)
    elsewhere = settings.staging_dir.parent / "not-staging"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("kept")
    os.symlink(elsewhere, settings.staging_dir / "20261126T000000Z-full-0e0e0e")
    held = os.open(live / JOB_MARKER, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the live job holds its marker
    try:
        outcome = take_backup_outcome(settings)
    finally:
        os.close(held)

    assert outcome.complete
    assert not dead.exists() and not unmarked.exists()
    assert young.exists() and (young / "snapshot.db").exists()
    assert live.exists() and (live / "snapshot.db").exists()
    assert not_a_job.exists()
    assert (elsewhere / "keep.txt").read_text() == "kept"
    assert sorted(p.name for p in settings.staging_dir.iterdir()) == sorted(
        [young.name, live.name, not_a_job.name, "20261126T000000Z-full-0e0e0e"]
    )


def test_a_running_backup_marks_its_staging_so_another_run_leaves_it(settings: Settings) -> None:
    job = BackupJob.start("gantt", BackupDecision(BackupKind.FULL), datetime.now(UTC))
    folder = prepare_staging(job, settings)
    old = time.time() - 86400
    os.utime(folder / JOB_MARKER, (old, old))
    try:
        record = json.loads((folder / JOB_MARKER).read_text())
        assert record["pid"] == os.getpid()
        assert clean_staging(settings, now=datetime.now(UTC)) == []
        assert folder.exists()
    finally:
        remove_staging(job, settings)
    assert not folder.exists()


# -- a damaged copy of the parent ------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_damaged_parent_copy_is_read_from_the_next_tier_and_repaired(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = settings.database.sqlite_path
    _db(live, 300)
    take_backup_outcome(settings)
    _db(live, 40)
    parent = take_backup_outcome(settings, BackupKind.LOG).manifest
    pages = parent.object("pages")
    on_primary = settings.repository.primary.url
    damaged = Path(on_primary) / pages.key
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the primary's copy of the page map
    damaged.write_bytes(bytes(data))
    assert _sha256(damaged) != pages.sha256
    _db(live, 25)

    with caplog.at_level(logging.WARNING):
        child = take_backup_outcome(settings, BackupKind.LOG)

    assert child.complete and child.manifest.parent_id == parent.id
    assert _sha256(damaged) == pages.sha256  # the primary's copy is repaired
    assert "could not be read from primary" in caplog.text
    assert f"repaired the damaged copy of backup {parent.id} in primary from secondary" in (
        caplog.text
    )
    _, outcome = restore(
        settings, None, tmp_path / "restored.db", tiers=open_tiers(settings, ("primary",))
    )
    assert content_digest(tmp_path / "restored.db") == content_digest(live)
    assert set(outcome.tiers_used.values()) == {"primary"}


# -- a tier that lacks the parent ------------------------------------------------------------


class FullDisk(StorageWrapper):
    """A tier whose disk is too full for the objects of ``refused`` (a big parent), while
    small writes still fit."""

    def __init__(self, inner: Storage, refused: str) -> None:
        super().__init__(inner)
        self.refused = refused

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        if self.refused in key:
            raise StorageError(f"cannot write {key} in {self.name}: No space left on device.")
        return super().put(key, chunks)


def _remove_backup(storage: Storage, backup_id: str) -> None:
    """Everything of one backup in a tier: its manifest and its objects."""
    for info in list(storage.list("")):
        name = info.key.rsplit("/", 1)[-1]
        entry = CatalogEntry.parse(info.key)
        if name.startswith(backup_id) or (entry is not None and entry.id == backup_id):
            storage.delete(info.key)


def _ids(tier: Tier) -> list[str]:
    return [e.id for e in Catalog(tier.storage, tier.keyring).entries(Category.DATABASE, "gantt")]


def test_a_log_is_not_stored_on_a_tier_that_lacks_its_parent_and_the_next_run_repairs_it(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = settings.database.sqlite_path
    _db(live, 200)
    full = take_backup_outcome(settings).manifest
    _db(live, 30)
    parent = take_backup_outcome(settings, BackupKind.LOG).manifest
    primary, secondary, dr = open_tiers(settings)
    _remove_backup(primary.storage, parent.id)  # the primary lost the parent ...
    full_primary = Tier("primary", FullDisk(primary.storage, parent.id), primary.keyring)
    _db(live, 20)

    with caplog.at_level(logging.ERROR), pytest.raises(TierError) as caught:
        take_backup_outcome(settings, BackupKind.LOG, [full_primary, secondary, dr])

    message = str(caught.value)  # ... and is too full to get it back: the run says so
    assert f"primary: lacks parent {parent.id}" in message
    assert "nothing was pruned" in message
    (child,) = set(_ids(secondary)) - {full.id, parent.id}
    assert set(_ids(dr)) == set(_ids(secondary)) == {full.id, parent.id, child}
    assert _ids(primary) == [full.id]  # never a log without its parent
    assert f"that tier lacks its parent {parent.id}" in caplog.text

    repaired = take_backup_outcome(settings, BackupKind.LOG)  # the disk has room again

    assert repaired.complete
    assert set(_ids(primary)) == {full.id, parent.id, child, repaired.manifest.id}
    plan, _ = restore(
        settings, None, tmp_path / "restored.db", tiers=open_tiers(settings, ("primary",))
    )
    assert content_digest(tmp_path / "restored.db") == content_digest(live)
    assert plan.restore_point == repaired.manifest.restore_point


# -- gap detection at backup time ------------------------------------------------------------


def test_a_backup_run_names_a_backup_whose_parent_no_tier_holds(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    live = settings.database.sqlite_path
    _db(live, 100)
    take_backup_outcome(settings)
    first, lost, orphaned = (
        _db(live, 10) or take_backup_outcome(settings, BackupKind.LOG).manifest.id for _ in range(3)
    )
    for tier in open_tiers(settings):
        _remove_backup(tier.storage, lost)

    with caplog.at_level(logging.WARNING):
        outcome = take_backup_outcome(settings, BackupKind.LOG)

    assert f"backup {orphaned} of gantt builds on backup {lost}, which no tier holds" in (
        caplog.text
    )
    assert outcome.manifest.parent_id == first  # the new log builds on what still restores


# -- a dropped download ----------------------------------------------------------------------


def test_a_single_tier_s3_restore_survives_a_dropped_connection(
    settings: Settings, moto_server: MotoServer, tmp_path: Path
) -> None:
    proxy = CuttingProxy(moto_server.port)
    try:
        bucket = f"drop-{uuid.uuid4().hex[:12]}"
        make_bucket(client_for(REGION, moto_server.url), bucket, REGION)
        secondary = TierSettings(
            url=f"s3://{bucket}/backupflow",
            region=REGION,
            endpoint_url=proxy.url,
            addressing_style="path",
        )
        settings = settings.model_copy(
            update={"repository": settings.repository.model_copy(update={"secondary": secondary})}
        )
        live = settings.database.sqlite_path
        live.parent.mkdir(parents=True)
        conn = sqlite3.connect(live)
        with conn:  # about 3 MiB that no codec can shrink
            conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)")
            rows = [(os.urandom(3000),) for _ in range(1000)]
            conn.executemany("INSERT INTO blobs (b) VALUES (?)", rows)
        conn.close()
        take_backup_outcome(settings)
        only_s3 = open_tiers(settings, ("secondary",))
        ranges: list[str] = []
        storage = only_s3[0].storage
        assert isinstance(storage, S3Storage)
        storage.client.meta.events.register(
            "before-send.s3",
            lambda request, **_: ranges.extend(
                [str(request.headers["Range"])] if "Range" in request.headers else []
            ),
        )
        proxy.cut_after(1 << 20)  # the connection drops 1 MiB into the answers

        plan, outcome = restore(settings, None, tmp_path / "restored.db", tiers=only_s3)

        assert proxy.cuts == 1
        assert len(ranges) == 1  # the rest was asked for by range, once
        assert set(outcome.tiers_used.values()) == {"secondary"}
        assert content_digest(tmp_path / "restored.db") == content_digest(live)
        assert plan.restore_point == plan.last.restore_point
    finally:
        proxy.close()
