"""Flow: sign the unsigned backups an earlier backupflow wrote, after reading them in full."""

from __future__ import annotations

from prefect import flow

from backupflow.adopt import AdoptPlan, adopt_series, plan_adoption
from backupflow.backuplog import BackupLog
from backupflow.config import current_settings
from backupflow.errors import CatalogError, ConfigError
from backupflow.keys import load_keyring
from backupflow.models import Category, Manifest
from backupflow.reporting import iso
from backupflow.storage import open_tiers
from flows._publish import run_logger, run_name
from tasks.backuplog import log_event

__all__ = ["adopt_backups"]


@flow(
    name="adopt-backups",
    flow_run_name=run_name("adopt-backups", "category=database", "name", at_start=True),
    persist_result=False,
)
def adopt_backups(
    category: str = "database", name: str | None = None, confirm: str = ""
) -> AdoptPlan:
    """Adopt the unsigned backups an earlier backupflow wrote, once.  Without ``confirm``, a
    dry run: list the unsigned manifests that predate the repository's first key record,
    with the digest of that list.  With the digest, verify every object of each (a full
    read, SHA-256) and sign its manifest, recording the adoption; each is logged.

    Args:
        category: The series' category: database, or a file set (config, uploads, logs).
        name: The series' name. Empty: the configured database, or the file set of that
            category.
        confirm: The digest a dry run printed for the exact list to adopt; empty for a dry run.
    """
    settings = current_settings()
    logger = run_logger()
    try:
        series = Category(category)
    except ValueError:
        raise ConfigError(
            f"unknown category {category!r}; use one of {', '.join(c.value for c in Category)}."
        ) from None
    name = name or (settings.database.name if series is Category.DATABASE else series.value)
    keyring = load_keyring(settings.crypto)
    confirm = confirm.strip().lower()
    if not confirm:
        plan = plan_adoption(open_tiers(settings), series.value, name, keyring)
        for line in plan.lines:
            logger.info("would adopt %s", line)
        logger.info(
            "dry run: %d unsigned backup(s) of %s qualify; digest %s",
            len(plan.candidates),
            plan.series,
            plan.digest,
        )
        return plan
    log = BackupLog(settings.backup_log)
    log.check_writable()
    signer = keyring.require_signer()

    def adopted(tier: str, manifest: Manifest) -> None:
        logger.warning(
            "adopted unsigned backup %s of %s/%s in %s: every object read and matched its "
            "SHA-256; signed with key %s",
            manifest.id,
            series.value,
            name,
            tier,
            signer.key_id,
        )
        log_event(
            log,
            "adopt",
            "completed",
            id=manifest.id,
            category=series.value,
            database=name,
            tier=tier,
            restore_point=iso(manifest.restore_point),
            signed_by=signer.key_id,
        )

    plan = adopt_series(
        open_tiers(settings),
        series.value,
        name,
        keyring,
        confirm=confirm,
        chunk_bytes=settings.pipeline.chunk_bytes,
        on_adopted=adopted,
    )
    problems = [p for r in plan.reports for p in r.problems]
    for problem in problems:
        logger.error(problem)
    if problems:
        raise CatalogError(
            f"{len(problems)} unsigned backup(s) of {series.value}/{name} were not adopted: "
            + "; ".join(problems)
        )
    return plan
