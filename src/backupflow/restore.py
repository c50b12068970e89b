"""Restore operations: plan from the tiers, rebuild in a scratch file, then install.

Nothing live is touched until the rebuilt database has passed every check; an existing
target is only replaced with an explicit ``replace`` and is then kept aside.  Each backup of
the chain is read from the first tier that holds a good copy: a copy that is missing or
fails its checksum is reported and the next tier is used.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from backupflow.engines.base import BackupSource, Engine
from backupflow.engines.mssql.chain import select_chain
from backupflow.errors import (
    CatalogError,
    IntegrityError,
    NoBackupError,
    RestoreTargetError,
    StorageError,
    TargetInFutureError,
)
from backupflow.fsutil import free_bytes, make_dirs, readable_size
from backupflow.models import Category, Manifest, utc
from backupflow.pipeline import open_verified
from backupflow.planning import PlanStep, RestorePlan, plan_restore
from backupflow.storage import Tier
from backupflow.tiers import Holdings, locate

__all__ = [
    "LoadedPlan",
    "RestoreOutcome",
    "check_free_space",
    "execute_restore",
    "load_plan",
    "resolve_target",
]

Progress = Callable[[int], None]


@dataclass(frozen=True)
class LoadedPlan:
    """A restore plan over full manifests, and the tiers holding each backup (in order)."""

    plan: RestorePlan[Manifest]
    sources: dict[str, list[Tier]]
    problems: tuple[str, ...] = ()


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

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


def load_plan(
    tiers: Sequence[Tier],
    database: str,
    target_time: datetime | None,
    now: datetime,
    category: Category = Category.DATABASE,
    *,
    by_lsn: bool = False,
) -> LoadedPlan:
    """Plan from the manifest names on the given tiers; read full manifests for the chain only.

    With ``by_lsn`` (SQL Server), the chain is chosen by LSN from every manifest instead.
    """
    holdings = locate(tiers, category.value, database, authenticate=by_lsn)
    if by_lsn:
        return _load_lsn_plan(holdings, database, target_time, now)
    problems = list(holdings.problems)
    unreadable: set[str] = set()
    while True:
        usable = [e for e in holdings.sorted_entries() if e.id not in unreadable]
        try:
            plan = plan_restore(usable, database=database, target=target_time, now=now)
        except NoBackupError as exc:
            raise _with_problems(exc, problems) from None
        loaded: dict[str, Manifest] = {}
        try:
            for step in plan.steps:
                loaded[step.manifest.id], _tier = holdings.load(step.manifest.id)
        except CatalogError as exc:
            # A manifest no tier can read (damaged, or a newer format) is left out and the
            # plan is made again without it.
            unreadable.add(step.manifest.id)
            problems.append(f"{exc}; planning without it")
            continue
        return LoadedPlan(
            plan=plan.with_manifests(loaded),
            sources={s.manifest.id: list(holdings.holders[s.manifest.id]) for s in plan.steps},
            problems=tuple(problems),
        )


def _with_problems(exc: NoBackupError, problems: Sequence[str]) -> NoBackupError:
    """``exc``, saying what was skipped on the way (an unreachable tier, foreign manifests):
    "no backups" alone would send the operator the wrong way."""
    if not problems:
        return exc
    shown = "; ".join(problems[:3]) + (
        f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    )
    return NoBackupError(f"{str(exc).rstrip('.')}, but some were skipped: {shown}.")


def _load_lsn_plan(
    holdings: Holdings, database: str, target_time: datetime | None, now: datetime
) -> LoadedPlan:
    problems = list(holdings.problems)
    if target_time is not None and utc(target_time) > utc(now):
        raise TargetInFutureError(
            f"the target {utc(target_time):%Y-%m-%dT%H:%M:%SZ} is later than now; give a time "
            "in the past or --latest."
        )
    manifests = []
    for entry in holdings.sorted_entries():
        try:
            manifests.append(holdings.load(entry.id)[0])
        except CatalogError as exc:
            problems.append(f"{exc}; planning without it")
    if not manifests:
        raise _with_problems(
            NoBackupError(f"there are no backups of {database} in these tiers."), problems
        )
    chain, reached = select_chain(manifests, database, target_time)
    steps = tuple(
        PlanStep(m, f"{m.kind.value}: LSN {m.position['first_lsn']} to {m.position['last_lsn']}")
        for m in chain
    )
    notes: tuple[str, ...] = ()
    if target_time is not None and reached < utc(target_time):
        notes = (
            f"the backups reach {reached:%Y-%m-%dT%H:%M:%SZ}, earlier than the requested "
            f"{utc(target_time):%Y-%m-%dT%H:%M:%SZ}",
        )
    plan = RestorePlan(database, target_time, steps, reached, utc(now), notes)
    return LoadedPlan(
        plan=plan,
        sources={m.id: list(holdings.holders[m.id]) for m in chain},
        problems=tuple(problems),
    )


def resolve_target(
    engine: Engine, plan: RestorePlan[Manifest], into: Path | None, replace: bool
) -> Path:
    """The path the restore writes; refuses an existing path unless ``replace``."""
    if into is not None:
        target = into
    elif replace:
        target = engine.live_target()
    else:
        target = engine.default_target(plan.restore_point)
    engine.check_target(target, replace)
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


def check_free_space(engine: Engine, chain: Sequence[Manifest], scratch: Path) -> None:
    """Refuse a restore whose recorded sizes do not fit the filesystem it is built on."""
    needed = engine.space_needed(chain)
    try:
        folder, free = free_bytes(scratch.parent)
    except OSError as exc:
        raise RestoreTargetError(
            f"cannot read the free space of {scratch.parent} ({exc.strerror}); restore into "
            "a folder that exists with --into."
        ) from exc
    if needed > free:
        raise RestoreTargetError(
            f"the restore needs {readable_size(needed)} but {folder} has only "
            f"{readable_size(free)} free; free some space or restore elsewhere with --into."
        )


def execute_restore(
    engine: Engine,
    loaded: LoadedPlan,
    target: Path,
    *,
    replace: bool,
    chunk_bytes: int,
    progress: Progress | None = None,
    report: Callable[[str], None] | None = None,
) -> RestoreOutcome:
    """Rebuild the chain next to ``target``, verify it, then move it into place.

    When a tier's copy fails, the restore starts again with that copy excluded, until it
    succeeds or no tier is left for some backup of the chain.  Before anything is written,
    the recorded sizes are checked against the free space where the restore is built, and
    missing folders on the way to ``target`` are created ``0700``.
    """
    plan = loaded.plan
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    scratch = engine.scratch_path(target)
    check_free_space(engine, plan.manifests, scratch)
    make_dirs(target.parent)
    unusable: set[tuple[str, str]] = set()
    problems: list[str] = []
    while True:
        chosen: dict[str, Tier] = {}
        for manifest in plan.manifests:
            usable = [
                t for t in loaded.sources[manifest.id] if (manifest.id, t.name) not in unusable
            ]
            if not usable:
                raise IntegrityError(
                    f"no tier holds a usable copy of backup {manifest.id}: {'; '.join(problems)}"
                )
            chosen[manifest.id] = usable[0]
        chain = [_source(m, chosen[m.id], chunk_bytes, progress) for m in plan.manifests]
        try:
            until = plan.requested if engine.capabilities.point_in_time == "exact" else None
            engine.restore(chain, scratch, until=until)
            installed = engine.install(scratch, target, replace=replace, stamp=stamp)
            break
        except _UnusableCopy as exc:
            unusable.add((exc.backup_id, exc.tier))
            problems.append(str(exc))
            if report is not None:
                report(f"{exc}; trying the next tier")
        finally:
            if scratch.is_dir() and not scratch.is_symlink():
                shutil.rmtree(scratch, ignore_errors=True)
            else:
                scratch.unlink(missing_ok=True)
    return RestoreOutcome(
        plan=plan,
        target=installed.target,
        kept_aside=installed.kept_aside,
        started_at=started,
        finished_at=datetime.now(UTC),
        tiers_used={backup_id: tier.name for backup_id, tier in chosen.items()},
        problems=tuple(problems),
    )
