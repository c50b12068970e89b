"""Flow: is every job's newest good backup, in every tier, as recent as its schedule says,
and is its chain whole there?  One row per job and tier (unreachable, incomplete chain,
never, stale or ok), worst first."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo

from prefect import flow

from backupflow.catalog import wal_prefix
from backupflow.config import Settings, current_settings
from backupflow.engines import open_engine
from backupflow.errors import BackupflowError
from backupflow.models import BackupKind, Category
from backupflow.objectives import (
    HealthRow,
    HealthState,
    assess_health,
    chain_breaks,
    health_summary,
    schedule_interval,
    wal_lag_rows,
)
from backupflow.reporting import iso, local_and_utc
from backupflow.series import Series, all_series
from backupflow.storage import Tier, open_tiers
from backupflow.tiers import Holdings, TierState, locate
from flows._notify import (
    notify_on_cancellation,
    notify_on_failure,
    notify_recovered,
)
from flows._publish import in_run, latest_artifact, markdown_artifact, run_logger, table_artifact

__all__ = ["FINDINGS_KEY", "StaleBackupsError", "TierUnreachableError", "backup_health"]

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
    # An engine without differentials (PostgreSQL) takes none: its diff job has no row.
    kinds = dict(DATABASE_JOBS)
    if databases and not _differential(settings):
        del kinds["database_diff"]
    jobs = [
        (job if len(databases) == 1 else f"{job} {one.name}", job, one, kind)
        for one in databases
        for job, kind in kinds.items()
    ]
    return jobs + [(s.name, s.name, s, None) for s in every if s.category is not Category.DATABASE]


def _differential(settings: Settings) -> bool:
    """Whether the configured engine takes differential backups (when it cannot even be
    opened, the diff job keeps its row: health never hides a job on a guess)."""
    try:
        return open_engine(settings).capabilities.differential
    except BackupflowError:
        return True


class StaleBackupsError(BackupflowError):
    """A job's backups in some tier are stale, missing, broken or unreadable: RPO is at risk.

    ``notify`` is False when the previous health check found the very same job/tier pairs
    failing (the owners were told then): the run still fails, nobody is told again."""

    notify: bool = True


#: The failing pairs of the last health check (``job|tier|state``).
FINDINGS_KEY = "backup-health-findings"


def _finding_keys(rows: list[HealthRow], problems: list[str]) -> list[str]:
    keys = {f"{r.job}|{r.tier}|{r.state.value}" for r in rows if r.state is not HealthState.OK}
    return sorted(keys | ({"manifests|unreadable"} if problems else set()))


def _previous_findings() -> list[str] | None:
    """The last health check's failing pairs, or None when there is no record of one."""
    from prefect.artifacts import Artifact

    found = cast(Artifact | None, latest_artifact(FINDINGS_KEY))
    if found is None or not found.data:
        return None
    try:
        rows = json.loads(str(found.data)[: 1 << 20])
    except (ValueError, RecursionError):
        return None
    if not isinstance(rows, list):
        return None
    return [str(r.get("finding")) for r in rows[:10_000] if isinstance(r, dict)]


def _transition(rows: list[HealthRow], problems: list[str]) -> bool:
    """Record this check's failing pairs; True when the owners are to be told of a failure
    (the first failing check, or a pair that was not failing before).  A check that finds
    everything well after one that did not tells the DR lead it recovered."""
    if not in_run():
        return True
    findings = _finding_keys(rows, problems)
    try:
        previous = _previous_findings()
        table_artifact(
            key=FINDINGS_KEY,
            table=[{"finding": f} for f in findings] or [{"finding": "none"}],
            description="What the last health check found failing (job|tier|state)",
        )
    except Exception as exc:  # without the record, tell rather than stay quiet
        run_logger().warning("the health findings could not be recorded: %s", exc)
        return True
    before = [f for f in previous or [] if f != "none"]
    if not findings and before:
        notify_recovered("dr_lead", f"every job/tier pair is ok again ({len(before)} were failing)")
        return False
    new = [f for f in findings if f not in before]
    if findings and not new:
        run_logger().info(
            "the same %d job/tier pair(s) as the last health check are failing; the owners "
            "were told then, so they are not told again",
            len(findings),
        )
    return bool(new)


class TierUnreachableError(StaleBackupsError):
    """Every finding is a tier that could not be read (unreachable or denied): the backups
    may be fine, the tier is not."""


def _hours(delta: timedelta | None) -> str:
    return "—" if delta is None else f"{delta.total_seconds() / 3600:.1f} h"


def _run_name() -> str:
    """``backup-health-2026-11-26T18:15+09:00``: the start, in the settings' timezone."""
    now = datetime.now(UTC)
    # A run name never fails the run: the flow itself reports bad settings.
    with contextlib.suppress(Exception):
        now = now.astimezone(ZoneInfo(current_settings().timezone))
    return f"backup-health-{now.isoformat(timespec='minutes')}"


def _newest(holdings: Holdings, tier: Tier, kind: BackupKind | None) -> datetime | None:
    """The newest restore point a job's backups give in one tier: a full or differential
    also serves the kinds below it."""
    held = [e for e in holdings.sorted_entries() if tier in holdings.holders[e.id]]
    serves = {
        None: None,
        BackupKind.FULL: {BackupKind.FULL},
        BackupKind.DIFF: {BackupKind.FULL, BackupKind.DIFF},
        BackupKind.LOG: {BackupKind.FULL, BackupKind.DIFF, BackupKind.LOG},
    }[kind]
    points = [e.restore_point for e in held if serves is None or e.kind in serves]
    return max(points) if points else None


def _newest_wal(tiers: list[Tier], series: Series) -> dict[str, datetime | None]:
    """When each tier last received an archived WAL file of ``series`` (its newest record);
    None for a tier that holds none or could not be listed (its state says why)."""
    newest: dict[str, datetime | None] = {}
    for tier in tiers:
        try:
            times = [
                info.modified
                for info in tier.storage.list(wal_prefix(series.category, series.name))
                if info.key.endswith(".rec")
            ]
        except BackupflowError:
            times = []
        newest[tier.name] = max(times) if times else None
    return newest


def _gap(holdings: Holdings, tier: Tier, kind: BackupKind | None) -> str | None:
    """Why the chain of a job's backups is incomplete in one tier (None when it is whole):
    a backup whose parent, by the ids the manifests' names record, the tier lacks."""
    held = [e for e in holdings.sorted_entries() if tier in holdings.holders[e.id]]
    breaks = [(e, p) for e, p in chain_breaks(held) if kind is None or e.kind is kind]
    if not breaks:
        return None
    entry, parent = breaks[0]
    elsewhere = [t.name for t in holdings.holders.get(parent, []) if t is not tier]
    where = (
        f"which only tier(s) {', '.join(elsewhere)} hold; replicate to repair it"
        if elsewhere
        else "which no tier holds: it was lost"
    )
    more = f" (and {len(breaks) - 1} more gap(s))" if len(breaks) > 1 else ""
    return (
        f"{entry.kind.value} {entry.id} of {iso(entry.restore_point)} lacks its parent "
        f"{parent}, {where}{more}"
    )


def _table(rows: list[HealthRow], problems: list[str], now: datetime, timezone: str) -> str:
    lines = [
        f"# Backup health at {local_and_utc(now, timezone)}",
        "",
        "| state | job | tier | newest backup | age | allowed | detail |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r.state.value if r.state is HealthState.OK else f'**{r.state.value}**'} | {r.job} "
        f"| {r.tier} | {local_and_utc(r.newest, timezone) if r.newest else '—'} | "
        f"{'never' if r.state is HealthState.NEVER else _hours(r.age)} | {_hours(r.allowed)} "
        f"| {r.detail.replace('|', '/') or '—'} |"
        for r in rows
    ]
    lines += [f"\n* {p}" for p in problems]
    return "\n".join(lines)


@flow(
    name="backup-health",
    flow_run_name=_run_name,
    persist_result=False,
    on_failure=[notify_on_failure("dr_lead")],
    on_cancellation=[notify_on_cancellation("dr_lead")],
)
def backup_health() -> list[HealthRow]:
    """Age and completeness of every job's backups in every tier, against its schedule."""
    settings = current_settings()
    now = datetime.now(UTC)
    tiers = open_tiers(settings)
    newest: dict[tuple[str, str], datetime | None] = {}
    gaps: dict[tuple[str, str], str] = {}
    states: dict[str, TierState] = {}
    problems: list[str] = []
    jobs = _jobs(settings)
    for job, _schedule, series, kind in jobs:
        holdings = locate(tiers, series.category.value, series.name)
        for state in holdings.states.values():
            if state.tier not in states or (states[state.tier].answered and not state.answered):
                states[state.tier] = state  # a tier unreadable for any series is unreadable
        unread = {s.describe() for s in holdings.unread}
        problems += [p for p in holdings.problems if p not in unread and p not in problems]
        for tier in tiers:
            listed = tier in holdings.listed
            newest[(job, tier.name)] = _newest(holdings, tier, kind) if listed else None
            gap = _gap(holdings, tier, kind) if listed else None
            if gap is not None:
                gaps[(job, tier.name)] = gap
    intervals = {
        job: schedule_interval(getattr(settings.jobs, schedule).schedule, settings.timezone, now)
        for job, schedule, _series, _kind in jobs
    }
    rows = assess_health(
        newest,
        intervals,
        now,
        timedelta(minutes=settings.drill.health_grace_minutes),
        tiers=states,
        gaps=gaps,
    )
    if settings.database.engine == "postgres" and tiers:
        for job, _schedule, series, kind in jobs:
            if kind is BackupKind.LOG:  # one WAL row set per PostgreSQL series
                label = job.replace("database_log", "database_wal")
                rows += wal_lag_rows(label, _newest_wal(tiers, series), tiers[0].name, tiers=states)
        rank = {state: i for i, state in enumerate(HealthState)}
        rows.sort(key=lambda r: (rank[r.state], r.job, r.tier))
    markdown_artifact(key="backup-health", markdown=_table(rows, problems, now, settings.timezone))
    findings = health_summary(rows)
    told = _transition(rows, problems)
    if findings or problems:
        bad = sum(1 for r in rows if r.state is not HealthState.OK)
        parts = [f"{bad} of {len(rows)} job/tier pair(s) need attention"]
        if findings:
            parts[0] += ": " + "; ".join(findings)
        if problems:
            parts.append(f"{len(problems)} manifest problem(s): " + "; ".join(problems[:5]))
        unread = {HealthState.UNREACHABLE, HealthState.DENIED}
        only_tiers = not problems and all(
            r.state in unread for r in rows if r.state is not HealthState.OK
        )
        error = (TierUnreachableError if only_tiers else StaleBackupsError)(
            ", and ".join(parts) + "."
        )
        error.notify = told
        raise error
    return rows
