"""A PostgreSQL series in a tier: archived WAL under ``wal/`` is ours (never foreign, never an
orphan while no log backup lists it yet), a hole in it is a broken chain named by its
segment, and prune removes only WAL no restore can use."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupflow.catalog import Catalog, object_key, wal_key, wal_record_key
from backupflow.config import Settings
from backupflow.engines.postgres.walnames import history_name, segment_name, wal_path
from backupflow.errors import ChainGapError
from backupflow.keys import Keyring, generate_keys
from backupflow.models import BackupKind, Category, Manifest, StoredObject, new_backup_id
from backupflow.storage import MemoryStorage, Tier, open_tiers
from backupflow.storage.base import Storage, put_bytes
from backupflow.verify import verify
from backupflow.verify.report import BROKEN_CHAIN, FOREIGN_OBJECT, ORPHAN, Series, VerifyReport

SERIES = Series(Category.DATABASE, "main")
SYSID = 7301234567890123456
WHEN = datetime(2026, 11, 20, tzinfo=UTC)


def _memory_tier() -> tuple[Storage, Keyring, Tier]:
    """A primary tier in memory with fresh keys."""
    keyring = generate_keys().keyring()
    storage = MemoryStorage("primary")
    return storage, keyring, Tier("primary", storage, keyring)


def _base_position(start_segno: int, sysid: int = SYSID) -> dict[str, object]:
    """What a base backup's manifest records, starting in segment ``start_segno``."""
    return {
        "system_identifier": str(sysid),
        "timeline": 1,
        "start_lsn": f"0/{start_segno:X}000028",
        "end_lsn": f"0/{start_segno:X}000138",
        "start_segment": segment_name(1, start_segno),
        "segment_bytes": 16 * 1024 * 1024,
        "server_version": 150018,
    }


def _object(storage: Storage, role: str, key: str, body: bytes, codec: str) -> StoredObject:
    put_bytes(storage, key, body)
    digest = hashlib.sha256(body).hexdigest()
    return StoredObject(
        role=role,
        key=key,
        codec=codec,
        size=len(body),
        sha256=digest,
        raw_size=len(body),
        raw_sha256=digest,
    )


def _wal(storage: Storage, name: str) -> tuple[StoredObject, StoredObject]:
    """One archived WAL file and its record, where wal-push puts them."""
    path = wal_path(SYSID, name)
    data = _object(
        storage, f"wal:{path}", wal_key(Category.DATABASE, "main", path, ""), b"w" * 64, "none"
    )
    record = _object(
        storage,
        f"walrec:{path}",
        wal_record_key(Category.DATABASE, "main", path),
        b'{"format":"backupflow-wal-record"}',
        "none",
    )
    return data, record


def _backup(
    storage: Storage,
    keyring: Keyring,
    kind: BackupKind,
    hours: int,
    position: dict[str, object],
    objects: tuple[StoredObject, ...] = (),
    parent: Manifest | None = None,
) -> Manifest:
    when = WHEN + timedelta(hours=hours)
    backup_id = new_backup_id(kind, when)
    if kind is BackupKind.FULL:
        key = object_key(Category.DATABASE, "main", when, backup_id, ".base")
        objects = (_object(storage, "base", key, b"base tar", "none"),)
    manifest = Manifest(
        id=backup_id,
        category=Category.DATABASE,
        kind=kind,
        engine="postgres",
        database="main",
        started_at=when,
        finished_at=when + timedelta(seconds=5),
        restore_point=when,
        position=position,
        base_id=parent.base_id or parent.id if parent else None,
        parent_id=parent.id if parent else None,
        objects=objects,
    )
    Catalog(storage, keyring).write(manifest)
    return manifest


def _log(
    storage: Storage, keyring: Keyring, hours: int, names: list[str], parent: Manifest
) -> Manifest:
    objects = tuple(o for name in names for o in _wal(storage, name))
    segments = [n for n in names if len(n) == 24]
    return _backup(
        storage,
        keyring,
        BackupKind.LOG,
        hours,
        {
            "system_identifier": str(SYSID),
            "timeline": int(segments[-1][:8], 16),
            "segment_bytes": 16 * 1024 * 1024,
            "first": segments[0],
            "last": segments[-1],
            "files": names,
            "end_lsn": "0/9000100",
        },
        objects,
        parent,
    )


def _verify(tier: Tier) -> VerifyReport:
    return verify([tier], [SERIES], now=WHEN + timedelta(days=2), read_data_percent=100)


def test_archived_wal_is_ours_and_a_hole_in_it_is_a_broken_chain() -> None:
    storage, keyring, tier = _memory_tier()
    base = _backup(
        storage,
        keyring,
        BackupKind.FULL,
        0,
        _base_position(2),
    )
    log1 = _log(storage, keyring, 1, [segment_name(1, s) for s in range(2, 5)], base)
    log2 = _log(
        storage,
        keyring,
        2,
        [segment_name(1, 5), history_name(2), segment_name(2, 5), segment_name(2, 6)],
        log1,
    )
    # Archived since the last log backup: listed by no backup yet.
    _wal(storage, segment_name(2, 7))
    _wal(storage, "000000020000000000000007.partial")
    report = _verify(tier)
    assert report.ok, report.findings
    assert report.summaries[0].objects == 1 + 2 * (3 + 4 + 2)

    _log(storage, keyring, 3, [segment_name(2, s) for s in (8, 9)], log2)  # 7 is not listed
    report = _verify(tier)
    kinds = {f.kind for f in report.findings}
    assert kinds == {BROKEN_CHAIN}, report.findings
    (finding,) = report.findings
    assert "gap at segment 000000020000000000000007" in finding.detail
    assert base.id in finding.detail


def test_a_file_under_wal_that_is_no_wal_name_is_foreign() -> None:
    keyring = generate_keys().keyring()
    storage = MemoryStorage("primary")
    put_bytes(storage, "database/main/wal/123/not-a-wal-file.zst", b"x")
    put_bytes(storage, "database/main/wal/123/000000010000000000000002.exe", b"x")
    report = _verify(Tier("primary", storage, keyring))
    assert [f.kind for f in report.findings] == [FOREIGN_OBJECT, FOREIGN_OBJECT]
    assert ORPHAN not in {f.kind for f in report.findings}


def test_prune_removes_only_wal_no_restore_can_use() -> None:
    from backupflow.engines.postgres.pruning import remove_loose_wal

    storage, keyring, tier = _memory_tier()
    position = _base_position(6)
    base = _backup(storage, keyring, BackupKind.FULL, 0, position)
    log = _log(storage, keyring, 1, [segment_name(1, s) for s in (5, 6, 7)], base)
    for name in (segment_name(1, 3), segment_name(1, 4), history_name(2), segment_name(1, 8)):
        _wal(storage, name)  # 3, 4: before the base, listed by nothing: loose
    other = wal_path(SYSID + 1, segment_name(1, 2))  # a new cluster before its first full
    put_bytes(storage, wal_key(Category.DATABASE, "main", other, ""), b"x")

    def keys() -> set[str]:
        return {i.key.rsplit("/", 1)[-1] for i in storage.list("database/main/wal/")}

    before = keys()
    later = datetime.now(UTC) + timedelta(hours=2)
    assert (
        remove_loose_wal(tier, Category.DATABASE, "main", now=later, grace=timedelta(days=1)) == []
    )
    removed = remove_loose_wal(tier, Category.DATABASE, "main", now=later, grace=timedelta(hours=1))
    gone = {f"{segment_name(1, s)}{ext}" for s in (3, 4) for ext in ("", ".rec")}
    assert {k.rsplit("/", 1)[-1] for k in removed} == gone
    assert removed[0].endswith(".rec") and removed[1].endswith(".rec")  # records first
    assert keys() == before - gone
    # Every backup still restores: what it lists is all there.
    assert _verify(tier).ok
    assert {o.key for o in log.objects} <= {i.key for i in storage.list("database/main/wal/")}


def test_wal_pushed_by_wal_push_is_verified_through_its_log_and_pruned_when_loose(
    settings: Settings, tmp_path: Path
) -> None:
    """Real wal-push keys (zstd, age, signed records) in a local tier: verify reads them
    through the log backup that lists them and finds nothing wrong with the loose ones;
    prune removes only the loose ones before the base."""
    from backupflow.codecs import get_codec
    from backupflow.engines.postgres.archive import archived_objects, push_wal
    from backupflow.engines.postgres.pruning import remove_loose_wal
    from tests.integration.test_wal_archive import SYSID as PUSHED
    from tests.integration.test_wal_archive import make_data_dir, make_segment

    (tier,) = open_tiers(settings, ("primary",))
    data = make_data_dir(tmp_path)
    for segno in (1, 2, 3, 4):
        segment = make_segment(data, segno)
        push_wal(tier, "gantt", segment.relative_to(data), data_dir=data, codec=get_codec("zstd"))
    position = _base_position(3, PUSHED)
    when = datetime.now(UTC) - timedelta(minutes=5)
    base_id = new_backup_id(BackupKind.FULL, when)
    key = object_key(Category.DATABASE, "gantt", when, base_id, ".base")
    base = Manifest(
        id=base_id,
        category=Category.DATABASE,
        kind=BackupKind.FULL,
        engine="postgres",
        database="gantt",
        started_at=when,
        finished_at=when,
        restore_point=when,
        position=position,
        objects=(_object(tier.storage, "base", key, b"base tar", "none"),),
    )
    Catalog(tier.storage, tier.keyring).write(base)
    names = [segment_name(1, 3)]
    log_id = new_backup_id(BackupKind.LOG, when + timedelta(minutes=1))
    log = Manifest(
        id=log_id,
        category=Category.DATABASE,
        kind=BackupKind.LOG,
        engine="postgres",
        database="gantt",
        started_at=when + timedelta(minutes=1),
        finished_at=when + timedelta(minutes=1),
        restore_point=when + timedelta(minutes=1),
        position={
            "system_identifier": str(PUSHED),
            "timeline": 1,
            "segment_bytes": 16 * 1024 * 1024,
            "first": names[0],
            "last": names[-1],
            "files": names,
            "end_lsn": "0/3000100",
        },
        base_id=base_id,
        parent_id=base_id,
        objects=archived_objects(tier, "gantt", PUSHED, names),
    )
    Catalog(tier.storage, tier.keyring).write(log)
    later = datetime.now(UTC) + timedelta(hours=2)
    gantt = Series(Category.DATABASE, "gantt")
    report = verify([tier], [gantt], now=later, read_data_percent=100, grace=timedelta(hours=1))
    assert report.ok, report.findings
    assert report.summaries[0].sampled >= 3  # the base, and the log's WAL file and record

    removed = remove_loose_wal(
        tier, Category.DATABASE, "gantt", now=later, grace=timedelta(hours=1)
    )

    def bare(key: str) -> str:  # the file name without its push id
        return re.sub(r"\.p[0-9a-f]{16}(?=\.)", "", key.rsplit("/", 1)[-1])

    assert sorted(bare(k) for k in removed) == sorted(
        f"{segment_name(1, s)}{ext}" for s in (1, 2) for ext in (".rec", ".zst.age")
    )
    left = {bare(i.key) for i in tier.storage.list("database/gantt/wal/")}
    assert left == {f"{segment_name(1, s)}{ext}" for s in (3, 4) for ext in (".rec", ".zst.age")}


def test_prune_never_deletes_wal_a_kept_log_also_lists() -> None:
    """Two log backups listing the same WAL file (a run cut between listing and recording,
    then run again): pruning the older keeps what the newer one needs."""
    from backupflow.retention import RetentionPolicy, prune_tier

    storage, keyring, tier = _memory_tier()
    position = _base_position(5)
    old_base = _backup(storage, keyring, BackupKind.FULL, 0, position)
    old_log = _log(storage, keyring, 1, [segment_name(1, s) for s in (5, 6, 7)], old_base)
    new_base = _backup(storage, keyring, BackupKind.FULL, 24 * 3, position)
    new_log = _log(storage, keyring, 24 * 5 + 1, [segment_name(1, s) for s in (7, 8)], new_base)
    shared = {o.key for o in old_log.objects} & {o.key for o in new_log.objects}
    assert shared  # segment 7 and its record

    policy = RetentionPolicy(
        {BackupKind.FULL: 2, BackupKind.DIFF: 1, BackupKind.LOG: 1}, min_fulls=1
    )
    plan, report = prune_tier(
        tier,
        Category.DATABASE,
        "main",
        policy,
        now=WHEN + timedelta(days=5, hours=2),
        dry_run=False,
    )
    assert report is not None and old_log.id in report.deleted, plan.decisions
    present = {i.key for i in storage.list("database/main/")}
    assert {o.key for o in new_log.objects} <= present  # the kept log still restores
    assert not ({o.key for o in old_log.objects} - shared) & present  # the rest went


def test_latest_from_a_base_alone_refuses_a_hole_in_the_archive_after_it() -> None:
    """--latest from a base with no log yet replays whatever was archived after it: a hole
    there would end recovery early without a word, so the restore refuses it first."""
    from backupflow.engines.postgres.presence import check_presence

    storage, keyring, tier = _memory_tier()
    position = _base_position(6)
    base = _backup(storage, keyring, BackupKind.FULL, 0, position)
    for segno in (6, 7, 9):  # 8 is gone
        _wal(storage, segment_name(1, segno))

    def check(latest: bool) -> None:
        check_presence([base], {}, lambda: [tier], database="main", sysid=SYSID, latest=latest)

    check(latest=False)  # a base alone to its own point needs no archived WAL
    with pytest.raises(ChainGapError, match=segment_name(1, 8)):
        check(latest=True)
    _wal(storage, segment_name(1, 8))
    check(latest=True)
