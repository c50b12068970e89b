"""Flow: apply retention to every tier (or the ones named), or only plan it (dry run)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from prefect import flow

from backupflow.backuplog import BackupLog
from backupflow.catalog import CatalogEntry
from backupflow.config import current_settings
from backupflow.errors import StorageError
from backupflow.maintenance import prune_series
from backupflow.models import TIER_NAMES, TierName
from backupflow.reporting import artifact_key, iso
from backupflow.retention import PruneReport, RetentionPlan
from backupflow.series import all_series
from backupflow.steps import PRUNE
from backupflow.storage import open_tiers
from flows._publish import run_name, table_artifact
from flows._slots import slot
from tasks.steps import PrefectSteps

__all__ = ["TierPrune", "prune_backups"]

TierChoice = TierName


@dataclass(frozen=True)
class TierPrune:
    """One tier's retention plan for one series and, unless a dry run, what was deleted."""

    tier: str
    series: str
    plan: RetentionPlan[CatalogEntry]
    report: PruneReport | None


@flow(
    name="prune-backups",
    flow_run_name=run_name("prune-backups", "tiers", at_start=True),
    persist_result=False,
)
def prune_backups(tiers: list[TierChoice] | None = None, dry_run: bool = False) -> list[TierPrune]:
    """Apply retention (docs/operations.md) to every series (each database and file set)
    in the named tiers, default all of them.

    Args:
        tiers: The tiers to prune (primary, secondary, dr). Empty: all of them.
        dry_run: Only list what retention would delete, with the reason for each backup;
            delete nothing.
    """
    settings = current_settings()
    if not dry_run:
        # Never prune (and clean up left-overs) while a database backup is writing its data.
        with slot(settings, "database-backup"):
            return _prune(tiers, dry_run)
    return _prune(tiers, dry_run)


def _prune(tiers: list[TierChoice] | None, dry_run: bool) -> list[TierPrune]:
    settings = current_settings()
    chosen = tuple(tiers) if tiers else TIER_NAMES
    log = BackupLog(settings.backup_log)
    results = []
    steps = PrefectSteps()
    for tier in open_tiers(settings, chosen):
        for series in all_series(settings):
            plan, report = steps.run(
                PRUNE,
                f"prune-{series.name}-{tier.name}",
                partial(
                    prune_series,
                    tier,
                    series.category,
                    series.name,
                    settings,
                    steps.logger,
                    dry_run=dry_run,
                    log=log,
                ),
            )
            results.append(TierPrune(tier.name, series.name, plan, report))
            table_artifact(
                key=artifact_key("retention", series.name, tier.name),
                table=[
                    {
                        "id": d.backup.id,
                        "kind": d.backup.kind.value,
                        "restore_point": iso(d.backup.restore_point),
                        "decision": "keep" if d.keep else "delete",
                        "reason": d.reason,
                    }
                    for d in plan.decisions
                ],
                description=f"Retention plan of {series.name} in {tier.name}"
                + (" (dry run)" if dry_run else ""),
            )
    failed = [f for r in results if r.report for f in r.report.failed]
    if failed:
        raise StorageError(f"some backups could not be deleted: {'; '.join(failed)}")
    return results
