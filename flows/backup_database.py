"""Flow: back up the configured database (full, differential or log)."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from backupflow.backup import BackupJob
from backupflow.backuplog import BackupLog
from backupflow.catalog import Catalog
from backupflow.codecs import codec_for
from backupflow.config import current_settings
from backupflow.engines import open_engine
from backupflow.errors import BackupflowError, ConfigError
from backupflow.models import BackupKind, Category, Manifest
from backupflow.progress import current_progress
from backupflow.reporting import artifact_key, iso, manifest_row
from backupflow.storage import open_primary
from tasks.backuplog import log_event
from tasks.database import decide_backup, dump_database
from tasks.storage import clean_interrupted, compress_and_store, write_manifest

__all__ = ["backup_database"]


@flow(name="backup-database", flow_run_name="backup-database-{kind}", persist_result=False)
def backup_database(kind: BackupKind = BackupKind.FULL) -> Manifest:
    """Back up the configured database and record it in the primary tier.

    A differential or log backup with no full backup to build on becomes a full backup
    (``database.missing_full=promote``, the default) or fails (``fail``).
    """
    settings = current_settings()
    logger = get_run_logger()
    log = BackupLog(settings.backup_log)
    log.check_writable()
    database = settings.database.name
    storage = open_primary(settings)
    catalog = Catalog(storage)
    job: BackupJob | None = None
    clock = time.monotonic()
    try:
        engine = open_engine(settings)
        if kind is BackupKind.DIFF and not engine.capabilities.differential:
            raise ConfigError(f"the {engine.name} engine cannot take differential backups.")
        if kind is BackupKind.LOG and not engine.capabilities.log:
            raise ConfigError(f"the {engine.name} engine cannot take log backups.")
        engine.check_source()
        clean_interrupted(storage, Category.DATABASE, database, settings.orphan_grace_minutes)
        decision = decide_backup(catalog, kind, settings)
        job = BackupJob.start(database, decision, datetime.now(UTC))
        dump = dump_database(engine, job, storage, settings)
        objects = compress_and_store(
            storage, job, dump, codec_for(settings.pipeline), settings, current_progress()
        )
        manifest = write_manifest(catalog, job, engine, dump, objects)
    except BackupflowError as exc:
        log_event(
            log,
            "backup",
            "failed",
            id=job.backup_id if job else "-",
            kind=job.decision.kind.value if job else kind.value,
            database=database,
            error=str(exc),
        )
        raise
    finally:
        if job is not None:
            shutil.rmtree(job.staging(settings), ignore_errors=True)
    seconds = time.monotonic() - clock
    row = manifest_row(manifest)
    log_event(
        log,
        "backup",
        "completed",
        message=f"Database backup completed at {iso(manifest.finished_at)}",
        tier=storage.name,
        **row,
    )
    create_table_artifact(
        key=artifact_key("backup", database, manifest.kind.value),
        table=[{**row, "tier": storage.name, "notes": "; ".join(manifest.notes) or "-"}],
        description=f"Latest {manifest.kind.value} backup of {database}",
    )
    logger.info("%s backup %s completed in %.1f s", manifest.kind.value, manifest.id, seconds)
    return manifest
