"""Flow: back up the configured database (full, differential or log) to every tier."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency

from backupflow.backup import BackupJob, build_manifest, check_backup_keys, remove_staging
from backupflow.backuplog import BackupLog
from backupflow.codecs import codec_for
from backupflow.config import Settings, current_settings
from backupflow.engines import databases_to_back_up, open_engine
from backupflow.engines.base import Dump
from backupflow.errors import BackupflowError, ConfigError
from backupflow.keys import Keyring
from backupflow.models import BackupKind, Category, Manifest
from backupflow.progress import current_progress
from backupflow.storage import open_tiers
from flows._common import finish_backup, heal_tiers, log_backup_failure, store_on_tiers
from flows._notify import notify_on_failure
from tasks.database import decide_backup, dump_database
from tasks.storage import compress_and_store

__all__ = ["backup_database"]


@flow(
    name="backup-database",
    flow_run_name="backup-database-{kind}",
    persist_result=False,
    on_failure=[notify_on_failure("backup_administrator")],
)
def backup_database(kind: BackupKind = BackupKind.FULL) -> list[Manifest]:
    """Back up the configured database(s) to the primary, secondary and DR tiers.

    It first copies to each tier whatever an earlier run left missing there.  A tier that
    fails does not stop the others: the backup is kept where it could be stored and the run
    ends Failed naming the missing tier.  A differential or log backup with no full backup
    to build on becomes a full backup (``database.missing_full=promote``) or fails (``fail``).
    With several databases (``database.databases``), each is backed up in turn and the run
    fails at the end if any of them failed.  With ``["*"]``, a database whose name breaks the
    name rule is never used: it is skipped, and the run fails at the end saying how many.
    """
    settings = current_settings()
    names, skipped = databases_to_back_up(settings)
    done: list[Manifest] = []
    failures: list[str] = []
    if skipped:
        # Never used, never shown: such a name would become a path on the server.
        failures.append(
            f"{skipped} database(s) on the server have names that break the name rule and "
            "were not backed up; rename them, or list the databases to back up in "
            "BACKUPFLOW_DATABASE__DATABASES"
        )
        get_run_logger().warning("%s", failures[-1])
    for name in names:
        one = settings.model_copy(
            update={"database": settings.database.model_copy(update={"name": name})}
        )
        try:
            if settings.concurrency_limit:
                # strict: a limit that was never created is an error, not a silent overlap
                with concurrency(settings.concurrency_limit, occupy=1, strict=True):
                    done.append(_backup_one(one, kind))
            else:
                done.append(_backup_one(one, kind))
        except BackupflowError as exc:
            if len(names) == 1 and not skipped:
                raise
            failures.append(f"{name}: {exc}")
    if failures:
        failed = len(failures) - (1 if skipped else 0) + skipped
        raise BackupflowError(
            f"{failed} of {len(names) + skipped} database backups failed: " + "; ".join(failures)
        )
    return done


def _backup_one(settings: Settings, kind: BackupKind) -> Manifest:
    logger = get_run_logger()
    log = BackupLog(settings.backup_log)
    log.check_writable()
    database = settings.database.name
    tiers = open_tiers(settings)
    job: BackupJob | None = None
    dump: Dump | None = None
    engine = open_engine(settings)
    try:
        if kind is BackupKind.DIFF and not engine.capabilities.differential:
            raise ConfigError(f"the {engine.name} engine cannot take differential backups.")
        if kind is BackupKind.LOG and not engine.capabilities.log:
            raise ConfigError(f"the {engine.name} engine cannot take log backups.")
        check_backup_keys(tiers[0].keyring if tiers else Keyring())
        engine.check_source()
        healing = heal_tiers(tiers, Category.DATABASE, database, settings, logger)
        decision, parent_tier = decide_backup(tiers, kind, settings)
        job = BackupJob.start(database, decision, datetime.now(UTC), parent_tier)
        dump = dump_database(engine, job, settings)
        this_job, this_dump = job, dump
        codec = codec_for(settings.pipeline)
        stored = store_on_tiers(
            tiers,
            job,
            lambda tier: compress_and_store(
                tier,
                this_job,
                this_dump,
                codec,
                settings,
                current_progress(),
            ),
            lambda objects: build_manifest(this_job, engine, this_dump, objects, datetime.now(UTC)),
            settings,
            logger,
        )
    except BackupflowError as exc:
        log_backup_failure(
            log, job, exc, category=Category.DATABASE, database=database, kind=kind.value
        )
        raise
    finally:
        if job is not None:
            remove_staging(job, settings)
        if dump is not None:
            engine.cleanup(dump)
    return finish_backup(
        stored,
        tiers=tiers,
        healing=healing,
        log=log,
        settings=settings,
        message="Database backup",
        logger=logger,
    )
