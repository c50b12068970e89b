"""Flow: the quarterly DR drill; restore from one tier alone and measure RTO and RPO.

Every drill leaves a row in the table artifact ``dr-drill-<database>`` and rewrites the
markdown ``dr-drill-<database>-summary``, whether it passed, missed an objective or failed
(with its reason); the history is read back from the Prefect API.  RTO and RPO are measured
as docs/objectives.md defines them.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from prefect import flow
from prefect.artifacts import Artifact

from backupflow.backuplog import BackupLog
from backupflow.config import Settings, current_settings
from backupflow.engines import open_engine
from backupflow.errors import BackupflowError, ParameterError
from backupflow.models import TierName
from backupflow.objectives import DrillResult, drill_result
from backupflow.parameters import (
    LocalTime,
    check_database_parameter,
    check_database_target,
    check_target_time,
)
from backupflow.reporting import (
    EMPTY,
    artifact_key,
    local_and_utc,
    minutes,
    short_chain,
)
from backupflow.restore_run import finish_restore, prepare_restore
from backupflow.series import databases, for_database
from backupflow.storage import tiers_for
from flows._notify import notify_on_cancellation, notify_on_failure
from flows._publish import (
    latest_artifact,
    log_target,
    markdown_artifact,
    run_logger,
    run_name,
    run_started,
    table_artifact,
)
from tasks.backuplog import log_event
from tasks.steps import PrefectSteps

__all__ = ["DrillReport", "ObjectiveMissedError", "dr_drill", "drill_one"]

Source = TierName

PASSED, MISSED, FAILED = "passed", "missed objective", "failed"


class ObjectiveMissedError(BackupflowError):
    """The drill restored, but slower (RTO) or older (RPO) than the objectives allow."""


@dataclass(frozen=True)
class DrillReport:
    """The drill of one database; ``others`` holds the drills of the other databases when
    the settings name several (each is drilled in turn)."""

    result: DrillResult
    target: Path
    chain: tuple[str, ...]
    smoke: dict[str, int]
    database: str = ""
    others: tuple[DrillReport, ...] = ()
    requested: datetime | None = None
    chain_bytes: int = 0  # stored bytes of the chain restored


@flow(
    name="dr-drill",
    flow_run_name=run_name("dr-drill", "source=dr", target=True),
    persist_result=False,
    on_failure=[notify_on_failure("dr_lead")],
    on_cancellation=[notify_on_cancellation("dr_lead")],
)
def dr_drill(
    source: Source = "dr",
    target_time: LocalTime = None,
    scratch: str | None = None,
    keep: bool = False,
    database: str | None = None,
) -> DrillReport:
    """Treat the run's start as the moment of disaster: restore from one tier alone into a
    scratch database, check it, and measure RTO and RPO against the objectives.

    Every drill, passed, missed or failed, adds a row to the artifact
    ``dr-drill-<database>``; RTO and RPO are defined in docs/objectives.md.

    Args:
        source: The one tier to restore from (primary, secondary or dr).
        target_time: Drill a restore to this time (ISO-8601; without an offset it is read in
            the settings' timezone). Leave it empty for the latest state.
        scratch: Where the drill restores: an absolute path under the allowed restore
            folders (a database name for SQL Server) that must not exist yet. Empty: a new
            scratch file next to the default restore target.
        keep: Keep the scratch database after the drill instead of dropping it.
        database: Drill only this database. Empty: every database the settings name, in
            turn.
    """
    flow_start = datetime.now(UTC)
    settings = current_settings()
    checked = check_database_parameter(database)
    names = [checked] if checked is not None else databases(settings)[0]
    started = run_started(flow_start)
    try:
        # Parameters come from whoever starts the run: checked before anything is read.
        wanted = check_target_time(target_time, settings.timezone, flow_start)
        log_target(wanted, settings.timezone)
        if scratch is not None and len(names) > 1:
            raise ParameterError(
                "the settings name several databases, so give the database parameter with scratch."
            )
    except BackupflowError as exc:
        for name in names:
            _record_failure(for_database(settings, name), source, target_time, started, exc)
        raise
    reports: list[DrillReport] = []
    failures: list[str] = []
    for name in names:
        one = for_database(settings, name)
        try:
            report = drill_one(one, source, wanted, scratch, keep, started)
        except Exception as exc:
            _record_failure(one, source, wanted, started, exc)
            if len(names) == 1:
                raise
            failures.append(f"{name}: {exc}")
        else:
            missed = _record(one, source, report, keep)
            if missed is not None:
                if len(names) == 1:
                    raise ObjectiveMissedError(missed)
                failures.append(f"{name}: {missed}")
            reports.append(report)
        started = datetime.now(UTC)  # the next database's disaster starts now
    if failures:
        raise ObjectiveMissedError(
            f"{len(failures)} of {len(names)} database drills failed: " + "; ".join(failures)
        )
    return replace(reports[0], others=tuple(reports[1:]))


def drill_one(
    settings: Settings,
    source: Source,
    target_time: datetime | None,
    scratch: str | None,
    keep: bool,
    started: datetime,
) -> DrillReport:
    engine = open_engine(settings)
    chosen = (
        None if scratch is None else check_database_target(scratch, engine, settings, "scratch")
    )
    database = settings.database.name
    steps = PrefectSteps()
    now = datetime.now(UTC)
    default = engine.default_target(now)
    default = default.with_name(f"{default.stem}-drill-{secrets.token_hex(3)}{default.suffix}")
    prepared = prepare_restore(
        engine,
        tiers_for(settings, source),
        database,
        steps,
        target_time=target_time,
        into=chosen or default,
        replace=False,
        now=now,
        # A drill measures what a restore to its target loses (the RPO): a target after
        # the last backup is the point of the exercise, not a refusal.
        accept_earlier=True,
    )
    target = prepared.target
    finish_restore(prepared, steps, chunk_bytes=settings.pipeline.chunk_bytes, started=started)
    smoke = engine.smoke(target)
    verified = datetime.now(UTC)
    point = prepared.plan.restore_point
    result = drill_result(
        started,
        verified,
        point,
        requested=target_time,
        rto_hours=settings.drill.rto_hours,
        rpo_hours=settings.drill.rpo_hours,
    )
    if not keep:
        engine.drop(target)
    chain = tuple(m.id for m in prepared.plan.manifests)
    size = sum(o.size for m in prepared.plan.manifests for o in m.objects)
    return DrillReport(
        result, target, chain, smoke, database, requested=target_time, chain_bytes=size
    )


def _shown_target(requested: datetime | str | None, timezone: str) -> str:
    if requested is None:
        return "latest"
    if isinstance(requested, datetime) and requested.tzinfo is not None:
        return local_and_utc(requested, timezone)
    return str(requested)


def _objectives(settings: Settings) -> dict[str, float]:
    return {
        "rto_objective_minutes": round(settings.drill.rto_hours * 60, 2),
        "rpo_objective_minutes": round(settings.drill.rpo_hours * 60, 2),
    }


def _record(settings: Settings, source: Source, report: DrillReport, keep: bool) -> str | None:
    """The row and summary of a drill that restored; returns why it missed, if it did."""
    result, timezone = report.result, settings.timezone
    missed = [name for name, met in (("RTO", result.rto_met), ("RPO", result.rpo_met)) if not met]
    reason = (
        f"the DR drill missed its {' and '.join(missed)} objective: RTO "
        f"{minutes(result.rto)} min (objective {minutes(result.rto_objective)}), RPO "
        f"{minutes(result.rpo)} min (objective {minutes(result.rpo_objective)})."
        if missed
        else None
    )
    row: dict[str, Any] = {
        "result": MISSED if missed else PASSED,
        "rto_minutes": minutes(result.rto),
        "rpo_minutes": minutes(result.rpo),
        "target": _shown_target(report.requested, timezone),
        "restore_point": local_and_utc(result.restore_point, timezone),
        "tier": source,
        "started": local_and_utc(result.started, timezone),
        "verified": local_and_utc(result.verified, timezone),
        **_objectives(settings),
        "reason": reason or EMPTY,
        "tables_checked": len(report.smoke),
        "chain": short_chain(report.chain),
    }
    details = [
        f"* restored and verified into `{report.target}`" + (" (kept)" if keep else " (dropped)"),
        "* integrity check passed; smoke queries: "
        + (", ".join(f"{t} {n} rows" for t, n in report.smoke.items()) or "none"),
        f"* chain: {row['chain']}",
    ]
    _publish(settings, row, details)
    run_logger().info(
        "drill %s: RTO %s min, RPO %s min", row["result"], row["rto_minutes"], row["rpo_minutes"]
    )
    return reason


def _record_failure(
    settings: Settings,
    source: Source,
    requested: datetime | str | None,
    started: datetime,
    exc: BaseException,
) -> None:
    """The row and summary of a drill that did not restore; never hides ``exc``."""
    row: dict[str, Any] = {
        "result": FAILED,
        "rto_minutes": EMPTY,
        "rpo_minutes": EMPTY,
        "target": _shown_target(requested, settings.timezone),
        "restore_point": EMPTY,
        "tier": source,
        "started": local_and_utc(started, settings.timezone),
        "verified": EMPTY,
        **_objectives(settings),
        "reason": str(exc) or type(exc).__name__,
        "tables_checked": EMPTY,
        "chain": EMPTY,
    }
    try:
        # A refused parameter touched nothing: it is on record in Prefect, not in the log.
        _publish(settings, row, [], log=not isinstance(exc, ParameterError))
    except Exception as publish_error:  # the drill's own failure is what the run reports
        run_logger().warning("the failed drill could not be recorded: %s", publish_error)


def _publish(
    settings: Settings, row: dict[str, Any], details: list[str], *, log: bool = True
) -> None:
    """Append ``row`` to the drill history, rewrite the summary, and (with ``log``) write
    the event to the backup log."""
    database = settings.database.name
    key = artifact_key("dr-drill", database)
    previous = cast(Artifact | None, latest_artifact(key))
    history = json.loads(str(previous.data)) if previous is not None and previous.data else []
    table_artifact(key=key, table=[*history, row], description=f"DR drills of {database}")
    lines = [
        f"# DR drill of {database} from the {row['tier']} tier: {row['result']}",
        "",
        f"* **result**: {row['result']}" + (f": {row['reason']}" if row["reason"] != EMPTY else ""),
        f"* **RTO**: {_figure(row['rto_minutes'])} (objective {row['rto_objective_minutes']} min)",
        f"* **RPO**: {_figure(row['rpo_minutes'])} (objective {row['rpo_objective_minutes']} min)",
        f"* **target**: {row['target']}",
        f"* **restore point**: {row['restore_point']}",
        f"* disaster declared (run start): {row['started']}",
        f"* restored and verified: {row['verified']}",
        *details,
        "",
        "RTO and RPO as defined in docs/objectives.md.",
    ]
    markdown_artifact(
        key=artifact_key("dr-drill", database, "summary"),
        markdown="\n".join(lines) + "\n",
        description=f"Latest DR drill of {database}",
    )
    if log:
        status = {PASSED: "pass", MISSED: "FAIL", FAILED: "failed"}[row["result"]]
        log_event(BackupLog(settings.backup_log), "dr-drill", status, database=database, **row)


def _figure(value: object) -> str:
    return EMPTY if value == EMPTY else f"{value} min"
