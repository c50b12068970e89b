"""Pure planners: which backup to take, and which backups restore a target.

No I/O here: every function takes manifests and ``now`` and returns a plan that says why,
or raises a typed :class:`~backupflow.errors.RestorePlanError` that says why not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, Literal, Protocol, TypeVar

from backupflow.errors import ChainGapError, NoBackupError, TargetInFutureError
from backupflow.models import BackupKind, Manifest, iso, utc
from backupflow.vocabulary import flag

__all__ = [
    "Backup",
    "BackupDecision",
    "PlanStep",
    "RestorePlan",
    "lost_parents",
    "plan_backup",
    "plan_restore",
]


class Backup(Protocol):
    """What planning needs of a backup: a manifest, or a catalog entry read from its key."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> BackupKind: ...

    @property
    def restore_point(self) -> datetime: ...

    @property
    def parent_id(self) -> str | None: ...


B = TypeVar("B", bound=Backup)


@dataclass(frozen=True)
class BackupDecision(Generic[B]):
    """What a backup run will take and what it builds on."""

    kind: BackupKind
    base: B | None = None
    parent: B | None = None
    notes: tuple[str, ...] = ()


def plan_backup(
    manifests: Sequence[B],
    requested: BackupKind,
    *,
    database: str,
    missing_full: Literal["promote", "fail"] = "promote",
) -> BackupDecision[B]:
    """Decide the kind, base and parent of the next backup of one database.

    A differential builds on the newest full backup; a log builds on the newest backup of
    that full's chain.  Without any full backup, the run is promoted to a full backup (or
    refused, with ``missing_full="fail"``).
    """
    if requested is BackupKind.FULL:
        return BackupDecision[B](BackupKind.FULL)
    fulls = [m for m in manifests if m.kind is BackupKind.FULL]
    if not fulls:
        if missing_full == "fail":
            raise NoBackupError(
                f"no full backup of {database} exists, so a {requested.value} backup has "
                "nothing to build on; run a full backup first or set "
                "BACKUPFLOW_DATABASE__MISSING_FULL=promote."
            )
        return BackupDecision[B](
            BackupKind.FULL,
            notes=(
                f"no full backup of {database} existed: took a full backup instead of the "
                f"requested {requested.value} backup",
            ),
        )
    base = max(fulls, key=lambda m: (m.restore_point, m.id))
    if requested is BackupKind.DIFF:
        return BackupDecision(BackupKind.DIFF, base=base, parent=base)
    by_id = {m.id: m for m in manifests}
    chain = [m for m in manifests if _full_of(m, by_id) == base.id]
    parent = max(chain, key=lambda m: (m.restore_point, m.id))
    return BackupDecision(BackupKind.LOG, base=base, parent=parent)


def _full_of(backup: Backup, by_id: Mapping[str, Backup]) -> str | None:
    """The id of the full backup at the root of ``backup``'s chain (None if broken)."""
    current: Backup | None = backup
    seen = 0
    while current is not None and current.kind is not BackupKind.FULL and seen < 100_000:
        current = by_id.get(current.parent_id or "")
        seen += 1
    return current.id if current is not None and current.kind is BackupKind.FULL else None


@dataclass(frozen=True)
class PlanStep(Generic[B]):
    """One backup to apply, and why it is in the plan."""

    manifest: B
    reason: str


@dataclass(frozen=True)
class RestorePlan(Generic[B]):
    """An ordered chain (full first) that restores one database to ``restore_point``."""

    database: str
    requested: datetime | None  # None = latest
    steps: tuple[PlanStep[B], ...]
    restore_point: datetime
    now: datetime
    notes: tuple[str, ...] = field(default=())
    #: The requested time lies after every backup of the series: nothing the repository
    #: holds reaches it (a restore stops unless the operator accepts ``restore_point``).
    beyond: bool = False

    @property
    def manifests(self) -> tuple[B, ...]:
        return tuple(step.manifest for step in self.steps)

    @property
    def last(self) -> B:
        return self.steps[-1].manifest

    def with_manifests(self, loaded: Mapping[str, Manifest]) -> RestorePlan[Manifest]:
        """The same plan over full manifests (loaded only for the chosen chain)."""
        steps = tuple(PlanStep(loaded[s.manifest.id], s.reason) for s in self.steps)
        return RestorePlan(
            self.database,
            self.requested,
            steps,
            self.restore_point,
            self.now,
            self.notes,
            self.beyond,
        )

    @property
    def shortfall(self) -> timedelta:
        """How far the restore point lies before the requested time (or before now)."""
        return (self.requested or self.now) - self.restore_point


def _chain(target: B, by_id: Mapping[str, B]) -> list[B] | tuple[str, B]:
    """Full-first chain ending at ``target``, or (missing id, the backup that needs it)."""
    chain = [target]
    current = target
    while current.kind is not BackupKind.FULL:
        parent_id = current.parent_id
        parent = by_id.get(parent_id) if parent_id else None
        if parent is None or parent.restore_point > current.restore_point:
            return (parent_id or "(none recorded)", current)
        chain.append(parent)
        current = parent
    chain.reverse()
    return chain


def _reason(backup: Backup, previous: Backup | None) -> str:
    if backup.kind is BackupKind.FULL:
        return "full backup: the base of the chain"
    assert previous is not None
    if backup.kind is BackupKind.DIFF:
        return f"differential: changes since full {previous.id}"
    return f"log: changes since {previous.kind.value} {previous.id}"


def plan_restore(
    manifests: Sequence[B],
    *,
    database: str,
    target: datetime | None,
    now: datetime,
) -> RestorePlan[B]:
    """Choose the chain that restores ``database`` to ``target`` (``None`` = latest).

    The plan reaches the newest restore point at or before the target; when that point is
    earlier than the target, the plan says so.  If that point's chain is broken, the error
    names the two backups around the gap and the latest point that can still be restored.
    """
    now = utc(now)
    series = sorted(
        # Catalog entries come from one database's folder; manifests say which database.
        (m for m in manifests if getattr(m, "database", database) == database),
        key=lambda m: (m.restore_point, m.id),
    )
    if target is not None:
        target = utc(target)
        if target > now:
            raise TargetInFutureError(
                f"the target {iso(target)} is later than now ({iso(now)}); "
                f"give a time in the past or {flag('latest')}."
            )
    if not series:
        raise NoBackupError(f"there are no backups of {database} in this repository.")
    limit = target or now
    candidates = [m for m in series if m.restore_point <= limit]
    if not candidates or not any(m.kind is BackupKind.FULL for m in candidates):
        earliest = next((m for m in series if m.kind is BackupKind.FULL), None)
        where = (
            f"the earliest restore point of {database} is {iso(earliest.restore_point)}"
            if earliest
            else f"{database} has no full backup at all"
        )
        raise NoBackupError(f"no full backup of {database} restores to {iso(limit)}: {where}.")
    by_id = {m.id: m for m in series}
    best = candidates[-1]
    found = _chain(best, by_id)
    if isinstance(found, tuple):
        missing, needer = found
        before = [m for m in series if m.restore_point < needer.restore_point]
        left = before[-1] if before else None
        fallback = _latest_restorable(candidates, by_id)
        hint = (
            f"; the latest point that can be restored is {iso(fallback.restore_point)} "
            f"(--at {iso(fallback.restore_point)})"
            if fallback
            else ""
        )
        left_text = f"{left.id} ({iso(left.restore_point)})" if left else "the start"
        point = (
            f"the latest point before the gap is {iso(fallback.restore_point)}"
            if fallback
            else "no earlier point can be restored"
        )
        raise ChainGapError(
            f"the chain to {iso(best.restore_point)} is broken: backup {missing} of the chain "
            f"was lost (no tier read holds it; {needer.kind.value} backup {needer.id} needs "
            f"it); the gap lies between {left_text} and {needer.id} "
            f"({iso(needer.restore_point)}); {point}{hint}."
        )
    steps = tuple(PlanStep(m, _reason(m, found[i - 1] if i else None)) for i, m in enumerate(found))
    notes: list[str] = []
    if target is not None and best.restore_point < target:
        gap = target - best.restore_point
        lost = _lost_after(best, series, by_id)
        why = (
            f"backup {lost} of the chain was lost (no tier read holds it); the latest point "
            f"before the gap is {iso(best.restore_point)}"
            if lost
            else f"no backup of {database} was taken in between"
        )
        notes.append(
            f"the restore point {iso(best.restore_point)} is {_human(gap)} earlier than the "
            f"requested {iso(target)}: {why}"
        )
    return RestorePlan(
        database=database,
        requested=target,
        steps=steps,
        restore_point=best.restore_point,
        now=now,
        notes=tuple(notes),
        beyond=target is not None and all(m.restore_point < target for m in series),
    )


def _lost_after(best: B, series: Sequence[B], by_id: Mapping[str, B]) -> str | None:
    """The id of a backup taken after ``best`` that no tier holds, when the next backup
    names it as its parent (then a backup *was* taken in the gap, and lost)."""
    later = [m for m in series if (m.restore_point, m.id) > (best.restore_point, best.id)]
    if not later or later[0].kind is BackupKind.FULL:
        return None
    parent_id = later[0].parent_id
    return parent_id if parent_id and parent_id not in by_id else None


def lost_parents(backups: Sequence[B]) -> list[tuple[B, str]]:
    """Every backup whose parent (named in its catalog entry) is among none of ``backups``:
    ``(the backup, the missing parent's id)``, oldest first.  Given every tier's catalog,
    each is a chain gap that a restore through it would hit."""
    ids = {b.id for b in backups}
    return [
        (b, b.parent_id)
        for b in sorted(backups, key=lambda m: (m.restore_point, m.id))
        if b.kind is not BackupKind.FULL and b.parent_id and b.parent_id not in ids
    ]


def _latest_restorable(candidates: Sequence[B], by_id: Mapping[str, B]) -> B | None:
    for manifest in reversed(candidates):
        if isinstance(_chain(manifest, by_id), list):
            return manifest
    return None


def _human(delta: timedelta) -> str:
    if delta.total_seconds() < 60:
        return f"{delta.total_seconds():.3f} s"
    seconds = int(delta.total_seconds())
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
