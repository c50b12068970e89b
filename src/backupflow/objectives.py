"""Recovery objectives: drill results (RTO, RPO) and backup health (one state per job and
tier: unreachable, incomplete chain, never, stale or ok). Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cronsim import CronSim

from backupflow.models import utc
from backupflow.planning import B
from backupflow.reporting import recovery_point, recovery_time
from backupflow.tiers import TierState

__all__ = [
    "DrillResult",
    "HealthRow",
    "HealthState",
    "assess_health",
    "chain_breaks",
    "drill_result",
    "health_summary",
    "schedule_interval",
]


@dataclass(frozen=True)
class DrillResult:
    """What a drill measured against the objectives."""

    started: datetime
    verified: datetime
    restore_point: datetime
    rto: timedelta  # the run's start -> restored and verified (docs/objectives.md)
    rpo: timedelta  # requested time (or the run's start, for latest) -> restore point
    rto_objective: timedelta
    rpo_objective: timedelta

    @property
    def rto_met(self) -> bool:
        return self.rto <= self.rto_objective

    @property
    def rpo_met(self) -> bool:
        return self.rpo <= self.rpo_objective

    @property
    def passed(self) -> bool:
        return self.rto_met and self.rpo_met


def drill_result(
    started: datetime,
    verified: datetime,
    restore_point: datetime,
    *,
    requested: datetime | None = None,
    rto_hours: float,
    rpo_hours: float,
) -> DrillResult:
    """The drill's run start is the moment of disaster (docs/objectives.md): RTO runs from it
    to the verified restore; RPO is the requested time minus the restore point reached, or,
    for the latest state, the run's start minus it."""
    started, verified, restore_point = utc(started), utc(verified), utc(restore_point)
    return DrillResult(
        started=started,
        verified=verified,
        restore_point=restore_point,
        rto=recovery_time(started, verified),
        rpo=recovery_point(restore_point, requested, started),
        rto_objective=timedelta(hours=rto_hours),
        rpo_objective=timedelta(hours=rpo_hours),
    )


def schedule_interval(cron: str, timezone: str, around: datetime) -> timedelta:
    """The longest gap between consecutive runs of ``cron`` over the week after ``around``."""
    from zoneinfo import ZoneInfo

    local = utc(around).astimezone(ZoneInfo(timezone)).replace(tzinfo=None)
    runs = CronSim(cron, local)
    previous = next(runs)
    longest = timedelta(0)
    for _ in range(24 * 7):
        current = next(runs)
        longest = max(longest, current - previous)
        previous = current
        if current - local > timedelta(days=8):
            break
    return longest


class HealthState(StrEnum):
    """How one job stands in one tier, worst first."""

    UNREACHABLE = "unreachable"
    DENIED = "denied"
    INCOMPLETE_CHAIN = "incomplete chain"
    NEVER = "never"
    STALE = "stale"
    OK = "ok"


_RANK = {state: rank for rank, state in enumerate(HealthState)}


@dataclass(frozen=True)
class HealthRow:
    """The newest good backup of one job in one tier, against its schedule, and its state
    (``detail`` says why when it is not ok)."""

    job: str
    tier: str
    newest: datetime | None
    age: timedelta | None
    allowed: timedelta
    stale: bool
    state: HealthState = HealthState.OK
    detail: str = ""


def chain_breaks(entries: Iterable[B]) -> list[tuple[B, str]]:
    """The backups of one tier whose parent (as their names record it) the tier lacks, each
    with the missing parent's id, oldest first.  Only the first backup after a gap is named:
    the ones built on it are lost with it."""
    entries = list(entries)
    held = {e.id for e in entries}
    return [
        (e, e.parent_id)
        for e in sorted(entries, key=lambda e: (e.restore_point, e.id))
        if e.parent_id is not None and e.parent_id not in held
    ]


def assess_health(
    newest: Mapping[tuple[str, str], datetime | None],
    intervals: Mapping[str, timedelta],
    now: datetime,
    grace: timedelta,
    *,
    tiers: Mapping[str, TierState] | None = None,
    gaps: Mapping[tuple[str, str], str] | None = None,
) -> list[HealthRow]:
    """One row per (job, tier) of ``newest``, worst first.

    A tier that could not be read (``tiers``) makes its rows unreachable (or denied), with the
    cause; a job whose chain is broken in a tier (``gaps``, the reason) is an incomplete
    chain; a job without any backup is never backed up; one whose newest backup is older than
    its interval plus grace is stale."""
    rows = []
    for (job, tier), moment in newest.items():
        allowed = intervals[job] + grace
        age = utc(now) - utc(moment) if moment is not None else None
        stale = age is None or age > allowed
        state, detail = HealthState.OK, ""
        answer = (tiers or {}).get(tier)
        if answer is not None and not answer.answered:
            state, detail = HealthState(answer.state), answer.cause
        elif (job, tier) in (gaps or {}):
            state, detail = HealthState.INCOMPLETE_CHAIN, (gaps or {})[(job, tier)]
        elif age is None:
            state, detail = HealthState.NEVER, "never backed up"
        elif stale:
            state = HealthState.STALE
            detail = f"newest is {_hours(age)} old, {_hours(allowed)} allowed"
        rows.append(HealthRow(job, tier, moment, age, allowed, stale, state, detail))
    return sorted(rows, key=lambda r: (_RANK[r.state], r.job, r.tier))


#: How far behind the first tier another tier's archived WAL may be (docs/postgres.md).
WAL_COPY_BOUND = timedelta(seconds=60)


def wal_lag_rows(
    job: str,
    newest: Mapping[str, datetime | None],
    first: str,
    *,
    bound: timedelta = WAL_COPY_BOUND,
    tiers: Mapping[str, TierState] | None = None,
) -> list[HealthRow]:
    """One row per tier for a PostgreSQL series' archived WAL: how far its newest archived
    file (``newest``, by tier) is behind the first tier's, against ``bound`` (the resident
    archiver copies each segment to every tier within it)."""
    lead = newest.get(first)
    rows = []
    for tier, moment in newest.items():
        answer = (tiers or {}).get(tier)
        lag = (utc(lead) - utc(moment)) if lead is not None and moment is not None else None
        state, detail = HealthState.OK, ""
        if answer is not None and not answer.answered:
            state, detail = HealthState(answer.state), answer.cause
        elif lead is None:
            state, detail = HealthState.NEVER, "no WAL archived yet"
        elif lag is None:
            state, detail = HealthState.NEVER, f"no WAL copied from the {first} tier yet"
        elif lag > bound:
            state = HealthState.STALE
            detail = f"its WAL is {lag.total_seconds():.0f} s behind the {first} tier's"
        if tier == first and lead is not None:
            lag = timedelta(0)
        stale = state is not HealthState.OK
        rows.append(HealthRow(job, tier, moment, lag, bound, stale, state, detail))
    return rows


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


def health_summary(rows: Iterable[HealthRow]) -> list[str]:
    """One line per finding, worst first: one line per unreadable tier (however many jobs it
    holds), then one per job and tier that is not ok.  Empty when every row is ok."""
    rows = list(rows)
    lines: list[str] = []
    seen: set[str] = set()
    for row in rows:
        if row.state in (HealthState.UNREACHABLE, HealthState.DENIED):
            if row.tier not in seen:
                seen.add(row.tier)
                jobs = sum(1 for r in rows if r.tier == row.tier)
                lines.append(
                    f"tier {row.tier} is {row.state.value} ({row.detail.rstrip('.')}), so "
                    f"{jobs} job(s) could not be checked there"
                )
        elif row.state is HealthState.NEVER:
            lines.append(f"{row.job} in {row.tier}: never backed up")
        elif row.state is not HealthState.OK:
            lines.append(f"{row.job} in {row.tier}: {row.state.value} ({row.detail})")
    return lines
