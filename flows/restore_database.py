"""Flow: restore the configured database to a point in time or to its latest state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from backupflow.backuplog import BackupLog
from backupflow.config import Settings, current_settings
from backupflow.engines import open_engine
from backupflow.errors import BackupflowError
from backupflow.parameters import (
    LocalTime,
    check_database_parameter,
    check_database_target,
    check_target_time,
)
from backupflow.progress import current_progress
from backupflow.reporting import EMPTY, artifact_key
from backupflow.restore_run import RestoreReport, run_restore
from backupflow.series import for_database
from backupflow.storage import SourceName, tiers_for
from flows._notify import notify_on_cancellation, notify_on_failure
from flows._publish import failed_row, log_target, prepend_history, run_name, run_started
from tasks.steps import PrefectSteps

__all__ = ["RestoreReport", "restore_database"]


@flow(
    name="restore-database",
    flow_run_name=run_name("restore-database", "database", target=True),
    persist_result=False,
    on_failure=[notify_on_failure("recovery_owner")],
    on_cancellation=[notify_on_cancellation("recovery_owner")],
)
def restore_database(
    target_time: LocalTime = None,
    into: str | None = None,
    replace: bool = False,
    dry_run: bool = False,
    source: SourceName = "auto",
    database: str | None = None,
    accept_earlier: bool = False,
) -> RestoreReport:
    """Restore the configured database from the backups.

    The restore is built and checked in scratch before it is installed.  The artifact
    ``restore-<database>`` leads with the result, RTO and RPO (docs/objectives.md).

    Args:
        target_time: Restore to the newest point at or before this time (ISO-8601; without
            an offset it is read in the settings' timezone). Leave it empty for the latest
            state.
        into: Where to restore: an absolute path under the allowed restore folders (a
            database name for SQL Server). Empty: a new file next to the live database.
        replace: Allow replacing an existing target, or the live database when into is
            empty; the replaced copy is kept aside.
        dry_run: Only show the plan (which backups, from which tier, into where); change
            nothing.
        source: The tier to read: auto (primary, then secondary, then dr, falling back to
            the next tier when a copy is missing or damaged), primary, secondary or dr.
        accept_earlier: When target_time cannot be reached (the backups and the archived
            WAL end before it), restore the latest point they reach instead of failing; the
            artifact names that point.
        database: Which database to restore, when the settings name several. Empty: the
            configured database.
    """
    flow_start = datetime.now(UTC)
    started = run_started(flow_start)
    settings = current_settings()
    try:
        # Parameters come from whoever starts the run: checked before anything is read.
        checked = check_database_parameter(database)
        if checked is not None:
            settings = for_database(settings, checked)
        target_time = check_target_time(target_time, settings.timezone, flow_start)
        log_target(target_time, settings.timezone)
        engine = open_engine(settings)
        chosen = None if into is None else check_database_target(into, engine, settings, "into")
        report = run_restore(
            engine,
            tiers_for(settings, source),
            settings.database.name,
            PrefectSteps(),
            target_time=target_time,
            into=chosen,
            replace=replace,
            dry_run=dry_run,
            chunk_bytes=settings.pipeline.chunk_bytes,
            progress=current_progress(),
            log=BackupLog(settings.backup_log),
            started=started,
            accept_earlier=accept_earlier,
        )
    except BackupflowError as exc:
        if not dry_run:
            _record(settings, failed_row(exc, target_time, settings.timezone, into))
        raise
    if report.outcome is not None:
        row = report.summary(started, settings.timezone)
        _record(settings, {"result": row.pop("result"), "reason": EMPTY, **row})
    return report


def _record(settings: Settings, row: dict[str, Any]) -> None:
    """Put ``row`` first in the restore history ``restore-<database>``."""
    name = settings.database.name
    prepend_history(
        artifact_key("restore", name),
        row,
        f"Restores of {name}, newest first (RTO and RPO as docs/objectives.md defines them)",
    )
