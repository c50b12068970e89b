"""Flow: is every job's newest good backup, in every tier, as recent as its schedule says?"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from backupflow.config import Settings, current_settings
from backupflow.errors import BackupflowError
from backupflow.models import BackupKind, Category
from backupflow.objectives import HealthRow, assess_health, schedule_interval
from backupflow.reporting import iso
from backupflow.series import Series, all_series
from backupflow.storage import open_tiers
from backupflow.tiers import locate
from flows._notify import notify_on_cancellation, notify_on_crashed, notify_on_failure

__all__ = ["StaleBackupsError", "backup_health"]

#: The database jobs (their schedules are ``settings.jobs.<job>``) and the kind each takes.
DATABASE_JOBS: dict[str, BackupKind] = {
    "database_full": BackupKind.FULL,
    "database_diff": BackupKind.DIFF,
    "database_log": BackupKind.LOG,
}


def _jobs(settings: Settings) -> list[tuple[str, str, Series, BackupKind | None]]:
    """(label, schedule job, series, kind or None for any) for every series: the database
    jobs of each database (labelled with its name when there are several), then each file
    set."""
    every = all_series(settings)
    databases = [s for s in every if s.category is Category.DATABASE]
    jobs = [
        (job if len(databases) == 1 else f"{job} {one.name}", job, one, kind)
        for one in databases
        for job, kind in DATABASE_JOBS.items()
    ]
    return jobs + [(s.name, s.name, s, None) for s in every if s.category is not Category.DATABASE]


class StaleBackupsError(BackupflowError):
    """A job's newest backup is older than its schedule allows: RPO is at risk."""


def _hours(delta: timedelta | None) -> str:
    return "-" if delta is None else f"{delta.total_seconds() / 3600:.1f} h"


@flow(
    name="backup-health",
    persist_result=False,
    on_failure=[notify_on_failure("dr_lead")],
    on_crashed=[notify_on_crashed("dr_lead")],
    on_cancellation=[notify_on_cancellation("dr_lead")],
)
def backup_health() -> list[HealthRow]:
    """Age of the newest good backup of every job in every tier, against its schedule."""
    settings = current_settings()
    now = datetime.now(UTC)
    tiers = open_tiers(settings)
    newest: dict[tuple[str, str], datetime | None] = {}
    problems: list[str] = []
    jobs = _jobs(settings)
    for job, _schedule, series, kind in jobs:
        holdings = locate(tiers, series.category.value, series.name)
        problems += holdings.problems
        for tier in holdings.listed:
            points = [
                e.restore_point
                for e in holdings.sorted_entries()
                if tier in holdings.holders[e.id] and (kind is None or e.kind is kind)
            ]
            # A full or differential also serves as the newest point for the kinds below it.
            if kind is BackupKind.LOG or kind is BackupKind.DIFF:
                points += [
                    e.restore_point
                    for e in holdings.sorted_entries()
                    if tier in holdings.holders[e.id]
                    and e.kind in (BackupKind.FULL, BackupKind.DIFF)
                    and (kind is BackupKind.LOG or e.kind is BackupKind.FULL)
                ]
            newest[(job, tier.name)] = max(points) if points else None
    intervals = {
        job: schedule_interval(getattr(settings.jobs, schedule).schedule, settings.timezone, now)
        for job, schedule, _series, _kind in jobs
    }
    rows = assess_health(
        newest, intervals, now, timedelta(minutes=settings.drill.health_grace_minutes)
    )
    lines = [
        f"# Backup health at {iso(now)}",
        "",
        "| job | tier | newest backup | age | allowed | state |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r.job} | {r.tier} | {iso(r.newest) if r.newest else 'none'} | {_hours(r.age)} | "
        f"{_hours(r.allowed)} | {'**STALE**' if r.stale else 'ok'} |"
        for r in rows
    ]
    lines += [f"\n* {p}" for p in problems]
    create_markdown_artifact(key="backup-health", markdown="\n".join(lines))
    stale = [r for r in rows if r.stale]
    if stale or problems:
        raise StaleBackupsError(
            f"{len(stale)} job/tier pair(s) are stale"
            + (f" and {len(problems)} tier(s) unreadable" if problems else "")
            + ": "
            + ", ".join(f"{r.job} in {r.tier} ({_hours(r.age)} old)" for r in stale[:8])
        )
    return rows
