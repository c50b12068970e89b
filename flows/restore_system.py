"""Flow: rebuild the whole system on this host from one tier (default: the DR bucket)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow

from backupflow.config import current_settings
from backupflow.engines import open_engine
from backupflow.errors import EngineError
from backupflow.filesets.contents import run_configured_hook
from backupflow.models import TierName
from backupflow.parameters import LocalTime, check_target_time
from backupflow.reporting import (
    EMPTY,
    artifact_key,
    local_and_utc,
    recovery_point,
    recovery_time,
    short_chain,
)
from backupflow.series import databases, for_database
from flows._notify import notify_on_cancellation, notify_on_failure
from flows._publish import log_target, run_logger, run_name, run_started, subflow, table_artifact
from flows.restore_database import restore_database
from flows.restore_files import restore_files

__all__ = ["SystemRestore", "restore_system"]

Source = TierName


@dataclass
class SystemRestore:
    """Each step with its result, RTO so far, RPO, the requested target and the restore
    point reached (docs/objectives.md), then its duration and detail.

    ``started`` is the run's scheduled or created start; ``requested`` the target time
    (None: the latest state); times are shown in ``timezone`` and in UTC."""

    started: datetime
    steps: list[dict[str, Any]] = field(default_factory=list)
    restore_point: datetime | None = None
    requested: datetime | None = None
    timezone: str = "UTC"

    def add(self, step: str, clock: float, detail: str, ok: bool = True) -> None:
        point = self.restore_point
        self.steps.append(
            {
                "result": "ok" if ok else "FAILED",
                "rto_so_far_s": round(
                    recovery_time(self.started, datetime.now(UTC)).total_seconds(), 1
                ),
                "rpo_s": EMPTY
                if point is None
                else round(recovery_point(point, self.requested, self.started).total_seconds(), 1),
                "target": local_and_utc(self.requested, self.timezone)
                if self.requested
                else "latest",
                "restore_point": local_and_utc(point, self.timezone),
                "step": step,
                "seconds": round(time.monotonic() - clock, 2),
                "detail": detail,
            }
        )


@flow(
    name="restore-system",
    flow_run_name=run_name("restore-system", "source=dr", target=True),
    persist_result=False,
    on_failure=[notify_on_failure("recovery_owner")],
    on_cancellation=[notify_on_cancellation("recovery_owner")],
)
def restore_system(
    source: Source = "dr",
    target_time: LocalTime = None,
    replace: bool = False,
    dry_run: bool = False,
) -> SystemRestore:
    """Restore the database (to the latest point or ``target_time``), the configuration and
    the uploads into this host's paths from ``source`` alone, check them, then run the
    post-restore command (the PM2 reload).  A dry run lists the plan and changes nothing.
    The artifact ``restore-system-<database>`` shows each step with RTO so far and RPO
    (docs/objectives.md).

    Args:
        source: The one tier to restore from: primary, secondary or dr.
        target_time: Restore everything to the newest point at or before this time
            (ISO-8601; without an offset it is read in the settings' timezone). Leave it
            empty for the latest state.
        replace: Restore over this host's live database and files (they are kept aside).
            Needed when they exist.
        dry_run: Only show the plan of every step; change nothing.
    """
    flow_start = datetime.now(UTC)
    settings = current_settings()
    report = SystemRestore(started=run_started(flow_start), timezone=settings.timezone)
    target_time = check_target_time(target_time, settings.timezone, flow_start)
    log_target(target_time, settings.timezone)
    report.requested = target_time
    logger = run_logger()
    names, _skipped = databases(settings)
    for name in names:
        live = open_engine(for_database(settings, name)).live_target()
        clock = time.monotonic()
        db = subflow(
            restore_database,
            target_time=target_time,
            into=str(live),
            replace=replace,
            dry_run=dry_run,
            source=source,
            database=name,
        )
        # The system is as recent as its oldest database.
        point = db.plan.restore_point
        report.restore_point = min(report.restore_point or point, point)
        chain = short_chain([m.id for m in db.plan.manifests])
        report.add(
            ("database" if len(names) == 1 else f"database {name}")
            + (" (plan)" if dry_run else ", integrity check passed"),
            clock,
            f"{len(db.plan.steps)} backup(s) into {db.target}: {chain}",
        )
    file_sets: tuple[Literal["config", "uploads"], ...] = ("config", "uploads")
    for file_set in file_sets:
        clock = time.monotonic()
        files = subflow(
            restore_files,
            file_set=file_set,
            target_time=target_time,
            in_place=True,
            dry_run=dry_run,
            source=source,
            run_post_restore_hook=False,
        )
        changed = sum(1 for _p, action in files.changes if action != "unchanged")
        report.add(
            file_set + (" (plan)" if dry_run else ", every file verified"),
            clock,
            f"{changed} of {len(files.changes)} entries into {files.target}",
        )
    if not dry_run and settings.files.post_restore_hook:
        clock = time.monotonic()
        hook = run_configured_hook(settings)
        report.add("post-restore command", clock, hook.output.strip()[-200:], ok=hook.ok)
        if not hook.ok:
            _publish(report, settings.database.name)
            raise EngineError(
                f"the system was restored, but {' '.join(hook.command)} failed with exit code "
                f"{hook.returncode}; start the application by hand."
            )
    _publish(report, settings.database.name)
    for step in report.steps:
        logger.info("%s: %s (%s s)", step["step"], step["detail"], step["seconds"])
    return report


def _publish(report: SystemRestore, database: str) -> None:
    table_artifact(
        key=artifact_key("restore-system", database),
        table=report.steps,
        description="Whole-system restore: steps, durations, RTO and RPO",
    )
