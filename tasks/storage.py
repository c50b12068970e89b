"""Tasks over storage tiers: clean-up, compress + checksum + store, copy, manifest, replicate."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from prefect import get_run_logger, task

from backupflow import backup, retention, tiers
from backupflow.backuplog import BackupLog
from backupflow.catalog import Catalog, CatalogEntry
from backupflow.codecs import Codec
from backupflow.config import FileSetSettings, Settings
from backupflow.engines.base import Dump
from backupflow.filesets import ScanReport, is_content_addressed
from backupflow.filesets import contents as filebackup
from backupflow.models import Category, Manifest, StoredObject
from backupflow.progress import Progress
from backupflow.storage import Tier
from tasks._options import SIDE_EFFECTS, retry_if_retryable

__all__ = [
    "clean_interrupted",
    "compress_and_store",
    "copy_to_tier",
    "prune",
    "replicate",
    "store_contents",
    "write_manifest",
]


@task(name="clean-interrupted", task_run_name="clean-interrupted-{tier.name}", **SIDE_EFFECTS)
def clean_interrupted(tier: Tier, category: Category, name: str, grace_minutes: int) -> list[str]:
    """Remove left-overs of interrupted backups (temporary files, data without manifest)."""
    removed = backup.clean_interrupted(
        tier.storage, category, name, now=datetime.now(UTC), grace=timedelta(minutes=grace_minutes)
    )
    if removed:
        get_run_logger().warning(
            "removed %d left-over object(s) of interrupted backups from %s: %s",
            len(removed),
            tier.storage.name,
            ", ".join(removed),
        )
    return removed


@task(name="replicate", task_run_name="replicate-{name}", **SIDE_EFFECTS)
def replicate(
    all_tiers: Sequence[Tier], category: Category, name: str, settings: Settings
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
    logger = get_run_logger()
    for backup_id, source, dest in report.copied:
        logger.warning("replicated backup %s from %s to %s", backup_id, source, dest)
    for problem in report.problems:
        logger.error(problem)
    return report


@task(
    name="compress-and-store",
    task_run_name="compress-and-store-{job.backup_id}-{tier.name}",
    retries=2,
    retry_delay_seconds=[1, 4],
    retry_condition_fn=retry_if_retryable,
    **SIDE_EFFECTS,
)
def compress_and_store(
    tier: Tier,
    job: backup.BackupJob,
    dump: Dump,
    codec: Codec,
    settings: Settings,
    progress: Progress | None = None,
) -> tuple[StoredObject, ...]:
    """Compress, hash and store every file of a dump in one tier, verified."""
    objects = backup.store_dump(
        tier.storage, job, dump, codec, settings, progress, keyring=tier.keyring
    )
    for obj in objects:
        get_run_logger().info(
            "stored %s in %s: %d -> %d bytes (%s), sha256 %s",
            obj.key,
            tier.name,
            obj.raw_size,
            obj.size,
            obj.codec,
            obj.sha256[:16],
        )
    return objects


@task(
    name="copy-to-tier",
    task_run_name="copy-{manifest.id}-{source.name}-to-{dest.name}",
    retries=2,
    retry_delay_seconds=[1, 4],
    retry_condition_fn=retry_if_retryable,
    **SIDE_EFFECTS,
)
def copy_to_tier(manifest: Manifest, source: Tier, dest: Tier, chunk_bytes: int) -> None:
    """Upload (secondary) or replicate (DR) a stored backup, verifying every object."""
    for record in manifest.objects:
        tiers.copy_object(
            source.storage,
            dest.storage,
            record,
            chunk_bytes=chunk_bytes,
            write_once=dest.write_once,
        )
    get_run_logger().info("copied backup %s from %s to %s", manifest.id, source.name, dest.name)


@task(
    name="write-manifest", task_run_name="write-manifest-{manifest.id}-{tier.name}", **SIDE_EFFECTS
)
def write_manifest(tier: Tier, manifest: Manifest) -> str:
    """Write the manifest last: only now is the backup listed in this tier."""
    key = Catalog(tier.storage, tier.keyring).write(manifest)
    get_run_logger().info("backup %s recorded in %s", manifest.id, tier.name)
    return key


@task(name="prune", task_run_name="prune-{name}-{tier.name}", **SIDE_EFFECTS)
def prune(
    tier: Tier,
    category: Category,
    name: str,
    settings: Settings,
    dry_run: bool = False,
    log: BackupLog | None = None,
) -> tuple[retention.RetentionPlan[CatalogEntry], retention.PruneReport | None]:
    """Apply the tier's retention to one series (a dry run only plans)."""
    policy = retention.policy_for(settings, tier.name, category)
    plan, report = retention.prune_tier(
        tier, category, name, policy, now=datetime.now(UTC), dry_run=dry_run
    )
    logger = get_run_logger()
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
    orphans = backup.clean_interrupted(
        tier.storage, category, name, now=datetime.now(UTC), grace=grace
    )
    if is_content_addressed(name):
        orphans += filebackup.remove_unreferenced_content(
            tier.storage, category, name, now=datetime.now(UTC), grace=grace, keyring=tier.keyring
        )
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


@task(
    name="store-contents",
    task_run_name="store-contents-{job.backup_id}-{tier.name}",
    **SIDE_EFFECTS,
)
def store_contents(
    tier: Tier,
    job: backup.BackupJob,
    dump: Dump,
    file_set: FileSetSettings,
    codec: Codec,
    report: ScanReport,
    previous: Manifest | None,
    settings: Settings,
    progress: Progress | None = None,
) -> tuple[StoredObject, ...]:
    """Store each distinct file content of a content-addressed set once in this tier."""
    members_file = next(f.path for f in dump.files if f.role == "members")
    records = filebackup.store_contents(
        tier.storage,
        job,
        members_file,
        file_set,
        codec,
        report,
        previous=previous,
        scratch=job.staging(settings) / "content",
        chunk_bytes=settings.pipeline.chunk_bytes,
        progress=progress,
        keyring=tier.keyring,
    )
    reused = {o.key for o in previous.objects} if previous else set()
    new = [r for r in records if r.key not in reused]
    get_run_logger().info(
        "%s: %d distinct contents, %d new (%d bytes stored), %d already in the tier",
        tier.name,
        len(records),
        len(new),
        sum(r.size for r in new),
        len(records) - len(new),
    )
    return records
