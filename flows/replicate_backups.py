"""Flow: copy every backup to each tier that lacks it (self-healing, idempotent)."""

from __future__ import annotations

from functools import partial

from prefect import flow

from backupflow.config import current_settings
from backupflow.errors import TierError
from backupflow.maintenance import replicate_series
from backupflow.series import all_series
from backupflow.steps import REPLICATE
from backupflow.storage import open_tiers
from backupflow.tiers import ReplicationReport
from flows._publish import run_name
from tasks.steps import PrefectSteps

__all__ = ["replicate_backups"]


@flow(
    name="replicate-backups",
    flow_run_name=run_name("replicate-backups", at_start=True),
    persist_result=False,
)
def replicate_backups() -> ReplicationReport:
    """Copy whatever any tier lacks from a tier that has it, verifying every checksum, for
    every series (each database and file set)."""
    settings = current_settings()
    tiers = open_tiers(settings)
    steps = PrefectSteps()
    report = ReplicationReport()
    for series in all_series(settings):
        one = steps.run(
            REPLICATE,
            f"replicate-{series.name}",
            partial(replicate_series, tiers, series.category, series.name, settings, steps.logger),
        )
        report.copied += one.copied
        report.problems += one.problems
    if report.problems:
        raise TierError(
            f"{len(report.problems)} backup copy(ies) could not be made: "
            + "; ".join(report.problems)
        )
    return report
