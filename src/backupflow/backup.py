"""Backup operations, one function per step; the Prefect tasks wrap these.

Order of a backup: clean left-overs -> decide (plan) -> dump -> store each file (compress,
hash, verify) -> write the manifest last -> log.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from backupflow.catalog import Catalog, object_key
from backupflow.codecs import Codec
from backupflow.config import Settings
from backupflow.engines.base import BackupSource, Dump, Engine
from backupflow.models import BackupKind, Category, Manifest, StoredObject, new_backup_id
from backupflow.pipeline import open_verified, store_stream
from backupflow.planning import BackupDecision, plan_backup
from backupflow.storage.base import Storage

__all__ = [
    "BackupJob",
    "clean_interrupted",
    "commit_backup",
    "decide_backup",
    "dump_database",
    "source_of",
    "store_dump",
]

Progress = Callable[[int], None]


@dataclass(frozen=True)
class BackupJob:
    """Identity of one backup run, fixed before any data moves."""

    backup_id: str
    database: str
    started_at: datetime
    decision: BackupDecision

    @classmethod
    def start(cls, database: str, decision: BackupDecision, now: datetime) -> BackupJob:
        return cls(new_backup_id(decision.kind, now), database, now, decision)

    def staging(self, settings: Settings) -> Path:
        return settings.staging_dir / self.backup_id


def clean_interrupted(
    storage: Storage, category: Category, name: str, *, now: datetime, grace: timedelta
) -> list[str]:
    """Remove what interrupted backups left: temporary files and data without a manifest."""
    cutoff = now - grace
    removed = storage.cleanup_incomplete(cutoff)
    catalog = Catalog(storage)
    removed += catalog.remove(catalog.orphans(category, name, older_than=cutoff))
    return removed


def decide_backup(catalog: Catalog, requested: BackupKind, settings: Settings) -> BackupDecision:
    """Read the catalog and plan the next backup of the configured database."""
    scan = catalog.scan(Category.DATABASE, settings.database.name)
    return plan_backup(
        scan.manifests,
        requested,
        database=settings.database.name,
        missing_full=settings.database.missing_full,
    )


def source_of(
    storage: Storage, manifest: Manifest, *, chunk_bytes: int, progress: Progress | None = None
) -> BackupSource:
    """A stored backup whose objects open as verified, decompressed streams."""
    return BackupSource(
        manifest=manifest,
        open_object=lambda role: open_verified(
            storage, manifest.object(role), chunk_bytes=chunk_bytes, progress=progress
        ),
    )


def dump_database(engine: Engine, job: BackupJob, storage: Storage, settings: Settings) -> Dump:
    """Let the engine write the backup's files into this job's staging folder."""
    parent = job.decision.parent
    source = (
        source_of(storage, parent, chunk_bytes=settings.pipeline.chunk_bytes) if parent else None
    )
    staging = job.staging(settings)
    if staging.exists():
        shutil.rmtree(staging)
    return engine.dump(job.decision.kind, source, staging)


def store_dump(
    storage: Storage,
    job: BackupJob,
    dump: Dump,
    codec: Codec,
    settings: Settings,
    progress: Progress | None = None,
) -> tuple[StoredObject, ...]:
    """Stream every dump file through compress + SHA-256 into the storage, verified."""
    stored = []
    for item in dump.files:
        key = object_key(
            Category.DATABASE,
            job.database,
            job.started_at,
            job.backup_id,
            f".{item.role}{codec.extension}",
        )
        with open(item.path, "rb") as source:
            stored.append(
                store_stream(
                    storage,
                    key,
                    source,
                    codec,
                    role=item.role,
                    chunk_bytes=settings.pipeline.chunk_bytes,
                    verify=settings.pipeline.verify_after_write,
                    progress=progress,
                )
            )
    return tuple(stored)


def commit_backup(
    catalog: Catalog,
    job: BackupJob,
    engine: Engine,
    dump: Dump,
    objects: tuple[StoredObject, ...],
    finished_at: datetime,
) -> Manifest:
    """Write the manifest: the moment the stored objects become a backup."""
    decision = job.decision
    manifest = Manifest(
        id=job.backup_id,
        category=Category.DATABASE,
        kind=decision.kind,
        engine=engine.name,
        database=job.database,
        started_at=job.started_at,
        finished_at=finished_at,
        restore_point=dump.restore_point,
        position=dump.position,
        base_id=decision.base.id if decision.base else None,
        parent_id=decision.parent.id if decision.parent else None,
        objects=objects,
        notes=decision.notes,
    )
    catalog.write(manifest)
    return manifest
