"""Tasks over a storage tier: clean-up, compress + checksum + store, manifest, catalog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import get_run_logger, task

from backupflow import backup
from backupflow.catalog import Catalog, CatalogScan
from backupflow.codecs import Codec
from backupflow.config import Settings
from backupflow.engines.base import Dump, Engine
from backupflow.models import Category, Manifest, StoredObject
from backupflow.progress import Progress
from backupflow.storage.base import Storage
from tasks._options import SIDE_EFFECTS, retry_if_retryable

__all__ = ["clean_interrupted", "compress_and_store", "read_catalog", "write_manifest"]


@task(name="clean-interrupted", task_run_name="clean-interrupted-{name}", **SIDE_EFFECTS)
def clean_interrupted(
    storage: Storage, category: Category, name: str, grace_minutes: int
) -> list[str]:
    """Remove left-overs of interrupted backups (temporary files, data without manifest)."""
    removed = backup.clean_interrupted(
        storage, category, name, now=datetime.now(UTC), grace=timedelta(minutes=grace_minutes)
    )
    if removed:
        get_run_logger().warning(
            "removed %d left-over object(s) of interrupted backups from %s: %s",
            len(removed),
            storage.name,
            ", ".join(removed),
        )
    return removed


@task(name="read-catalog", task_run_name="read-catalog-{name}", **SIDE_EFFECTS)
def read_catalog(catalog: Catalog, category: Category, name: str) -> CatalogScan:
    """List the manifests of one database or file set; unreadable ones are logged."""
    scan = catalog.scan(category, name)
    logger = get_run_logger()
    for problem in scan.problems:
        logger.warning("ignored: %s", problem)
    logger.info("%d backup(s) of %s in %s", len(scan.manifests), name, catalog.storage.name)
    return scan


@task(
    name="compress-and-store",
    task_run_name="compress-and-store-{job.backup_id}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_if_retryable,
    **SIDE_EFFECTS,
)
def compress_and_store(
    storage: Storage,
    job: backup.BackupJob,
    dump: Dump,
    codec: Codec,
    settings: Settings,
    progress: Progress | None = None,
) -> tuple[StoredObject, ...]:
    """Compress, hash and store every file of a dump, each read back and verified."""
    objects = backup.store_dump(storage, job, dump, codec, settings, progress)
    for obj in objects:
        get_run_logger().info(
            "stored %s: %d -> %d bytes (%s), sha256 %s",
            obj.key,
            obj.raw_size,
            obj.size,
            obj.codec,
            obj.sha256[:16],
        )
    return objects


@task(name="write-manifest", task_run_name="write-manifest-{job.backup_id}", **SIDE_EFFECTS)
def write_manifest(
    catalog: Catalog,
    job: backup.BackupJob,
    engine: Engine,
    dump: Dump,
    objects: tuple[StoredObject, ...],
) -> Manifest:
    """Write the manifest last: only now is the backup listed."""
    manifest = backup.commit_backup(catalog, job, engine, dump, objects, datetime.now(UTC))
    get_run_logger().info(
        "backup %s recorded: restore point %s", manifest.id, manifest.restore_point.isoformat()
    )
    return manifest
