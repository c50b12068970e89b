"""Flow: restore the configured database to a point in time or to its latest state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from backupflow.backuplog import BackupLog
from backupflow.catalog import Catalog
from backupflow.config import current_settings
from backupflow.engines import open_engine
from backupflow.errors import BackupflowError
from backupflow.models import Category
from backupflow.planning import RestorePlan, plan_restore
from backupflow.progress import current_progress
from backupflow.reporting import artifact_key, iso, plan_rows
from backupflow.restore import RestoreOutcome, resolve_target
from backupflow.storage import open_primary
from tasks.backuplog import log_event
from tasks.database import restore_chain
from tasks.storage import read_catalog

__all__ = ["RestoreReport", "restore_database"]


@dataclass(frozen=True)
class RestoreReport:
    """The plan, where it goes, and (unless a dry run) what the restore did."""

    plan: RestorePlan
    target: Path
    problems: tuple[str, ...]
    outcome: RestoreOutcome | None


@flow(name="restore-database", flow_run_name="restore-database", persist_result=False)
def restore_database(
    target_time: datetime | None = None,
    into: str | None = None,
    replace: bool = False,
    dry_run: bool = False,
) -> RestoreReport:
    """Restore the configured database from the primary tier.

    ``target_time`` (ISO-8601; without an offset it is read in the settings' timezone)
    picks the newest restore point at or before it; leave it empty for the latest state.
    The restore writes a new file unless ``into`` names one; an existing file, or the live
    database, is only replaced with ``replace`` and is then kept aside.
    """
    settings = current_settings()
    logger = get_run_logger()
    if target_time is not None and target_time.tzinfo is None:
        target_time = target_time.replace(tzinfo=ZoneInfo(settings.timezone))
    log = BackupLog(settings.backup_log)
    if not dry_run:
        log.check_writable()
    engine = open_engine(settings)
    storage = open_primary(settings)
    database = settings.database.name
    scan = read_catalog(Catalog(storage), Category.DATABASE, database)
    plan = plan_restore(
        scan.manifests, database=database, target=target_time, now=datetime.now(UTC)
    )
    for note in plan.notes:
        logger.warning(note)
    target = resolve_target(engine, plan, Path(into) if into else None, replace)
    logger.info(
        "plan: %d backup(s) to restore point %s into %s",
        len(plan.steps),
        iso(plan.restore_point),
        target,
    )
    if dry_run:
        return RestoreReport(plan, target, scan.problems, None)
    try:
        outcome = restore_chain(
            engine,
            storage,
            plan,
            target,
            replace,
            settings.pipeline.chunk_bytes,
            current_progress(),
        )
    except BackupflowError as exc:
        log_event(log, "restore", "failed", database=database, target=str(target), error=str(exc))
        raise
    summary = {
        "database": database,
        "requested": iso(plan.requested) if plan.requested else "latest",
        "restore_point": iso(plan.restore_point),
        "backups_applied": len(plan.steps),
        "target": str(outcome.target),
        "seconds": round(outcome.seconds, 2),
        "kept_aside": ", ".join(str(p) for p in outcome.kept_aside) or "-",
    }
    log_event(log, "restore", "completed", **summary)
    create_table_artifact(
        key=artifact_key("restore", database),
        table=[
            summary,
            *({"step": r["step"], "id": r["id"], "why": r["why"]} for r in plan_rows(plan)),
        ],
        description=f"Latest restore of {database}: "
        + "; ".join(f"{r['kind']} {r['id']}" for r in plan_rows(plan)),
    )
    return RestoreReport(plan, target, scan.problems, outcome)
