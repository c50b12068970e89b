"""Flow: back up one file set (configuration, application logs or user uploads)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger

from backupflow.backup import (
    BackupJob,
    build_manifest,
    check_backup_keys,
    readable_with,
    remove_staging,
    source_of,
)
from backupflow.backuplog import BackupLog
from backupflow.codecs import codec_for
from backupflow.config import current_settings
from backupflow.errors import BackupflowError
from backupflow.filesets import FILE_SETS, FileSetName, is_content_addressed
from backupflow.filesets.contents import latest_backup
from backupflow.filesets.engine import FileSetEngine
from backupflow.keys import Keyring
from backupflow.models import BackupKind, Manifest, StoredObject
from backupflow.planning import BackupDecision
from backupflow.progress import current_progress
from backupflow.storage import Tier, open_tiers
from flows._common import finish_backup, heal_tiers, log_backup_failure, store_on_tiers
from flows._notify import notify_on_failure
from tasks.database import dump_files
from tasks.storage import compress_and_store, store_contents

__all__ = ["backup_files"]


@flow(
    name="backup-files",
    flow_run_name="backup-files-{file_set}",
    persist_result=False,
    on_failure=[notify_on_failure("backup_administrator")],
)
def backup_files(file_set: FileSetName = "config") -> Manifest:
    """Back up one file set to every tier.

    ``config`` and ``logs`` are stored as one tar stream per backup; ``uploads`` stores each
    distinct file content once and lists which content every path had.  Files that change
    or vanish while read are reported; an unreadable file fails the run after the rest is
    stored.
    """
    settings = current_settings()
    logger = get_run_logger()
    log = BackupLog(settings.backup_log)
    log.check_writable()
    category = FILE_SETS[file_set]
    chosen = getattr(settings.files, file_set)
    engine = FileSetEngine(file_set, chosen, staging_dir=settings.staging_dir)
    tiers = open_tiers(settings)
    job: BackupJob | None = None
    try:
        check_backup_keys(tiers[0].keyring if tiers else Keyring())
        engine.check_source()
        healing = heal_tiers(tiers, category, file_set, settings, logger)
        previous = (
            latest_backup(tiers, category, file_set) if is_content_addressed(file_set) else None
        )
        decision: BackupDecision[Manifest] = BackupDecision(BackupKind.FULL)
        job = BackupJob.start(file_set, decision, datetime.now(UTC), category=category)
        if previous and not readable_with(previous[0], previous[1].keyring):
            logger.warning(
                "the previous backup %s of %s is encrypted to a key this worker holds no "
                "identity for, so every file is read and hashed again (set "
                "BACKUPFLOW_CRYPTO__IDENTITIES on the worker to reuse its hashes)",
                previous[0].id,
                file_set,
            )
        reference = (
            source_of(
                previous[1].storage,
                previous[0],
                chunk_bytes=settings.pipeline.chunk_bytes,
                keyring=previous[1].keyring,
            )
            if previous and readable_with(previous[0], previous[1].keyring)
            else None
        )
        dump = dump_files(engine, job, settings, reference)
        codec = codec_for(settings.pipeline)
        this_job = job

        def first_store(tier: Tier) -> tuple[StoredObject, ...]:
            contents: tuple[StoredObject, ...] = ()
            if is_content_addressed(file_set):
                contents = store_contents(
                    tier,
                    this_job,
                    dump,
                    chosen,
                    codec,
                    engine.report,
                    previous[0] if previous else None,
                    settings,
                    current_progress(),
                )
            return contents + compress_and_store(
                tier, this_job, dump, codec, settings, current_progress()
            )

        stored = store_on_tiers(
            tiers,
            job,
            first_store,
            lambda objects: build_manifest(
                this_job, engine, dump, objects, datetime.now(UTC), notes=engine.report.notes()
            ),
            settings,
            logger,
        )
    except BackupflowError as exc:
        log_backup_failure(log, job, exc, category=category, database=file_set, kind="full")
        raise
    finally:
        if job is not None:
            remove_staging(job, settings)
    for note in stored.manifest.notes:
        logger.warning(note)
    unreadable = engine.report.unreadable
    return finish_backup(
        stored,
        tiers=tiers,
        healing=healing,
        log=log,
        settings=settings,
        message=f"{file_set.capitalize()} backup",
        logger=logger,
        extra_failure=(
            f"{len(unreadable)} file(s) of {file_set} could not be read and are not in backup "
            f"{stored.manifest.id} (the rest is stored): {', '.join(unreadable[:10])}"
            if unreadable
            else None
        ),
    )
