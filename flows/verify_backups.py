"""Flow: verify every tier (authenticity, presence, a rotating sample of full reads, chains,
agreement between tiers, foreign objects, orphans, unfinished uploads); weekly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow

from backupflow.config import current_settings
from backupflow.reporting import artifact_key
from backupflow.retention import policy_for
from backupflow.series import all_series
from backupflow.storage import open_tiers
from backupflow.verify import (
    DEFAULT_READ_DATA_PERCENT,
    VerificationFailedError,
    VerifyReport,
    sample_window,
    verify,
)
from flows._notify import notify_on_cancellation, notify_on_failure
from flows._publish import run_logger, run_name, table_artifact

__all__ = ["verify_backups"]


@flow(
    name="verify-backups",
    flow_run_name=run_name("verify-backups", at_start=True),
    persist_result=False,
    on_failure=[notify_on_failure("backup_administrator")],
    on_cancellation=[notify_on_cancellation("backup_administrator")],
)
def verify_backups(read_data_percent: float | None = None) -> VerifyReport:
    """Check every backup in every tier; read ``read_data_percent`` of them in full (default
    25%, rotating weekly so that four weekly runs read everything).  Fails on any finding.

    Args:
        read_data_percent: Percentage of the backups to read in full and check against
            their SHA-256 (0 to 100). Empty: 25, rotating weekly so that four runs read
            everything.
    """
    settings = current_settings()
    percent = DEFAULT_READ_DATA_PERCENT if read_data_percent is None else read_data_percent
    now = datetime.now(UTC)
    sample_window(now, percent)  # a bad percentage fails before any request
    series = all_series(settings)
    report = verify(
        open_tiers(settings),
        series,
        now=now,
        read_data_percent=percent,
        grace=timedelta(minutes=settings.orphan_grace_minutes),
        policy=lambda tier, category: policy_for(settings, tier, category),
        chunk_bytes=settings.pipeline.chunk_bytes,
    )
    logger = run_logger()
    for one in series:
        table_artifact(
            key=artifact_key("verify", one.name),
            table=report.table(one.label),
            description=f"Verification of {one.label} at {now:%Y-%m-%d %H:%M} UTC "
            f"({percent:g}% read in full, {report.requests} requests)",
        )
    for finding in report.findings:
        logger.error("%s %s in %s: %s", finding.kind, finding.series, finding.tier, finding.detail)
    logger.info(
        "verify: %d request(s), %d byte(s) read, %d finding(s)",
        report.requests,
        report.bytes_read,
        len(report.findings),
    )
    if report.findings:
        kinds = sorted({f.kind for f in report.findings})
        raise VerificationFailedError(
            f"verify found {len(report.findings)} problem(s) ({', '.join(kinds)}); "
            "see the verify-* artifacts."
        )
    return report
