"""Flow: restore the configured database to a point in time or to its latest state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from backupflow.backuplog import BackupLog
from backupflow.config import current_settings
from backupflow.engines import open_engine
from backupflow.errors import BackupflowError
from backupflow.models import Manifest
from backupflow.parameters import (
    check_database_parameter,
    check_database_target,
    check_target_time,
)
from backupflow.planning import RestorePlan
from backupflow.progress import current_progress
from backupflow.reporting import artifact_key, iso, plan_rows
from backupflow.restore import RestoreOutcome, resolve_target
from backupflow.storage import SourceName, tiers_for
from flows._notify import notify_on_failure
from tasks.backuplog import log_event
from tasks.database import plan_restore, restore_chain

__all__ = ["RestoreReport", "restore_database"]


@dataclass(frozen=True)
class RestoreReport:
    """The plan, where it goes, and (unless a dry run) what the restore did."""

    plan: RestorePlan[Manifest]
    target: Path
    problems: tuple[str, ...]
    outcome: RestoreOutcome | None
    tiers: tuple[str, ...] = ()
    script: tuple[str, ...] = ()


@flow(
    name="restore-database",
    flow_run_name="restore-database",
    persist_result=False,
    on_failure=[notify_on_failure("recovery_owner")],
)
def restore_database(
    target_time: datetime | None = None,
    into: str | None = None,
    replace: bool = False,
    dry_run: bool = False,
    source: SourceName = "auto",
    database: str | None = None,
) -> RestoreReport:
    """Restore the configured database from the backups.

    ``target_time`` (ISO-8601; without an offset it is read in the settings' timezone)
    picks the newest restore point at or before it; leave it empty for the latest state.
    ``source`` is the tier to read (``auto``: primary, then secondary, then DR, falling back
    to the next tier when a copy is missing or damaged).  The restore writes a new file
    unless ``into`` names one; an existing file, or the live database, is only replaced
    with ``replace`` and is then kept aside.  ``into`` is an absolute path under the allowed
    restore folders (a database name for SQL Server), ``database`` a database name.
    """
    started = datetime.now(UTC)
    settings = current_settings()
    # Parameters come from whoever starts the run: checked before anything is read.
    if check_database_parameter(database) is not None:
        settings = settings.model_copy(
            update={"database": settings.database.model_copy(update={"name": database})}
        )
    target_time = check_target_time(target_time, settings.timezone, started)
    engine = open_engine(settings)
    chosen = None if into is None else check_database_target(into, engine, settings, "into")
    logger = get_run_logger()
    log = BackupLog(settings.backup_log)
    if not dry_run:
        log.check_writable()
    tiers = tiers_for(settings, source)
    database = settings.database.name
    loaded = plan_restore(tiers, engine, database, target_time, datetime.now(UTC))
    plan = loaded.plan
    target = resolve_target(engine, plan, chosen, replace)
    logger.info(
        "plan: %d backup(s) to restore point %s into %s",
        len(plan.steps),
        iso(plan.restore_point),
        target,
    )
    if dry_run:
        script = engine.restore_script(plan.manifests, target, replace=replace, until=target_time)
        return RestoreReport(
            plan, target, loaded.problems, None, tuple(t.name for t in tiers), tuple(script)
        )
    try:
        outcome = restore_chain(
            engine, loaded, target, replace, settings.pipeline.chunk_bytes, current_progress()
        )
    except BackupflowError as exc:
        log_event(log, "restore", "failed", database=database, target=str(target), error=str(exc))
        raise
    summary = {
        "database": database,
        "requested": iso(plan.requested) if plan.requested else "latest",
        "restore_point": iso(plan.restore_point),
        "backups_applied": len(plan.steps),
        "tiers_used": ", ".join(sorted(set(outcome.tiers_used.values()))),
        "target": str(outcome.target),
        "seconds": round(outcome.seconds, 2),
        "rto_seconds": round((outcome.finished_at - started).total_seconds(), 2),
        "rpo_seconds": round(max((started - plan.restore_point).total_seconds(), 0), 2),
        "kept_aside": ", ".join(str(p) for p in outcome.kept_aside) or "-",
        "problems": "; ".join(outcome.problems) or "-",
    }
    log_event(log, "restore", "completed", **summary)
    create_table_artifact(
        key=artifact_key("restore", database),
        table=[summary],
        description=f"Latest restore of {database}: "
        + "; ".join(f"{r['kind']} {r['id']}" for r in plan_rows(plan)),
    )
    return RestoreReport(
        plan, target, loaded.problems + outcome.problems, outcome, tuple(t.name for t in tiers)
    )
