"""Restore chain selection by LSN, never by timestamp (the rules dbatools settled on).

* full: the full backup finished at or before the target with the highest ``last_lsn``
  (a copy-only full may serve);
* differential: one whose ``database_backup_lsn`` equals that full's ``checkpoint_lsn``, the
  latest finished at or before the target (copy-only fulls never become a base);
* logs: ``last_lsn >= anchor.last_lsn``, empty ones (``first_lsn == last_lsn``) skipped, same
  recovery fork, each ``first_lsn`` equal to the previous ``last_lsn`` (else a gap, named),
  up to and including the first log that ends at or after the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from backupflow.errors import CatalogError, ChainGapError, NoBackupError
from backupflow.models import BackupKind, Manifest, iso, utc
from backupflow.planning import PlanStep, RestorePlan

if TYPE_CHECKING:
    from backupflow.engines.base import ChainCatalog

__all__ = ["lsn", "plan_by_lsn", "select_chain"]


_MAX_LSN = 10**25  # numeric(25,0)


def lsn(manifest: Manifest, field: str) -> int:
    """An LSN from a manifest's position (numeric(25,0) kept as an integer); anything else
    is a :class:`CatalogError` that does not repeat the value."""
    value = manifest.position.get(field)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 25:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_LSN:
        raise CatalogError(
            f"backup {manifest.id} has no valid {field} in its manifest; it is damaged or was "
            "altered, so restore from another tier."
        )
    return value


def _finish(manifest: Manifest) -> datetime:
    return manifest.restore_point


def select_chain(
    backups: Sequence[Manifest], database: str, target: datetime | None
) -> tuple[list[Manifest], datetime]:
    """The backups to restore, in order, and the point the restore reaches."""
    limit = utc(target) if target is not None else None
    for manifest in backups:  # every LSN a plan prints is a checked integer
        lsn(manifest, "first_lsn")
        lsn(manifest, "last_lsn")

    def finished(m: Manifest) -> bool:
        return limit is None or _finish(m) <= limit

    fulls = [m for m in backups if m.kind is BackupKind.FULL and finished(m)]
    if not fulls:
        first = min((m for m in backups if m.kind is BackupKind.FULL), key=_finish, default=None)
        where = f"the first one finished at {iso(_finish(first))}" if first else "none exists"
        raise NoBackupError(f"no full backup of {database} finished by the target: {where}.")
    full = max(fulls, key=lambda m: (lsn(m, "last_lsn"), _finish(m)))
    diffs = [
        m
        for m in backups
        if m.kind is BackupKind.DIFF
        and finished(m)
        and lsn(m, "database_backup_lsn") == lsn(full, "checkpoint_lsn")
        and lsn(m, "last_lsn") > lsn(full, "last_lsn")
    ]
    anchor = max(diffs, key=lambda m: (lsn(m, "last_lsn"), _finish(m))) if diffs else full
    chain = [full] + ([anchor] if anchor is not full else [])
    fork = anchor.position.get("recovery_fork")
    logs = sorted(
        (
            m
            for m in backups
            if m.kind is BackupKind.LOG
            and lsn(m, "last_lsn") >= lsn(anchor, "last_lsn")
            and lsn(m, "first_lsn") != lsn(m, "last_lsn")
            and m.position.get("recovery_fork") == fork
        ),
        key=lambda m: lsn(m, "first_lsn"),
    )
    reached = _finish(anchor)
    previous_last = lsn(anchor, "last_lsn")
    previous: Manifest = anchor
    if limit is not None and reached >= limit:
        return chain, reached
    for index, log in enumerate(logs):
        first_lsn = lsn(log, "first_lsn")
        if index == 0:
            if first_lsn > previous_last:
                _gap(database, previous, log)
        elif first_lsn != previous_last:
            _gap(database, previous, log)
        chain.append(log)
        previous, previous_last = log, lsn(log, "last_lsn")
        reached = _finish(log)
        if limit is not None and reached >= limit:
            return chain, limit
    if limit is not None and reached > limit:
        reached = limit
    return chain, reached


def _gap(database: str, before: Manifest, after: Manifest) -> None:
    raise ChainGapError(
        f"the log chain of {database} has a gap between {before.kind.value} {before.id} "
        f"(last LSN {lsn(before, 'last_lsn')}, {iso(before.restore_point)}) and log "
        f"{after.id} (first LSN {lsn(after, 'first_lsn')}); restore to "
        f"{iso(before.restore_point)} or earlier, or take a new full backup."
    )


def plan_by_lsn(
    catalog: ChainCatalog, database: str, target: datetime | None, now: datetime
) -> RestorePlan[Manifest]:
    """Choose the chain by LSN from every manifest (never by timestamp)."""
    manifests = []
    for entry in catalog.sorted_entries():
        try:
            manifests.append(catalog.manifest(entry.id))
        except CatalogError as exc:
            catalog.problems.append(f"{exc}; planning without it")
    if not manifests:
        raise NoBackupError(f"there are no backups of {database} in these tiers.")
    chain, reached = select_chain(manifests, database, target)
    steps = tuple(
        PlanStep(m, f"{m.kind.value}: LSN {m.position['first_lsn']} to {m.position['last_lsn']}")
        for m in chain
    )
    notes: tuple[str, ...] = ()
    if target is not None and reached < utc(target):
        notes = (
            f"the backups reach {reached:%Y-%m-%dT%H:%M:%SZ}, earlier than the requested "
            f"{utc(target):%Y-%m-%dT%H:%M:%SZ}",
        )
    beyond = target is not None and all(m.restore_point < utc(target) for m in manifests)
    return RestorePlan(database, target, steps, reached, utc(now), notes, beyond)
