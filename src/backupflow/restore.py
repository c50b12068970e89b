"""Restore operations: plan from the catalog, rebuild in a scratch file, then install.

Nothing live is touched until the rebuilt database has passed every check; an existing
target is only replaced with an explicit ``replace`` and is then kept aside.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backupflow.backup import source_of
from backupflow.catalog import Catalog
from backupflow.engines.base import Engine
from backupflow.errors import RestoreTargetError
from backupflow.models import Category
from backupflow.planning import RestorePlan, plan_restore
from backupflow.storage.base import Storage

__all__ = ["RestoreOutcome", "execute_restore", "load_plan", "resolve_target"]


@dataclass(frozen=True)
class RestoreOutcome:
    """What a restore did."""

    plan: RestorePlan
    target: Path
    kept_aside: tuple[Path, ...]
    started_at: datetime
    finished_at: datetime

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


def load_plan(
    catalog: Catalog, database: str, target_time: datetime | None, now: datetime
) -> tuple[RestorePlan, tuple[str, ...]]:
    """Plan a restore from one tier; also returns the manifests that could not be read."""
    scan = catalog.scan(Category.DATABASE, database)
    plan = plan_restore(scan.manifests, database=database, target=target_time, now=now)
    return plan, scan.problems


def resolve_target(engine: Engine, plan: RestorePlan, into: Path | None, replace: bool) -> Path:
    """The path the restore writes; refuses an existing path unless ``replace``."""
    if into is not None:
        target = into
    elif replace:
        target = engine.live_target()
    else:
        target = engine.default_target(plan.restore_point)
    if target.is_dir():
        raise RestoreTargetError(f"{target} is a folder; give the path of a database file.")
    if target.exists() and not replace:
        raise RestoreTargetError(
            f"{target} already exists; pass --replace to replace it (the current file is kept "
            "aside) or choose another path with --into."
        )
    return target


def execute_restore(
    engine: Engine,
    storage: Storage,
    plan: RestorePlan,
    target: Path,
    *,
    replace: bool,
    chunk_bytes: int,
    progress: Callable[[int], None] | None = None,
) -> RestoreOutcome:
    """Rebuild the plan's chain next to ``target``, verify it, then move it into place."""
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".{target.name}.restoring-{secrets.token_hex(4)}"
    chain = [
        source_of(storage, manifest, chunk_bytes=chunk_bytes, progress=progress)
        for manifest in plan.manifests
    ]
    try:
        engine.restore(chain, scratch)
        installed = engine.install(scratch, target, replace=replace, stamp=stamp)
    finally:
        scratch.unlink(missing_ok=True)
    return RestoreOutcome(
        plan=plan,
        target=installed.target,
        kept_aside=installed.kept_aside,
        started_at=started,
        finished_at=datetime.now(UTC),
    )
