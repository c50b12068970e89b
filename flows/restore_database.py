"""Flow: restore the configured database to a point in time or to its latest state."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from prefect.artifacts import create_table_artifact

from backupflow.backuplog import BackupLog
from backupflow.config import current_settings
from backupflow.engines import open_engine
from backupflow.parameters import (
    check_database_parameter,
    check_database_target,
    check_target_time,
)
from backupflow.progress import current_progress
from backupflow.reporting import artifact_key, plan_rows
from backupflow.restore_run import RestoreReport, run_restore
from backupflow.series import for_database
from backupflow.storage import SourceName, tiers_for
from flows._notify import notify_on_cancellation, notify_on_crashed, notify_on_failure
from tasks.steps import PrefectSteps

__all__ = ["RestoreReport", "restore_database"]


@flow(
    name="restore-database",
    flow_run_name="restore-database",
    persist_result=False,
    on_failure=[notify_on_failure("recovery_owner")],
    on_crashed=[notify_on_crashed("recovery_owner")],
    on_cancellation=[notify_on_cancellation("recovery_owner")],
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
    checked = check_database_parameter(database)
    if checked is not None:
        settings = for_database(settings, checked)
    target_time = check_target_time(target_time, settings.timezone, started)
    engine = open_engine(settings)
    chosen = None if into is None else check_database_target(into, engine, settings, "into")
    name = settings.database.name
    report = run_restore(
        engine,
        tiers_for(settings, source),
        name,
        PrefectSteps(),
        target_time=target_time,
        into=chosen,
        replace=replace,
        dry_run=dry_run,
        chunk_bytes=settings.pipeline.chunk_bytes,
        progress=current_progress(),
        log=BackupLog(settings.backup_log),
        started=started,
    )
    if report.outcome is not None:
        create_table_artifact(
            key=artifact_key("restore", name),
            table=[report.summary(started)],
            description=f"Latest restore of {name}: "
            + "; ".join(f"{r['kind']} {r['id']}" for r in plan_rows(report.plan)),
        )
    return report
