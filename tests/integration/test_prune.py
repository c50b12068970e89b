"""Pruning real tiers (a folder and a moto S3 bucket over HTTP), then restoring every point
that is left; the executor's order; replication that respects retention."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupflow.backup import clean_interrupted
from backupflow.catalog import MANIFEST_SUFFIX, Catalog
from backupflow.config import RetentionOverrides, Settings
from backupflow.models import BackupKind, Category, Manifest
from backupflow.retention import (
    RetentionPolicy,
    execute_prune,
    plan_retention,
    policy_for,
    prune_tier,
)
from backupflow.storage import MemoryStorage, Tier, open_tiers
from backupflow.tiers import replicate
from tests.support.chain import content_digest, restore, snapshot_copy, take_backup
from tests.support.keys import KEYRING
from tests.support.s3 import MotoServer, client_for, make_bucket

LATER = timedelta(days=31)


def _write(path: Path, sql: str, rows: Iterable[tuple[object, ...]] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        if rows:
            conn.executemany(sql, rows)
        else:
            conn.execute(sql)
    conn.close()


def _history(settings: Settings, copies: Path) -> list[tuple[Manifest, Path]]:
    """Three chains, F D L (x3) then one more log: ten real backups with source copies."""
    live = settings.database.sqlite_path
    _write(live, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    points = []
    for round_ in range(3):
        for kind in (BackupKind.FULL, BackupKind.DIFF, BackupKind.LOG):
            _write(
                live,
                "INSERT INTO t (v) VALUES (?)",
                [(f"{round_}-{kind}-{i}",) for i in range(300)],
            )
            manifest = take_backup(settings, kind)
            points.append((manifest, snapshot_copy(live, copies / f"{manifest.id}.db")))
    _write(live, "DELETE FROM t WHERE id % 3 = 0")
    manifest = take_backup(settings, BackupKind.LOG)
    points.append((manifest, snapshot_copy(live, copies / f"{manifest.id}.db")))
    return points


@pytest.fixture
def s3_secondary(settings: Settings, moto_server: MotoServer) -> Settings:
    bucket = f"prune-{uuid.uuid4().hex[:10]}"
    make_bucket(client_for("ap-northeast-2", moto_server.url), bucket, "ap-northeast-2")
    secondary = settings.repository.secondary.model_copy(
        update={
            "url": f"s3://{bucket}",
            "region": "ap-northeast-2",
            "endpoint_url": moto_server.url,
            "addressing_style": "path",
        }
    )
    repository = settings.repository.model_copy(
        update={"secondary": secondary, "request_attempts": 1}
    )
    return settings.model_copy(update={"repository": repository})


def test_prune_real_tiers_then_every_remaining_point_restores(
    s3_secondary: Settings, tmp_path: Path
) -> None:
    settings = s3_secondary
    points = _history(settings, tmp_path / "copies")
    ids = [m.id for m, _ in points]
    later = datetime.now(UTC) + LATER
    tiers = open_tiers(settings, ("primary", "secondary"))
    for tier in tiers:
        policy = policy_for(settings, tier.name, Category.DATABASE)
        _plan, report = prune_tier(
            tier, Category.DATABASE, "gantt", policy, now=later, dry_run=False
        )
        assert report is not None and not report.failed
        # F2 and F3 (the two newest fulls) and the last chain (F3 D3 L3 L4) stay.
        assert sorted(report.deleted) == sorted([ids[0], ids[1], ids[2], ids[4], ids[5]])
        remaining = [e.id for e in Catalog(tier.storage).entries(Category.DATABASE, "gantt")]
        assert remaining == [ids[3], ids[6], ids[7], ids[8], ids[9]]
        for manifest, _copy in points:
            if manifest.id in report.deleted:
                for obj in manifest.objects:
                    assert not list(tier.storage.list(obj.key))

        for manifest, copy in points:
            if manifest.id not in remaining:
                continue
            _plan, outcome = restore(
                settings,
                manifest.restore_point,
                tmp_path / "restored" / tier.name / f"{manifest.id}.db",
                tiers=[tier],
            )
            assert content_digest(outcome.target) == content_digest(copy)


def test_dry_run_deletes_nothing(settings: Settings, tmp_path: Path) -> None:
    points = _history(settings, tmp_path / "copies")
    [tier] = open_tiers(settings, ("primary",))
    policy = policy_for(settings, "primary", Category.DATABASE)
    plan, report = prune_tier(
        tier, Category.DATABASE, "gantt", policy, now=datetime.now(UTC) + LATER, dry_run=True
    )
    assert report is None and len(plan.deletions) == 5
    assert len(Catalog(tier.storage).entries(Category.DATABASE, "gantt")) == len(points)


class RecordingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__("recording")
        self.deleted: list[str] = []

    def delete(self, key: str) -> None:
        self.deleted.append(key)
        super().delete(key)


def test_manifest_goes_before_data_and_dependents_before_their_base(settings: Settings) -> None:
    live = settings.database.sqlite_path
    _write(live, "CREATE TABLE t (v)")
    storage = RecordingStorage()
    tier = Tier("primary", storage, KEYRING)
    made = []
    for kind in (BackupKind.FULL, BackupKind.DIFF, BackupKind.LOG, BackupKind.FULL):
        _write(live, "INSERT INTO t VALUES (1)")
        made.append(take_backup(settings, kind, [tier]))
    plan = plan_retention(
        Catalog(storage, KEYRING).entries(Category.DATABASE, "gantt"),
        RetentionPolicy({k: 1 for k in BackupKind}, min_fulls=1),
        datetime.now(UTC) + timedelta(days=5),
    )
    report = execute_prune(Catalog(storage, KEYRING), "primary", plan)
    assert report.deleted == [made[2].id, made[1].id, made[0].id]
    owners = [key.rsplit("/", 1)[-1] for key in storage.deleted]
    for manifest in made[:3]:
        positions = [
            i
            for i, name in enumerate(owners)
            if name.startswith(manifest.id) or f"_{manifest.id}_" in name
        ]
        assert owners[positions[0]].endswith(MANIFEST_SUFFIX), "manifest first"
        assert len(positions) == 1 + len(manifest.objects)


def test_an_interrupted_prune_leaves_no_half_backup(settings: Settings) -> None:
    live = settings.database.sqlite_path
    _write(live, "CREATE TABLE t (v)")
    [tier] = open_tiers(settings, ("primary",))
    full = take_backup(settings, BackupKind.FULL, [tier])
    Catalog(tier.storage).storage.delete(
        next(i.key for i in tier.storage.list("") if i.key.endswith(MANIFEST_SUFFIX))
    )  # the prune stopped right after deleting the manifest
    assert Catalog(tier.storage).entries(Category.DATABASE, "gantt") == []
    removed = clean_interrupted(
        tier.storage, Category.DATABASE, "gantt", now=datetime.now(UTC), grace=timedelta(0)
    )
    assert sorted(removed) == sorted(obj.key for obj in full.objects)


def test_replication_does_not_bring_back_what_a_tier_pruned(
    settings: Settings, tmp_path: Path
) -> None:
    shorter = settings.repository.primary.model_copy(
        update={"retention": RetentionOverrides(database_full=1, database_diff=1, database_log=1)}
    )
    settings = settings.model_copy(
        update={"repository": settings.repository.model_copy(update={"primary": shorter})}
    )
    points = _history(settings, tmp_path / "copies")
    later = datetime.now(UTC) + timedelta(days=5)
    tiers = open_tiers(settings)
    primary = tiers[0]
    policy = policy_for(settings, "primary", Category.DATABASE)
    _plan, report = prune_tier(
        primary, Category.DATABASE, "gantt", policy, now=later, dry_run=False
    )
    assert report is not None and report.deleted
    policies = {t.name: policy_for(settings, t.name, Category.DATABASE) for t in tiers}
    again = replicate(tiers, "database", "gantt", chunk_bytes=1 << 20, policies=policies, now=later)
    assert again.copied == []
    remaining = {e.id for e in Catalog(primary.storage).entries(Category.DATABASE, "gantt")}
    assert not remaining & set(report.deleted)
    assert len(Catalog(tiers[1].storage).entries(Category.DATABASE, "gantt")) == len(points)
