"""Flow: the quarterly DR drill; restore from one tier alone and measure RTO and RPO."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import Artifact, create_markdown_artifact, create_table_artifact

from backupflow.backuplog import BackupLog
from backupflow.config import Settings, current_settings
from backupflow.engines import open_engine
from backupflow.errors import BackupflowError, ParameterError
from backupflow.models import TierName
from backupflow.objectives import DrillResult, drill_result
from backupflow.parameters import (
    check_database_parameter,
    check_database_target,
    check_target_time,
)
from backupflow.reporting import artifact_key, iso
from backupflow.restore_run import finish_restore, plan_restore, prepare_restore
from backupflow.series import databases, for_database
from backupflow.storage import tiers_for
from flows._notify import notify_on_cancellation, notify_on_crashed, notify_on_failure
from tasks.backuplog import log_event
from tasks.steps import PrefectSteps

__all__ = ["DrillReport", "ObjectiveMissedError", "dr_drill"]

Source = TierName


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


def _minutes(seconds: float) -> float:
    return round(seconds / 60, 2)


@flow(
    name="dr-drill",
    flow_run_name="dr-drill-{source}",
    persist_result=False,
    on_failure=[notify_on_failure("dr_lead")],
    on_crashed=[notify_on_crashed("dr_lead")],
    on_cancellation=[notify_on_cancellation("dr_lead")],
)
def dr_drill(
    source: Source = "dr",
    target_time: datetime | None = None,
    scratch: str | None = None,
    keep: bool = False,
    database: str | None = None,
) -> DrillReport:
    """Treat now as the moment of disaster: restore from ``source`` alone into a scratch
    database, check it, and measure RTO and RPO against the objectives (4 h, 1 h).
    ``scratch`` (an absolute path under the allowed restore folders, or a database name for
    SQL Server) must not exist yet.  Every database the settings name is drilled in turn,
    or only ``database``."""
    started = datetime.now(UTC)
    settings = current_settings()
    # Parameters come from whoever starts the run: checked before anything is read.
    target_time = check_target_time(target_time, settings.timezone, started)
    checked = check_database_parameter(database)
    names = [checked] if checked is not None else databases(settings)[0]
    if scratch is not None and len(names) > 1:
        raise ParameterError(
            "the settings name several databases, so give the database parameter with scratch."
        )
    reports: list[DrillReport] = []
    failures: list[str] = []
    for name in names:
        try:
            reports.append(
                _drill_one(
                    for_database(settings, name), source, target_time, scratch, keep, started
                )
            )
        except BackupflowError as exc:
            if len(names) == 1:
                raise
            failures.append(f"{name}: {exc}")
        started = datetime.now(UTC)  # the next database's disaster starts now
    if failures:
        raise ObjectiveMissedError(
            f"{len(failures)} of {len(names)} database drills failed: " + "; ".join(failures)
        )
    return replace(reports[0], others=tuple(reports[1:]))


def _drill_one(
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
    logger = get_run_logger()
    log = BackupLog(settings.backup_log)
    database = settings.database.name
    tiers = tiers_for(settings, source)
    steps = PrefectSteps()
    default = engine.default_target(started)
    default = default.with_name(f"{default.stem}-drill-{secrets.token_hex(3)}{default.suffix}")
    prepared = prepare_restore(
        engine,
        tiers,
        database,
        steps,
        target_time=target_time,
        into=chosen or default,
        replace=False,
        now=started,
    )
    # RPO: the newest point the tier could restore, whatever point was drilled.
    newest = (
        prepared.plan.restore_point
        if target_time is None
        else plan_restore(
            engine, tiers, database, steps, target_time=None, now=started
        ).plan.restore_point
    )
    target = prepared.target
    finish_restore(prepared, steps, chunk_bytes=settings.pipeline.chunk_bytes, started=started)
    smoke = engine.smoke(target)
    verified = datetime.now(UTC)
    result = drill_result(
        started,
        verified,
        newest,
        rto_hours=settings.drill.rto_hours,
        rpo_hours=settings.drill.rpo_hours,
    )
    if not keep:
        engine.drop(target)
    chain = tuple(m.id for m in prepared.plan.manifests)
    row: dict[str, Any] = {
        "time": iso(started),
        "tier": source,
        "chain": " > ".join(chain),
        "restore_point": iso(prepared.plan.restore_point),
        "rto_minutes": _minutes(result.rto.total_seconds()),
        "rpo_minutes": _minutes(result.rpo.total_seconds()),
        "rto_objective_minutes": _minutes(result.rto_objective.total_seconds()),
        "rpo_objective_minutes": _minutes(result.rpo_objective.total_seconds()),
        "tables_checked": len(smoke),
        "result": "pass" if result.passed else "FAIL",
    }
    key = artifact_key("dr-drill", database)
    previous = cast(Artifact | None, Artifact.get(key))
    history = json.loads(str(previous.data)) if previous is not None and previous.data else []
    create_table_artifact(key=key, table=[*history, row], description=f"DR drills of {database}")
    create_markdown_artifact(
        key=artifact_key("dr-drill", database, "summary"),
        markdown=(
            f"# DR drill of {database} from the {source} tier: "
            f"{'passed' if result.passed else 'FAILED'}\n\n"
            f"* disaster declared at {iso(started)}\n"
            f"* restored and verified at {iso(verified)} into `{target}`"
            f"{' (kept)' if keep else ' (dropped)'}\n"
            f"* RTO {row['rto_minutes']} min (objective {row['rto_objective_minutes']} min)\n"
            f"* RPO {row['rpo_minutes']} min (objective {row['rpo_objective_minutes']} min)\n"
            f"* chain: {row['chain']}\n"
            f"* integrity check passed; smoke queries: "
            + (", ".join(f"{t} {n} rows" for t, n in smoke.items()) or "none")
            + "\n"
        ),
        description=f"Latest DR drill of {database}",
    )
    log_event(log, "dr-drill", row["result"], database=database, **row)
    logger.info(
        "drill %s: RTO %s min, RPO %s min", row["result"], row["rto_minutes"], row["rpo_minutes"]
    )
    if not result.passed:
        missed = [
            name for name, met in (("RTO", result.rto_met), ("RPO", result.rpo_met)) if not met
        ]
        raise ObjectiveMissedError(
            f"the DR drill missed its {' and '.join(missed)} objective: RTO "
            f"{row['rto_minutes']} min (objective {row['rto_objective_minutes']}), RPO "
            f"{row['rpo_minutes']} min (objective {row['rpo_objective_minutes']})."
        )
    return DrillReport(result, target, chain, smoke, database)
