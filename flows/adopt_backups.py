"""Flow: sign the unsigned backups an earlier backupflow wrote, after reading them in full."""

from __future__ import annotations

from prefect import flow, get_run_logger

from backupflow.adopt import AdoptReport, adopt_series
from backupflow.backuplog import BackupLog
from backupflow.config import current_settings
from backupflow.errors import CatalogError, ConfigError
from backupflow.keys import load_keyring
from backupflow.models import Category, Manifest
from backupflow.reporting import iso
from backupflow.storage import open_tiers
from flows._publish import run_name
from tasks.backuplog import log_event

__all__ = ["adopt_backups"]


@flow(
    name="adopt-backups",
    flow_run_name=run_name("adopt-backups", "category=database", "name", at_start=True),
    persist_result=False,
)
def adopt_backups(category: str = "database", name: str | None = None) -> list[AdoptReport]:
    """Verify every object of every unsigned backup of one series (a full read, SHA-256),
    then sign its manifest once; each adopted backup is logged.  ``name`` defaults to the
    configured database, or the file set of that category.

    Args:
        category: The series' category: database, or a file set (config, uploads, logs).
        name: The series' name. Empty: the configured database, or the file set of that
            category.
    """
    settings = current_settings()
    logger = get_run_logger()
    try:
        series = Category(category)
    except ValueError:
        raise ConfigError(
            f"unknown category {category!r}; use one of {', '.join(c.value for c in Category)}."
        ) from None
    name = name or (settings.database.name if series is Category.DATABASE else series.value)
    log = BackupLog(settings.backup_log)
    log.check_writable()
    keyring = load_keyring(settings.crypto)
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

    reports = adopt_series(
        open_tiers(settings),
        series.value,
        name,
        keyring,
        chunk_bytes=settings.pipeline.chunk_bytes,
        on_adopted=adopted,
    )
    problems = [p for r in reports for p in r.problems]
    for problem in problems:
        logger.error(problem)
    if problems:
        raise CatalogError(
            f"{len(problems)} unsigned backup(s) of {series.value}/{name} were not adopted: "
            + "; ".join(problems)
        )
    return reports
