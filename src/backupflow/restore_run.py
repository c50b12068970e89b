"""The one restore run: every restore (a database, a file set, a drill, a failover) goes
through :func:`prepare_restore` then :func:`finish_restore` (or :func:`run_restore`, both).

1. plan: the engine chooses the chain from the tiers' catalogs (:mod:`backupflow.restore`);
2. target: the path or database name it writes, refused when it exists without ``replace``;
3. a dry run stops here and returns the plan (and, for script engines, the statements);
4. restore: each backup is read from the first tier holding a good copy, the engine builds
   and checks the copy in scratch, and only then installs it (check, then install);
5. log: one line in the backup log, completed or failed.

Each step goes through a :class:`~backupflow.steps.Steps` runner: the flows make them
Prefect tasks, the tests call them directly, so what is tested is what runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from backupflow.backuplog import BackupLog
from backupflow.engines.base import Engine
from backupflow.errors import BackupflowError, TargetNotReachedError
from backupflow.models import Category, Manifest
from backupflow.planning import RestorePlan
from backupflow.progress import Progress
from backupflow.reporting import (
    EMPTY,
    iso,
    local_and_utc,
    recovery_point,
    recovery_time,
    short_chain,
)
from backupflow.restore import LoadedPlan, RestoreOutcome, execute_restore, load_plan
from backupflow.restore import resolve_target as _resolve_target
from backupflow.steps import LOG, PLAN, RESTORE, Logger, Steps
from backupflow.storage import Tier
from backupflow.vocabulary import flag

__all__ = [
    "PreparedRestore",
    "RestoreReport",
    "finish_restore",
    "plan_restore",
    "prepare_restore",
    "run_restore",
]


@dataclass(frozen=True)
class PreparedRestore:
    """A planned restore and where it goes; nothing has been written yet."""

    engine: Engine
    loaded: LoadedPlan
    target: Path
    replace: bool
    tiers: tuple[str, ...]
    category: Category
    #: Restore the latest point reachable when the requested time cannot be reached.
    accept_earlier: bool = False

    @property
    def plan(self) -> RestorePlan[Manifest]:
        return self.loaded.plan


@dataclass(frozen=True)
class RestoreReport:
    """The plan, where it goes, and (unless a dry run) what the restore did."""

    plan: RestorePlan[Manifest]
    target: Path
    problems: tuple[str, ...]
    outcome: RestoreOutcome | None
    tiers: tuple[str, ...] = ()
    script: tuple[str, ...] = ()

    def summary(self, started: datetime, timezone: str | None = None) -> dict[str, Any]:
        """One row for the backup log and the artifact: result, RTO, RPO, the requested
        target and the restore point first, the chain last (first … last).

        ``started`` is the run's scheduled or created start; RTO and RPO follow
        docs/objectives.md (for a time target the RPO is the target minus the restore point,
        not the time since).  With ``timezone`` the times are shown there and in UTC."""
        plan, outcome = self.plan, self.outcome

        def when(moment: datetime) -> str:
            return iso(moment) if timezone is None else local_and_utc(moment, timezone)

        rpo = recovery_point(plan.restore_point, plan.requested, started)
        row: dict[str, Any] = {
            "result": "planned" if outcome is None else "restored and verified",
            "rto_seconds": EMPTY
            if outcome is None
            else round(recovery_time(started, outcome.finished_at).total_seconds(), 2),
            "rpo_seconds": round(rpo.total_seconds(), 2),
            "requested": when(plan.requested) if plan.requested else "latest",
            "restore_point": when(plan.restore_point),
            "database": plan.database,
            "target": str(self.target),
            "backups_applied": len(plan.steps),
        }
        if outcome is not None:
            row |= {
                "tiers_used": ", ".join(sorted(set(outcome.tiers_used.values()))) or EMPTY,
                "seconds": round(outcome.seconds, 2),
                "kept_aside": ", ".join(str(p) for p in outcome.kept_aside) or EMPTY,
                "problems": "; ".join(outcome.problems) or EMPTY,
            }
        row["chain"] = short_chain([m.id for m in plan.manifests])
        return row


def _plan(
    tiers: Sequence[Tier],
    engine: Engine,
    database: str,
    target_time: datetime | None,
    now: datetime,
    category: Category,
    logger: Logger,
) -> LoadedPlan:
    loaded = load_plan(tiers, engine, database, target_time, now, category)
    for problem in loaded.problems:
        logger.warning(problem)
    for note in loaded.plan.notes:
        logger.warning(note)
    return loaded


def plan_restore(
    engine: Engine,
    tiers: Sequence[Tier],
    database: str,
    steps: Steps,
    *,
    target_time: datetime | None,
    category: Category = Category.DATABASE,
    now: datetime | None = None,
) -> LoadedPlan:
    """Step 1: the engine's chain to ``target_time`` (None: the latest point)."""
    now = now or datetime.now(UTC)
    return steps.run(
        PLAN,
        f"plan-restore-{database}",
        partial(_plan, tiers, engine, database, target_time, now, category, steps.logger),
    )


def prepare_restore(
    engine: Engine,
    tiers: Sequence[Tier],
    database: str,
    steps: Steps,
    *,
    target_time: datetime | None,
    into: Path | None,
    replace: bool,
    category: Category = Category.DATABASE,
    now: datetime | None = None,
    dry_run: bool = False,
    accept_earlier: bool = False,
) -> PreparedRestore:
    """Steps 1 and 2: plan, and the checked target (``into``, else the live database with
    ``replace``, else a new default target; a dry run does not refuse it for existing).

    A target after every backup the repository holds is refused (it cannot be reached)
    unless ``accept_earlier``: then the latest point is restored, and said so."""
    loaded = plan_restore(
        engine, tiers, database, steps, target_time=target_time, category=category, now=now
    )
    plan = loaded.plan
    if plan.beyond and plan.requested is not None:
        message = (
            f"the target {iso(plan.requested)} lies after every backup of {database}: the "
            f"latest point a restore reaches is {iso(plan.restore_point)}"
        )
        if not accept_earlier:
            raise TargetNotReachedError(
                f"{message}; restore to that time, or accept it with {flag('accept_earlier')}.",
                plan.restore_point,
            )
        steps.logger.warning("%s; restoring that point (accepted)", message)
    target = _resolve_target(
        engine, loaded.plan, into, replace, dry_run=dry_run, note=steps.logger.warning
    )
    steps.logger.info(
        "plan: %d backup(s) to restore point %s into %s",
        len(loaded.plan.steps),
        iso(loaded.plan.restore_point),
        target,
    )
    return PreparedRestore(
        engine, loaded, target, replace, tuple(t.name for t in tiers), category, accept_earlier
    )


def _restore(
    prepared: PreparedRestore, chunk_bytes: int, progress: Progress | None, logger: Logger
) -> tuple[RestoreOutcome, RestorePlan[Manifest]]:
    plan = prepared.plan

    def build(loaded: LoadedPlan) -> RestoreOutcome:
        return execute_restore(
            prepared.engine,
            loaded,
            prepared.target,
            replace=prepared.replace,
            chunk_bytes=chunk_bytes,
            progress=progress,
            report=logger.error,
            note=logger.info,
        )

    try:
        outcome = build(prepared.loaded)
    except TargetNotReachedError as exc:
        if not prepared.accept_earlier or exc.reached is None or plan.requested is None:
            raise
        # Accepted: the same chain again, to the end of the archive (the point recovery
        # reached; a time target needs a commit after it, which the archive lacks).
        logger.warning("%s Restoring %s instead (accepted).", exc, iso(exc.reached))
        accepted = f"accepted the latest point the archive reaches, {iso(exc.reached)}"
        plan = dataclasses.replace(
            plan, requested=None, restore_point=exc.reached, notes=(*plan.notes, accepted)
        )
        outcome = build(dataclasses.replace(prepared.loaded, plan=plan))
    logger.info(
        "restored %s to %s in %.1f s (restore point %s), from %s",
        plan.database,
        outcome.target,
        outcome.seconds,
        plan.restore_point.isoformat(),
        ", ".join(sorted(set(outcome.tiers_used.values()))),
    )
    for aside in outcome.kept_aside:
        logger.warning("the replaced copy was kept aside as %s", aside)
    return outcome, plan


def finish_restore(
    prepared: PreparedRestore,
    steps: Steps,
    *,
    chunk_bytes: int,
    progress: Progress | None = None,
    log: BackupLog | None = None,
    event: str = "restore",
    started: datetime | None = None,
) -> RestoreReport:
    """Steps 4 and 5: restore (check, then install) and log the result."""
    started = started or datetime.now(UTC)
    plan = prepared.plan
    try:
        outcome, plan = steps.run(
            RESTORE,
            f"restore-{plan.database}",
            partial(_restore, prepared, chunk_bytes, progress, steps.logger),
        )
    except BackupflowError as exc:
        if log is not None:
            fields = {"database": plan.database, "target": str(prepared.target)}
            error = str(exc)
            steps.run(
                LOG,
                f"log-{event}-failed",
                lambda: log.append(event, status="failed", error=error, **fields),
            )
        raise
    report = RestoreReport(
        plan,
        prepared.target,
        prepared.loaded.problems + outcome.problems,
        outcome,
        prepared.tiers,
    )
    if log is not None:
        row = report.summary(started)
        steps.run(
            LOG, f"log-{event}-completed", lambda: log.append(event, status="completed", **row)
        )
    return report


def run_restore(
    engine: Engine,
    tiers: Sequence[Tier],
    database: str,
    steps: Steps,
    *,
    target_time: datetime | None,
    into: Path | None = None,
    replace: bool = False,
    dry_run: bool = False,
    category: Category = Category.DATABASE,
    chunk_bytes: int = 1 << 20,
    progress: Progress | None = None,
    log: BackupLog | None = None,
    started: datetime | None = None,
    accept_earlier: bool = False,
) -> RestoreReport:
    """Plan, resolve the target and (unless ``dry_run``) restore; see the module docstring."""
    started = started or datetime.now(UTC)
    if log is not None and not dry_run:
        log.check_writable()
    prepared = prepare_restore(
        engine,
        tiers,
        database,
        steps,
        target_time=target_time,
        into=into,
        replace=replace,
        category=category,
        now=started,
        dry_run=dry_run,
        accept_earlier=accept_earlier,
    )
    if dry_run:
        script = engine.restore_script(
            prepared.plan.manifests, prepared.target, replace=replace, until=target_time
        )
        return RestoreReport(
            prepared.plan,
            prepared.target,
            prepared.loaded.problems,
            None,
            prepared.tiers,
            tuple(script),
        )
    return finish_restore(
        prepared, steps, chunk_bytes=chunk_bytes, progress=progress, log=log, started=started
    )
