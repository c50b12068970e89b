"""Test helpers: drive the core backup steps without Prefect, and compare databases."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from backupflow.backup import (
    BackupJob,
    build_manifest,
    clean_interrupted,
    decide_backup,
    dump_database,
    store_dump,
)
from backupflow.catalog import Catalog
from backupflow.codecs import codec_for
from backupflow.config import Settings
from backupflow.engines import open_engine
from backupflow.models import BackupKind, Manifest
from backupflow.planning import RestorePlan
from backupflow.restore import RestoreOutcome, execute_restore, load_plan, resolve_target
from backupflow.storage import Tier, open_tiers
from backupflow.tiers import copy_backup

__all__ = ["content_digest", "restore", "snapshot_copy", "take_backup"]


def take_backup(settings: Settings, kind: BackupKind, tiers: list[Tier] | None = None) -> Manifest:
    """The same steps as the backup-database flow, without Prefect: every tier, or raise."""
    tiers = tiers if tiers is not None else open_tiers(settings)
    engine = open_engine(settings)
    decision, parent_tier = decide_backup(tiers, kind, settings)
    job = BackupJob.start(settings.database.name, decision, datetime.now(UTC), parent_tier)
    dump = dump_database(engine, job, settings)
    first, *others = tiers
    objects = store_dump(
        first.storage, job, dump, codec_for(settings.pipeline), settings, keyring=first.keyring
    )
    manifest = build_manifest(job, engine, dump, objects, datetime.now(UTC))
    Catalog(first.storage, first.keyring).write(manifest)
    for tier in others:
        copy_backup(manifest, first, tier, chunk_bytes=settings.pipeline.chunk_bytes)
    return manifest


def restore(
    settings: Settings,
    target_time: datetime | None,
    into: Path,
    *,
    replace: bool = False,
    tiers: list[Tier] | None = None,
) -> tuple[RestorePlan[Manifest], RestoreOutcome]:
    """The same steps as the restore-database flow, without Prefect."""
    tiers = tiers if tiers is not None else open_tiers(settings)
    engine = open_engine(settings)
    loaded = load_plan(tiers, engine, settings.database.name, target_time, datetime.now(UTC))
    target = resolve_target(engine, loaded.plan, into, replace)
    outcome = execute_restore(
        engine, loaded, target, replace=replace, chunk_bytes=settings.pipeline.chunk_bytes
    )
    return loaded.plan, outcome


def content_digest(path: Path) -> str:
    """SHA-256 of a database's schema and rows."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        digest = hashlib.sha256()
        for line in conn.iterdump():
            digest.update(line.encode() + b"\n")
        return digest.hexdigest()
    finally:
        conn.close()


def snapshot_copy(source: Path, dest: Path) -> Path:
    """An independent copy of a live database, for comparison."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(source)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return dest


__all__ += ["clean_interrupted"]
