"""Recovery objectives: drill results (RTO, RPO) and backup health (staleness). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cronsim import CronSim

from backupflow.models import utc

__all__ = ["DrillResult", "HealthRow", "assess_health", "drill_result", "schedule_interval"]


@dataclass(frozen=True)
class DrillResult:
    """What a drill measured against the objectives."""

    started: datetime
    verified: datetime
    restore_point: datetime
    rto: timedelta  # disaster (drill start) -> restored and verified
    rpo: timedelta  # newest recoverable point -> disaster
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
    rto_hours: float,
    rpo_hours: float,
) -> DrillResult:
    """The drill's start is the moment of disaster: RTO runs to the verified restore, RPO back
    to the newest point the tier could restore."""
    started, verified, restore_point = utc(started), utc(verified), utc(restore_point)
    return DrillResult(
        started=started,
        verified=verified,
        restore_point=restore_point,
        rto=verified - started,
        rpo=max(started - restore_point, timedelta(0)),
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


@dataclass(frozen=True)
class HealthRow:
    """The newest good backup of one job in one tier, against its schedule."""

    job: str
    tier: str
    newest: datetime | None
    age: timedelta | None
    allowed: timedelta
    stale: bool


def assess_health(
    newest: Mapping[tuple[str, str], datetime | None],
    intervals: Mapping[str, timedelta],
    now: datetime,
    grace: timedelta,
) -> list[HealthRow]:
    """A job is stale in a tier when its newest backup is older than its interval plus grace
    (or there is none)."""
    rows = []
    for (job, tier), moment in sorted(newest.items()):
        allowed = intervals[job] + grace
        age = utc(now) - utc(moment) if moment is not None else None
        rows.append(HealthRow(job, tier, moment, age, allowed, stale=age is None or age > allowed))
    return rows
