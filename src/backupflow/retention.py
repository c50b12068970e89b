"""Retention: a pure planner that never breaks a restore chain, and its executor.

Rules, in order (every backup gets a reason):

1. A backup younger than its kind's retention (full 30 days, differential 7, log 3 by
   default; per tier overridable) is kept.
2. The newest ``min_fulls`` full backups (default 2) are kept whatever their age.
3. Point-in-time recovery stays possible over the whole log retention window: the newest
   backup at or before the window's start is kept too.
4. Everything a kept backup needs (its parent, and the parent's parent, down to the full) is
   kept, whatever its age.
5. Anything else is deleted -- unless it is still under S3 Object Lock: "kept: locked".

The executor deletes newest first (dependents before what they depend on) and, for each
backup, its manifest before its data, so an interrupted prune never leaves a backup that
looks whole but is not.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic

from backupflow.catalog import Catalog, CatalogEntry, manifest_key
from backupflow.config import Settings, TierSettings
from backupflow.errors import BackupflowError, ObjectLockedError
from backupflow.models import BackupKind, Category, Manifest, utc
from backupflow.planning import B
from backupflow.storage import Tier

__all__ = [
    "JOB_OF",
    "PruneReport",
    "RetentionDecision",
    "RetentionPlan",
    "RetentionPolicy",
    "entry_of",
    "execute_prune",
    "plan_retention",
    "policy_for",
    "prune_tier",
]


#: The job whose retention applies to each (category, kind).
JOB_OF: dict[tuple[Category, BackupKind], str] = {
    (Category.DATABASE, BackupKind.FULL): "database_full",
    (Category.DATABASE, BackupKind.DIFF): "database_diff",
    (Category.DATABASE, BackupKind.LOG): "database_log",
    **{(Category.CONFIG, kind): "config" for kind in BackupKind},
    **{(Category.LOGS, kind): "logs" for kind in BackupKind},
    **{(Category.UPLOADS, kind): "uploads" for kind in BackupKind},
}


def policy_for(settings: Settings, tier: str, category: Category) -> RetentionPolicy:
    """The retention policy of one category in one tier: the jobs' days, the tier's
    overrides, the minimum of full backups and the tier's Object Lock."""
    tier_settings: TierSettings = getattr(settings.repository, tier)
    days = {}
    for kind in BackupKind:
        job = JOB_OF[(category, kind)]
        override = getattr(tier_settings.retention, job)
        days[kind] = override or getattr(settings.jobs, job).retention_days
    lock = (
        timedelta(days=tier_settings.object_lock_days)
        if tier_settings.is_s3 and tier_settings.object_lock_mode
        else None
    )
    return RetentionPolicy(days, settings.repository.min_full_backups, lock)


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of backup is kept in one tier."""

    days: Mapping[BackupKind, int]
    min_fulls: int = 2
    #: Object Lock retention of the tier, if any: objects cannot be deleted before it ends.
    lock: timedelta | None = None

    def window(self, kind: BackupKind) -> timedelta:
        return timedelta(days=self.days[kind])


@dataclass(frozen=True)
class RetentionDecision(Generic[B]):
    """Keep or delete one backup, and why."""

    backup: B
    keep: bool
    reason: str


@dataclass(frozen=True)
class RetentionPlan(Generic[B]):
    """A decision for every backup of one series in one tier."""

    decisions: tuple[RetentionDecision[B], ...]

    @property
    def deletions(self) -> list[B]:
        """Backups to delete, newest first (dependents before what they depend on)."""
        doomed = [d.backup for d in self.decisions if not d.keep]
        return sorted(doomed, key=lambda b: (b.restore_point, b.id), reverse=True)

    @property
    def kept(self) -> list[B]:
        return [d.backup for d in self.decisions if d.keep]


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f} days" if days < 10 else f"{days:.0f} days"


def plan_retention(
    backups: Sequence[B], policy: RetentionPolicy, now: datetime
) -> RetentionPlan[B]:
    """Decide, for each backup of one series in one tier, whether it is kept and why."""
    now = utc(now)
    series = sorted(backups, key=lambda b: (b.restore_point, b.id))
    by_id = {b.id: b for b in series}
    reasons: dict[str, str] = {}

    for backup in series:
        age = now - backup.restore_point
        if age <= policy.window(backup.kind):
            reasons[backup.id] = (
                f"kept: {_days(age)} old, within the {policy.days[backup.kind]}-day "
                f"{backup.kind.value} retention"
            )
    fulls = [b for b in series if b.kind is BackupKind.FULL]
    for backup in fulls[-policy.min_fulls :] if policy.min_fulls else []:
        reasons.setdefault(backup.id, f"kept: one of the {policy.min_fulls} newest full backups")
    log_start = now - policy.window(BackupKind.LOG)
    before_window = [b for b in series if b.restore_point <= log_start]
    if before_window:
        anchor = before_window[-1]
        reasons.setdefault(
            anchor.id,
            "kept: the last restore point before the log retention window starts, so every "
            "time in the window stays restorable",
        )

    # Everything a kept backup needs, down to its full.
    for backup in sorted(series, key=lambda b: (b.restore_point, b.id), reverse=True):
        if backup.id not in reasons:
            continue
        current = backup
        while current.parent_id is not None:
            parent = by_id.get(current.parent_id)
            if parent is None:
                break  # a gap: nothing more to protect on this chain
            reasons.setdefault(
                parent.id, f"kept: {current.kind.value} {current.id}, which is kept, needs it"
            )
            current = parent

    decisions = []
    for backup in series:
        if backup.id in reasons:
            decisions.append(RetentionDecision(backup, True, reasons[backup.id]))
            continue
        age = now - backup.restore_point
        if policy.lock is not None and age < policy.lock:
            until = backup.restore_point + policy.lock
            decisions.append(
                RetentionDecision(
                    backup, True, f"kept: locked (Object Lock until about {until:%Y-%m-%d %H:%M}Z)"
                )
            )
            continue
        decisions.append(
            RetentionDecision(
                backup,
                False,
                f"delete: {_days(age)} old, past the {policy.days[backup.kind]}-day "
                f"{backup.kind.value} retention, and no kept backup needs it",
            )
        )
    return RetentionPlan(tuple(decisions))


def prune_tier(
    tier: Tier,
    category: Category,
    name: str,
    policy: RetentionPolicy,
    *,
    now: datetime,
    dry_run: bool,
) -> tuple[RetentionPlan[CatalogEntry], PruneReport | None]:
    """Plan (and unless ``dry_run``, execute) retention for one series in one tier, over its
    authenticated backups only: a foreign manifest is never planned, so never deleted
    through."""
    catalog = Catalog(tier.storage, tier.keyring)
    scan = catalog.scan(category, name)
    plan = plan_retention([entry_of(m) for m in scan.manifests], policy, now)
    if dry_run:
        return plan, None
    deleted = {entry.id for entry in plan.deletions}
    kept_keys = {o.key for m in scan.manifests if m.id not in deleted for o in m.objects}
    return plan, execute_prune(catalog, tier.name, plan, keep=kept_keys)


def entry_of(manifest: Manifest) -> CatalogEntry:
    """The catalog entry of an authenticated manifest."""
    return CatalogEntry(
        id=manifest.id,
        kind=manifest.kind,
        restore_point=manifest.restore_point,
        parent_id=manifest.parent_id,
        key=manifest_key(manifest),
    )


@dataclass
class PruneReport:
    """What a prune of one tier did."""

    tier: str
    deleted: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def execute_prune(
    catalog: Catalog,
    tier: str,
    plan: RetentionPlan[CatalogEntry],
    *,
    keep: Collection[str] = (),
) -> PruneReport:
    """Delete what the plan says, newest first; manifest before data for each backup.  An
    object a kept backup also lists (``keep``) is never deleted with the one that goes."""
    report = PruneReport(tier)
    for entry in plan.deletions:
        try:
            manifest = catalog.load(entry)
            catalog.delete(manifest, keep=keep)
        except ObjectLockedError:
            report.locked.append(entry.id)
        except BackupflowError as exc:
            report.failed.append(f"{entry.id}: {exc}")
        else:
            report.deleted.append(entry.id)
    return report
