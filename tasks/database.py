"""Tasks over a database engine: plan, dump, restore."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from prefect import get_run_logger, task

from backupflow import backup, restore
from backupflow.config import Settings
from backupflow.engines.base import BackupSource, Dump, Engine
from backupflow.fsutil import privatize_files
from backupflow.models import BackupKind, Category, Manifest
from backupflow.planning import BackupDecision
from backupflow.progress import Progress
from backupflow.storage import Tier
from tasks._options import SIDE_EFFECTS

__all__ = ["decide_backup", "dump_database", "dump_files", "plan_restore", "restore_chain"]


@task(name="decide-backup", task_run_name="decide-{requested}-backup", **SIDE_EFFECTS)
def decide_backup(
    tiers: Sequence[Tier], requested: BackupKind, settings: Settings
) -> tuple[BackupDecision[Manifest], Tier | None]:
    """Choose the backup's kind, base and parent from the tiers' catalogs."""
    decision, parent_tier = backup.decide_backup(tiers, requested, settings)
    logger = get_run_logger()
    for note in decision.notes:
        logger.warning(note)
    if decision.parent is not None and parent_tier is not None:
        logger.info(
            "%s backup builds on %s (read from %s)",
            decision.kind.value,
            decision.parent.id,
            parent_tier.name,
        )
    return decision, parent_tier


@task(name="dump-database", task_run_name="dump-{job.backup_id}", **SIDE_EFFECTS)
def dump_database(engine: Engine, job: backup.BackupJob, settings: Settings) -> Dump:
    """Let the engine write the backup's files into the staging folder."""
    dump = backup.dump_database(engine, job, settings)
    get_run_logger().info(
        "%s dump of %s taken at %s: %s",
        dump.kind.value,
        job.database,
        dump.restore_point.isoformat(),
        ", ".join(f"{f.role} {f.path.stat().st_size} bytes" for f in dump.files),
    )
    return dump


@task(name="dump-files", task_run_name="dump-{job.backup_id}", **SIDE_EFFECTS)
def dump_files(
    engine: Engine, job: backup.BackupJob, settings: Settings, previous: BackupSource | None
) -> Dump:
    """Read the file set into the job's new private staging folder (a tar stream, or a member
    list whose unchanged files reuse the previous backup's hashes)."""
    staging = backup.prepare_staging(job, settings)
    dump = engine.dump(BackupKind.FULL, previous, staging)
    privatize_files(staging)  # the tar holds the 0600 .env: 0600 whatever the tar module did
    get_run_logger().info(
        "%s: %s members, %s bytes (%s)",
        job.database,
        dump.position.get("members"),
        dump.position.get("bytes"),
        dump.position.get("layout"),
    )
    return dump


@task(name="plan-restore", task_run_name="plan-restore-{database}", **SIDE_EFFECTS)
def plan_restore(
    tiers: Sequence[Tier],
    engine: Engine,
    database: str,
    target_time: datetime | None,
    now: datetime,
    category: Category = Category.DATABASE,
) -> restore.LoadedPlan:
    """Plan a restore from the tiers; the engine chooses the chain."""
    loaded = restore.load_plan(tiers, engine, database, target_time, now, category)
    logger = get_run_logger()
    for problem in loaded.problems:
        logger.warning(problem)
    for note in loaded.plan.notes:
        logger.warning(note)
    return loaded


@task(name="restore-chain", task_run_name="restore-{loaded.plan.database}", **SIDE_EFFECTS)
def restore_chain(
    engine: Engine,
    loaded: restore.LoadedPlan,
    target: Path,
    replace: bool,
    chunk_bytes: int,
    progress: Progress | None = None,
) -> restore.RestoreOutcome:
    """Download, verify and apply the chain into a scratch file, check it, install it."""
    logger = get_run_logger()
    outcome = restore.execute_restore(
        engine,
        loaded,
        target,
        replace=replace,
        chunk_bytes=chunk_bytes,
        progress=progress,
        report=logger.error,
    )
    logger.info(
        "restored %s to %s in %.1f s (restore point %s), from %s",
        loaded.plan.database,
        outcome.target,
        outcome.seconds,
        loaded.plan.restore_point.isoformat(),
        ", ".join(sorted(set(outcome.tiers_used.values()))),
    )
    for aside in outcome.kept_aside:
        logger.warning("the replaced file was kept aside as %s", aside)
    return outcome
