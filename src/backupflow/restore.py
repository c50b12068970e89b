"""Restore operations: plan from the tiers, rebuild in a scratch file, then install.

Nothing live is touched until the rebuilt database has passed every check; an existing
target is only replaced with an explicit ``replace`` and is then kept aside.  Each backup of
the chain is read from the first tier that holds a good copy: a copy that is missing or
fails its checksum is reported and the next tier is used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from backupflow.catalog import CatalogEntry
from backupflow.config import current_settings
from backupflow.engines.base import BackupSource, Engine
from backupflow.errors import (
    BackupflowError,
    BackupsUnreadableError,
    IntegrityError,
    NoBackupError,
    RestoreTargetError,
    StorageError,
    TargetInFutureError,
)
from backupflow.fsutil import make_dirs
from backupflow.leftovers import remove_dead_scratch
from backupflow.locks import target_lock
from backupflow.models import Category, Manifest, compact, iso, utc
from backupflow.pipeline import open_verified
from backupflow.planning import RestorePlan
from backupflow.storage import Tier
from backupflow.tiers import Holdings, TierState, locate
from backupflow.vocabulary import flag

__all__ = [
    "LoadedPlan",
    "RestoreOutcome",
    "execute_restore",
    "load_plan",
    "resolve_target",
]

Progress = Callable[[int], None]


@dataclass(frozen=True)
class LoadedPlan:
    """A restore plan over full manifests, the tiers holding each backup (in order), and
    what each consulted tier answered (``tier_states``, by tier name)."""

    plan: RestorePlan[Manifest]
    sources: dict[str, list[Tier]]
    problems: tuple[str, ...] = ()
    tier_states: dict[str, TierState] = field(default_factory=dict)


@dataclass(frozen=True)
class RestoreOutcome:
    """What a restore did."""

    plan: RestorePlan[Manifest]
    target: Path
    kept_aside: tuple[Path, ...]
    started_at: datetime
    finished_at: datetime
    tiers_used: dict[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    #: What the engine saved before the restore (a tail-log backup of a replaced database).
    saved: tuple[str, ...] = ()
    #: The checks the restored copy passed before it was installed.
    checks: tuple[str, ...] = ()

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


@dataclass
class _SeriesCatalog:
    """One series on the chosen tiers, as an engine's chain planner reads it."""

    holdings: Holdings
    problems: list[str]

    def sorted_entries(self) -> list[CatalogEntry]:
        return self.holdings.sorted_entries()

    def manifest(self, backup_id: str) -> Manifest:
        return self.holdings.load(backup_id)[0]


def load_plan(
    tiers: Sequence[Tier],
    engine: Engine,
    database: str,
    target_time: datetime | None,
    now: datetime,
    category: Category = Category.DATABASE,
) -> LoadedPlan:
    """Plan a restore of one series from the given tiers: the engine chooses the chain.

    Engines that chain by positions recorded inside the manifests (LSNs) read and
    authenticate every manifest first; the others plan from the manifest names and read
    only the chain's manifests.
    """
    if target_time is not None and utc(target_time) > utc(now):
        raise TargetInFutureError(
            f"the target {iso(target_time)} is later than now ({iso(now)}); give a time "
            f"in the past or {flag('latest')}."
        )
    every = engine.capabilities.chain == "positions"
    holdings = locate(tiers, category.value, database, authenticate=every)
    catalog = _SeriesCatalog(holdings, list(holdings.problems))
    try:
        plan = engine.plan_restore(catalog, database, target_time, now)
    except NoBackupError as exc:
        raise _with_problems(exc, database, holdings, catalog.problems) from None
    return LoadedPlan(
        plan=plan,
        sources={m.id: list(holdings.holders[m.id]) for m in plan.manifests},
        problems=tuple(catalog.problems),
        tier_states=dict(holdings.states),
    )


def _with_problems(
    exc: NoBackupError, database: str, holdings: Holdings, problems: Sequence[str]
) -> NoBackupError:
    """``exc``, saying which tiers could not be read and why, and what was skipped on the
    way (foreign or unreadable manifests): "no backups" is only said when every consulted
    tier answered and held none, since it would send the operator the wrong way."""
    unread = holdings.unread
    skipped = [p for p in problems if not any(p == s.describe() for s in unread)]
    message = str(exc).rstrip(".")
    if unread:
        answered = [s.tier for s in holdings.states.values() if s.answered]
        which = "; ".join(s.describe() for s in unread)
        it, holds, them = ("it", "holds", "it") if len(unread) == 1 else ("they", "hold", "them")
        if message.startswith("there are no backups of") and not answered:
            message = f"the backups of {database} could not be looked for: {which}"
        elif message.startswith("there are no backups of"):
            message = (
                f"no backups of {database} were found in tier(s) {', '.join(answered)}, but "
                f"{which}, so it is not known whether {it} {holds} any"
            )
        else:
            message += f", but {which}, so {it} may hold more"
        message += f"; make {them} reachable, or restore from another tier, and try again"
    if skipped:
        shown = "; ".join(skipped[:3]) + (
            f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        )
        message += f", and some backups were skipped: {shown}"
    if unread and isinstance(exc, NoBackupError):
        return BackupsUnreadableError(f"{message}.")
    return type(exc)(f"{message}.")


def resolve_target(
    engine: Engine,
    plan: RestorePlan[Manifest],
    into: Path | None,
    replace: bool,
    *,
    dry_run: bool = False,
    note: Callable[[str], None] | None = None,
) -> Path:
    """The path the restore writes; refuses an existing path unless ``replace``.

    A dry run only shows the plan, so it does not refuse a target for existing: it checks
    the target as a replacing restore would (``note`` is told that a real run needs
    ``replace``), and still refuses a target no restore could write (a link, a folder).
    """
    if into is not None:
        target = into
    elif replace:
        target = engine.live_target()
    else:
        target = engine.default_target(plan.restore_point)
    if not dry_run or replace:
        engine.check_target(target, replace)
        return target
    try:
        engine.check_target(target, False)
    except RestoreTargetError:
        engine.check_target(target, True)  # what is left: anything but existing
        if note is not None:
            note(
                f"{target} exists: a real run would refuse it without {flag('replace')} "
                "(with it, the current copy is kept aside)"
            )
    return target


class _UnusableCopy(IntegrityError):
    """One tier's copy of one backup could not be read or failed its checksum."""

    def __init__(self, backup_id: str, tier: str, reason: str) -> None:
        super().__init__(f"the {tier} copy of backup {backup_id} is unusable: {reason}")
        self.backup_id = backup_id
        self.tier = tier


def _source(
    manifest: Manifest, tier: Tier, chunk_bytes: int, progress: Progress | None
) -> BackupSource:
    @contextmanager
    def open_object(role: str) -> Iterator[BinaryIO]:
        try:
            with open_verified(
                tier.storage,
                manifest.object(role),
                chunk_bytes=chunk_bytes,
                progress=progress,
                keyring=tier.keyring,
            ) as handle:
                yield handle
        except (IntegrityError, StorageError) as exc:
            if isinstance(exc, _UnusableCopy):
                raise
            raise _UnusableCopy(manifest.id, tier.name, str(exc)) from exc

    return BackupSource(manifest=manifest, open_object=open_object)


def execute_restore(
    engine: Engine,
    loaded: LoadedPlan,
    target: Path,
    *,
    replace: bool,
    chunk_bytes: int,
    progress: Progress | None = None,
    report: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
    lock_dir: Path | None = None,
) -> RestoreOutcome:
    """Rebuild the chain next to ``target``, verify it, then move it into place.

    When a tier's copy fails, the restore starts again with that copy excluded, until it
    succeeds or no tier is left for some backup of the chain.  Before anything is written,
    the recorded sizes are checked against the free space where the restore is built, and
    missing folders on the way to ``target`` are created ``0700``.  The build and the
    install hold the target's lock (:func:`~backupflow.locks.target_lock`, under
    ``lock_dir``, by default the settings' staging folder): a second restore into the same
    target is refused while this one writes.
    """
    plan = loaded.plan
    started = datetime.now(UTC)
    stamp = compact(started)
    scratch = engine.scratch_path(target)
    engine.check_space(plan.manifests, scratch)
    if engine.capabilities.target == "path":
        make_dirs(target.parent)
    # One writer per target: two restores, drills or failovers never build over each other.
    lock_dir = lock_dir or current_settings().staging_dir
    with target_lock(lock_dir, target, run=os.environ.get("PREFECT__FLOW_RUN_ID")):
        # Scratch copies killed restores into this target left (never a live one's: we
        # hold the target's lock), once older than the grace period.
        grace = current_settings().orphan_grace_minutes * 60
        for left in remove_dead_scratch(
            engine, target, lock_dir=lock_dir, older_than=time.time() - grace, locked=True
        ):
            if note is not None:
                note(f"removed {left}, left by a restore that was killed")
        saved = engine.before_restore(target, replace=replace, stamp=stamp)
        for line in saved:  # said now: a failure below must not hide where it is
            if note is not None:
                note(line)
        unusable: set[tuple[str, str]] = set()
        problems: list[str] = []
        while True:
            chosen: dict[str, Tier] = {}
            for manifest in plan.manifests:
                usable = [
                    t for t in loaded.sources[manifest.id] if (manifest.id, t.name) not in unusable
                ]
                if not usable:
                    shown = "; ".join(problems)
                    raise IntegrityError(
                        f"no tier holds a usable copy of backup {manifest.id}: {shown}"
                    )
                chosen[manifest.id] = usable[0]
            chain = [_source(m, chosen[m.id], chunk_bytes, progress) for m in plan.manifests]
            try:
                # Check, then install: the engine builds and checks the copy in scratch, and
                # only a copy that passed is put in place.
                restored = engine.restore(chain, scratch, until=plan.requested)
                installed = engine.install(restored, target, replace=replace, stamp=stamp)
                checks = restored.checks
                problems += restored.problems
                break
            except _UnusableCopy as exc:
                unusable.add((exc.backup_id, exc.tier))
                problems.append(str(exc))
                if report is not None:
                    report(f"{exc}; trying the next tier")
            finally:
                try:
                    engine.discard(scratch)
                except BackupflowError as exc:  # never hide why the restore itself failed
                    if report is not None:
                        report(f"could not remove the scratch {scratch}: {exc}")
    return RestoreOutcome(
        plan=plan,
        target=installed.target,
        kept_aside=installed.kept_aside,
        started_at=started,
        finished_at=datetime.now(UTC),
        tiers_used={backup_id: tier.name for backup_id, tier in chosen.items()},
        problems=tuple(problems),
        saved=saved,
        checks=checks,
    )
