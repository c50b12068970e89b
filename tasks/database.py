"""Tasks over a database engine: plan, dump, restore."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from backupflow import backup, restore
from backupflow.catalog import Catalog
from backupflow.config import Settings
from backupflow.engines.base import Dump, Engine
from backupflow.models import BackupKind
from backupflow.planning import BackupDecision, RestorePlan
from backupflow.progress import Progress
from backupflow.storage.base import Storage
from tasks._options import SIDE_EFFECTS

__all__ = ["decide_backup", "dump_database", "restore_chain"]


@task(name="decide-backup", task_run_name="decide-{requested}-backup", **SIDE_EFFECTS)
def decide_backup(catalog: Catalog, requested: BackupKind, settings: Settings) -> BackupDecision:
    """Choose the backup's kind, base and parent from the catalog."""
    decision = backup.decide_backup(catalog, requested, settings)
    logger = get_run_logger()
    for note in decision.notes:
        logger.warning(note)
    if decision.parent is not None:
        logger.info("%s backup builds on %s", decision.kind.value, decision.parent.id)
    return decision


@task(name="dump-database", task_run_name="dump-{job.backup_id}", **SIDE_EFFECTS)
def dump_database(
    engine: Engine, job: backup.BackupJob, storage: Storage, settings: Settings
) -> Dump:
    """Let the engine write the backup's files into the staging folder."""
    dump = backup.dump_database(engine, job, storage, settings)
    get_run_logger().info(
        "%s dump of %s taken at %s: %s",
        dump.kind.value,
        job.database,
        dump.restore_point.isoformat(),
        ", ".join(f"{f.role} {f.path.stat().st_size} bytes" for f in dump.files),
    )
    return dump


@task(name="restore-chain", task_run_name="restore-{plan.database}", **SIDE_EFFECTS)
def restore_chain(
    engine: Engine,
    storage: Storage,
    plan: RestorePlan,
    target: Path,
    replace: bool,
    chunk_bytes: int,
    progress: Progress | None = None,
) -> restore.RestoreOutcome:
    """Download, verify and apply the chain into a scratch file, check it, install it."""
    outcome = restore.execute_restore(
        engine, storage, plan, target, replace=replace, chunk_bytes=chunk_bytes, progress=progress
    )
    logger = get_run_logger()
    logger.info(
        "restored %s to %s in %.1f s (restore point %s)",
        plan.database,
        outcome.target,
        outcome.seconds,
        plan.restore_point.isoformat(),
    )
    for aside in outcome.kept_aside:
        logger.warning("the replaced file was kept aside as %s", aside)
    return outcome
