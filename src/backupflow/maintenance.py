"""Keeping the tiers in shape around a backup: heal (replicate what a tier lacks, clear
left-overs of interrupted runs), repair a damaged copy a backup met while reading its
parent, and prune (retention).  The backup run calls these, and so
do the replicate and prune flows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

from backupflow import backup, retention, tiers
from backupflow.backuplog import BackupLog
from backupflow.catalog import CatalogEntry
from backupflow.config import Settings
from backupflow.engines.registry import ENGINES
from backupflow.errors import (
    BackupflowError,
    IntegrityError,
    ObjectNotFoundError,
)
from backupflow.filesets import is_content_addressed
from backupflow.filesets.contents import sweep_content
from backupflow.models import Category, Manifest
from backupflow.pipeline import verify_stored
from backupflow.steps import CLEAN, REPLICATE, Logger, Steps
from backupflow.storage import Tier

__all__ = ["heal_tiers", "prune_series", "repair_copy", "repair_damaged", "replicate_series"]


def replicate_series(
    all_tiers: Sequence[Tier], category: Category, name: str, settings: Settings, logger: Logger
) -> tiers.ReplicationReport:
    """Copy whatever any tier lacks from a tier that has it (idempotent, verified), but only
    what that tier's retention keeps."""
    report = tiers.replicate(
        all_tiers,
        category.value,
        name,
        chunk_bytes=settings.pipeline.chunk_bytes,
        policies={t.name: retention.policy_for(settings, t.name, category) for t in all_tiers},
    )
    for backup_id, source, dest in report.copied:
        logger.warning("replicated backup %s from %s to %s", backup_id, source, dest)
    for problem in report.problems:
        logger.error(problem)
    return report


def heal_tiers(
    all_tiers: Sequence[Tier], category: Category, name: str, settings: Settings, steps: Steps
) -> tiers.ReplicationReport:
    """Copy what earlier runs left missing, then clear left-overs of interrupted runs."""
    healing = steps.run(
        REPLICATE,
        f"replicate-{name}",
        lambda: replicate_series(all_tiers, category, name, settings, steps.logger),
    )
    grace = timedelta(minutes=settings.orphan_grace_minutes)
    for tier in all_tiers:
        try:
            steps.run(
                CLEAN,
                f"clean-interrupted-{tier.name}",
                partial(_clean, tier, category, name, grace, steps.logger),
            )
        except BackupflowError as exc:
            steps.logger.warning("could not clean %s: %s", tier.name, exc)
    return healing


def _clean(
    tier: Tier, category: Category, name: str, grace: timedelta, logger: Logger
) -> list[str]:
    removed = backup.clean_interrupted(
        tier.storage, category, name, now=datetime.now(UTC), grace=grace
    )
    if removed:
        logger.warning(
            "removed %d left-over object(s) of interrupted backups from %s: %s",
            len(removed),
            tier.storage.name,
            ", ".join(removed),
        )
    return removed


def repair_damaged(
    manifest: Manifest, good: Tier, bad: Tier, *, settings: Settings, logger: Logger
) -> None:
    """Repair ``bad``'s copy of a backup from ``good`` (:func:`repair_copy`), logging what
    was repaired, or why it could not be."""
    try:
        repaired = repair_copy(manifest, good, bad, chunk_bytes=settings.pipeline.chunk_bytes)
    except BackupflowError as exc:
        logger.error(
            "the damaged copy of backup %s in %s could not be repaired from %s: %s",
            manifest.id,
            bad.name,
            good.name,
            exc,
        )
        return
    if repaired:
        logger.warning(
            "repaired the damaged copy of backup %s in %s from %s: %s",
            manifest.id,
            bad.name,
            good.name,
            ", ".join(repaired),
        )


def repair_copy(manifest: Manifest, good: Tier, bad: Tier, *, chunk_bytes: int) -> list[str]:
    """Replace every object of ``manifest`` that is missing in ``bad`` or fails its
    SHA-256 there with the copy from ``good`` (verified on the way); returns their keys.

    An object is deleted only after its checksum failed, and an intact one is never
    touched; on a write-once tier the delete of a locked object fails with
    :class:`ObjectLockedError`, and the damaged copy stays (the restore skips it).
    """
    repaired: list[str] = []
    for record in manifest.objects:
        try:
            verify_stored(bad.storage, record, chunk_bytes=chunk_bytes)
            continue
        except IntegrityError:
            bad.storage.delete(record.key)
        except ObjectNotFoundError:
            pass
        tiers.copy_object(
            good.storage, bad.storage, record, chunk_bytes=chunk_bytes, write_once=bad.write_once
        )
        repaired.append(record.key)
    return repaired


def prune_series(
    tier: Tier,
    category: Category,
    name: str,
    settings: Settings,
    logger: Logger,
    *,
    dry_run: bool = False,
    log: BackupLog | None = None,
) -> tuple[retention.RetentionPlan[CatalogEntry], retention.PruneReport | None]:
    """Apply the tier's retention to one series (a dry run only plans), then remove
    left-overs of interrupted runs, and shared content no kept backup references in two
    phases (condemned by one prune, deleted by one a grace period later:
    :func:`~backupflow.filesets.contents.sweep_content`)."""
    policy = retention.policy_for(settings, tier.name, category)
    now = datetime.now(UTC)
    plan, report = retention.prune_tier(tier, category, name, policy, now=now, dry_run=dry_run)
    logger.info(
        "retention in %s: keep %d, delete %d%s",
        tier.name,
        len(plan.kept),
        len(plan.deletions),
        " (dry run)" if dry_run else "",
    )
    if report is None:
        return plan, None
    for backup_id in report.deleted:
        logger.info("deleted backup %s from %s", backup_id, tier.name)
    for backup_id in report.locked:
        logger.info("kept backup %s in %s: still under Object Lock", backup_id, tier.name)
    for failure in report.failed:
        logger.error("could not delete from %s: %s", tier.name, failure)
    grace = timedelta(minutes=settings.orphan_grace_minutes)
    orphans = backup.clean_interrupted(tier.storage, category, name, now=now, grace=grace)
    if is_content_addressed(name):
        swept = sweep_content(
            tier.storage, category, name, now=now, grace=grace, keyring=tier.keyring
        )
        if swept.condemned:
            logger.info(
                "condemned %d shared content object(s) in %s that no backup lists; a prune at "
                "least %s later deletes those still unlisted",
                len(swept.condemned),
                tier.name,
                grace,
            )
        orphans += swept.removed
    for spec in ENGINES.values():  # what an engine keeps beside its backups (archived WAL)
        if spec.remove_loose is not None:
            orphans += spec.remove_loose(tier, category, name, now, grace)
    if log is not None and (report.deleted or report.failed or orphans):
        log.append(
            "prune",
            status="failed" if report.failed else "completed",
            tier=tier.name,
            series=f"{category.value}/{name}",
            deleted=report.deleted,
            locked=report.locked,
            failed=report.failed,
            leftovers_removed=orphans,
        )
    return plan, report
