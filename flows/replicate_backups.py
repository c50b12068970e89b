"""Flow: copy every backup to each tier that lacks it (self-healing, idempotent)."""

from __future__ import annotations

from prefect import flow

from backupflow.config import current_settings
from backupflow.errors import TierError
from backupflow.models import Category
from backupflow.storage import open_tiers
from backupflow.tiers import ReplicationReport
from tasks.storage import replicate

__all__ = ["replicate_backups"]


@flow(name="replicate-backups", persist_result=False)
def replicate_backups() -> ReplicationReport:
    """Copy whatever any tier lacks from a tier that has it, verifying every checksum."""
    settings = current_settings()
    report = replicate(
        open_tiers(settings),
        Category.DATABASE,
        settings.database.name,
        settings,
    )
    if report.problems:
        raise TierError(
            f"{len(report.problems)} backup copy(ies) could not be made: "
            + "; ".join(report.problems)
        )
    return report
