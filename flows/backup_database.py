"""Flow: back up the configured database (full, differential or log) to every tier."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from backupflow.backup import BackupJob, build_manifest
from backupflow.backuplog import BackupLog
from backupflow.codecs import codec_for
from backupflow.config import current_settings
from backupflow.engines import open_engine
from backupflow.errors import BackupflowError, ConfigError, StorageError, TierError
from backupflow.models import BackupKind, Category, Manifest
from backupflow.progress import current_progress
from backupflow.reporting import artifact_key, iso, manifest_row
from backupflow.storage import Tier, open_tiers
from tasks.backuplog import log_event
from tasks.database import decide_backup, dump_database
from tasks.storage import (
    clean_interrupted,
    compress_and_store,
    copy_to_tier,
    prune,
    replicate,
    write_manifest,
)

__all__ = ["backup_database"]


@flow(name="backup-database", flow_run_name="backup-database-{kind}", persist_result=False)
def backup_database(kind: BackupKind = BackupKind.FULL) -> Manifest:
    """Back up the configured database to the primary, secondary and DR tiers.

    It first copies to each tier whatever an earlier run left missing there.  A tier that
    fails does not stop the others: the backup is kept where it could be stored and the run
    ends Failed naming the missing tier.  A differential or log backup with no full backup
    to build on becomes a full backup (``database.missing_full=promote``) or fails (``fail``).
    """
    settings = current_settings()
    logger = get_run_logger()
    log = BackupLog(settings.backup_log)
    log.check_writable()
    database = settings.database.name
    chunk = settings.pipeline.chunk_bytes
    tiers = open_tiers(settings)
    job: BackupJob | None = None
    manifest: Manifest | None = None
    stored_on: list[str] = []
    missing: dict[str, str] = {}
    clock = time.monotonic()
    try:
        engine = open_engine(settings)
        if kind is BackupKind.DIFF and not engine.capabilities.differential:
            raise ConfigError(f"the {engine.name} engine cannot take differential backups.")
        if kind is BackupKind.LOG and not engine.capabilities.log:
            raise ConfigError(f"the {engine.name} engine cannot take log backups.")
        engine.check_source()
        healing = replicate(tiers, Category.DATABASE, database, settings)
        for tier in tiers:
            try:
                clean_interrupted(tier, Category.DATABASE, database, settings.orphan_grace_minutes)
            except BackupflowError as exc:
                logger.warning("could not clean %s: %s", tier.name, exc)
        decision, parent_tier = decide_backup(tiers, kind, settings)
        job = BackupJob.start(database, decision, datetime.now(UTC), parent_tier)
        dump = dump_database(engine, job, settings)
        holder: Tier | None = None
        for tier in tiers:
            try:
                if holder is None or manifest is None:
                    objects = compress_and_store(
                        tier, job, dump, codec_for(settings.pipeline), settings, current_progress()
                    )
                    manifest = build_manifest(job, engine, dump, objects, datetime.now(UTC))
                else:
                    copy_to_tier(manifest, holder, tier, chunk)
                write_manifest(tier, manifest)
            except BackupflowError as exc:
                missing[tier.name] = str(exc)
                logger.error(
                    "backup %s could not be stored in %s: %s", job.backup_id, tier.name, exc
                )
                continue
            holder = holder or tier
            stored_on.append(tier.name)
        if manifest is None or not stored_on:
            raise StorageError(
                f"backup {job.backup_id} could not be stored on any tier: "
                + "; ".join(f"{name}: {why}" for name, why in missing.items())
            )
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
        "completed" if not missing else "incomplete",
        message=f"Database backup completed at {iso(manifest.finished_at)}",
        tiers=stored_on,
        missing=missing,
        **row,
    )
    create_table_artifact(
        key=artifact_key("backup", database, manifest.kind.value),
        table=[
            {
                **row,
                "tiers": ", ".join(stored_on),
                "missing": ", ".join(missing) or "-",
                "notes": "; ".join(manifest.notes) or "-",
            }
        ],
        description=f"Latest {manifest.kind.value} backup of {database}",
    )
    logger.info(
        "%s backup %s stored on %s in %.1f s",
        manifest.kind.value,
        manifest.id,
        ", ".join(stored_on),
        seconds,
    )
    gaps = [f"{name}: {why}" for name, why in missing.items()] + healing.problems
    if gaps:
        raise TierError(
            f"backup {manifest.id} is stored on {', '.join(stored_on)} but a tier is missing "
            f"backups ({'; '.join(gaps)}); the next backup run or `backupflow replicate` "
            "copies them once the tier is reachable; nothing was pruned."
        )
    # Retention runs last, and only after a backup that reached every tier.
    for tier in tiers:
        try:
            prune(tier, Category.DATABASE, database, settings, False, log)
        except BackupflowError as exc:
            logger.error("retention could not run in %s: %s", tier.name, exc)
    return manifest
