"""Steps shared by the backup flows: heal the tiers, store on every tier, finish and prune.

Plain functions that call tasks; each flow file stays one flow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect.artifacts import create_table_artifact

from backupflow.backup import BackupJob
from backupflow.backuplog import BackupLog
from backupflow.config import Settings
from backupflow.errors import BackupflowError, StorageError, TierError
from backupflow.models import Category, Manifest, StoredObject
from backupflow.reporting import artifact_key, iso, manifest_row
from backupflow.storage import Tier
from backupflow.tiers import ReplicationReport
from tasks.backuplog import log_event
from tasks.storage import clean_interrupted, copy_to_tier, prune, replicate, write_manifest

__all__ = ["Stored", "finish_backup", "heal_tiers", "log_backup_failure", "store_on_tiers"]

Logger = logging.Logger | logging.LoggerAdapter[Any]


def heal_tiers(
    tiers: Sequence[Tier], category: Category, name: str, settings: Settings, logger: Logger
) -> ReplicationReport:
    """Copy what earlier runs left missing, then clear left-overs of interrupted runs."""
    healing = replicate(tiers, category, name, settings)
    for tier in tiers:
        try:
            clean_interrupted(tier, category, name, settings.orphan_grace_minutes)
        except BackupflowError as exc:
            logger.warning("could not clean %s: %s", tier.name, exc)
    return healing


def log_backup_failure(
    log: BackupLog,
    job: BackupJob | None,
    error: Exception,
    *,
    category: Category,
    database: str,
    kind: str,
) -> None:
    """One "failed" line in the backup log, whatever step the run stopped at."""
    log_event(
        log,
        "backup",
        "failed",
        id=job.backup_id if job else "-",
        category=category.value,
        kind=job.decision.kind.value if job else kind,
        database=database,
        error=str(error),
    )


@dataclass
class Stored:
    """Where a backup was stored, and why not elsewhere."""

    manifest: Manifest
    stored_on: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)


def store_on_tiers(
    tiers: Sequence[Tier],
    job: BackupJob,
    first_store: Callable[[Tier], tuple[StoredObject, ...]],
    make_manifest: Callable[[tuple[StoredObject, ...]], Manifest],
    settings: Settings,
    logger: Logger,
) -> Stored:
    """Store in the first tier that accepts the backup, copy to the others, manifest last.

    A tier that fails is recorded and the others go on; no tier at all is an error.
    """
    manifest: Manifest | None = None
    holder: Tier | None = None
    stored_on: list[str] = []
    missing: dict[str, str] = {}
    for tier in tiers:
        try:
            if holder is None or manifest is None:
                manifest = make_manifest(first_store(tier))
            else:
                copy_to_tier(manifest, holder, tier, settings.pipeline.chunk_bytes)
            write_manifest(tier, manifest)
        except BackupflowError as exc:
            missing[tier.name] = str(exc)
            logger.error("backup %s could not be stored in %s: %s", job.backup_id, tier.name, exc)
            continue
        holder = holder or tier
        stored_on.append(tier.name)
    if manifest is None or not stored_on:
        raise StorageError(
            f"backup {job.backup_id} could not be stored on any tier: "
            + "; ".join(f"{name}: {why}" for name, why in missing.items())
        )
    return Stored(manifest, stored_on, missing)


def finish_backup(
    stored: Stored,
    *,
    tiers: Sequence[Tier],
    healing: ReplicationReport,
    log: BackupLog,
    settings: Settings,
    message: str,
    logger: Logger,
    extra_failure: str | None = None,
) -> Manifest:
    """Log, publish the artifact, fail on a missing tier, else apply retention."""
    manifest = stored.manifest
    row = manifest_row(manifest)
    log_event(
        log,
        "backup",
        "completed" if not stored.missing and not extra_failure else "incomplete",
        message=f"{message} completed at {iso(manifest.finished_at)}",
        category=manifest.category.value,
        tiers=stored.stored_on,
        missing=stored.missing,
        **row,
    )
    create_table_artifact(
        key=artifact_key("backup", manifest.category.value, manifest.database, manifest.kind.value),
        table=[
            {
                **row,
                "tiers": ", ".join(stored.stored_on),
                "missing": ", ".join(stored.missing) or "-",
                "notes": "; ".join(manifest.notes) or "-",
            }
        ],
        description=f"Latest {manifest.kind.value} backup of {manifest.category.value} "
        f"{manifest.database}",
    )
    logger.info("backup %s stored on %s", manifest.id, ", ".join(stored.stored_on))
    gaps = [f"{name}: {why}" for name, why in stored.missing.items()] + healing.problems
    if gaps:
        raise TierError(
            f"backup {manifest.id} is stored on {', '.join(stored.stored_on)} but a tier is "
            f"missing backups ({'; '.join(gaps)}); the next backup run or `backupflow "
            "replicate` copies them once the tier is reachable; nothing was pruned."
        )
    if extra_failure:
        raise BackupflowError(extra_failure)
    # Retention runs last, and only after a backup that reached every tier.
    for tier in tiers:
        try:
            prune(tier, manifest.category, manifest.database, settings, False, log)
        except BackupflowError as exc:
            logger.error("retention could not run in %s: %s", tier.name, exc)
    return manifest
