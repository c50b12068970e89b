"""Flow: test-restore the latest backup of each database, as soon as a full backup completes.

In a fleet the bootstrap's automation ``backupflow-restore-test-<site>`` starts this flow's
deployment ``restore-test/<site>`` whenever ``backup-database/<site>-full`` completes a run
(docs/fleet.md); it can also be run by hand.  It restores the database's latest state from
one tier into a new scratch database, runs the engine's checks (integrity, smoke queries),
drops the scratch copy, and puts a row first in the site's history artifact
``<site>-restore-test`` (``restore-test`` for a single installation): the result, the RTO
(run start to restored and verified), the chain's stored size and the throughput it
implies, which fleet health uses to predict each site's restore time.  A failed restore
test fails the run, which tells the backup administrator like a failed backup.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from backupflow.config import current_settings
from backupflow.errors import BackupflowError
from backupflow.models import TierName
from backupflow.parameters import check_database_parameter
from backupflow.reporting import EMPTY, local_and_utc, short_chain
from backupflow.series import databases, for_database
from flows._notify import notify_on_cancellation, notify_on_failure
from flows._publish import prepend_history, run_logger, run_name, run_started, short_reason
from flows.dr_drill import drill_one

__all__ = ["HISTORY_KEY", "RestoreTestError", "restore_test"]

HISTORY_KEY = "restore-test"
PASSED, FAILED = "passed", "failed"


class RestoreTestError(BackupflowError):
    """A restore test did not restore, or the restored database failed its checks."""


def _row(**values: Any) -> dict[str, Any]:
    return {
        "result": values.pop("result"),
        "reason": values.pop("reason", EMPTY),
        "database": values.pop("database"),
        "rto_seconds": values.pop("rto_seconds", EMPTY),
        "chain_bytes": values.pop("chain_bytes", EMPTY),
        "throughput_mb_s": values.pop("throughput_mb_s", EMPTY),
        **values,
    }


@flow(
    name="restore-test",
    flow_run_name=run_name("restore-test", "source=primary"),
    persist_result=False,
    on_failure=[notify_on_failure("backup_administrator")],
    on_cancellation=[notify_on_cancellation("backup_administrator")],
)
def restore_test(source: TierName = "primary", database: str | None = None) -> list[dict[str, Any]]:
    """Restore the latest backup of each database into a scratch database, check it, drop
    it, and record the RTO in the site's restore-test history.

    Args:
        source: The tier to restore from (primary, secondary or dr).
        database: Test only this database. Empty: every database the settings name.
    """
    settings = current_settings()
    checked = check_database_parameter(database)
    names = [checked] if checked is not None else databases(settings)[0]
    started = run_started(datetime.now(UTC))
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for name in names:
        one = for_database(settings, name)
        try:
            report = drill_one(one, source, None, None, False, started)
        except Exception as exc:
            row = _row(
                result=FAILED,
                reason=short_reason(exc),
                database=name,
                tier=source,
                started=local_and_utc(started, settings.timezone),
            )
            failures.append(f"{name}: {exc}")
        else:
            seconds = (report.result.verified - started).total_seconds()
            rate = report.chain_bytes / seconds / 1e6 if seconds > 0 else 0.0
            row = _row(
                result=PASSED,
                database=name,
                rto_seconds=round(seconds, 1),
                chain_bytes=report.chain_bytes,
                throughput_mb_s=round(rate, 3),
                tier=source,
                restore_point=local_and_utc(report.result.restore_point, settings.timezone),
                started=local_and_utc(started, settings.timezone),
                tables_checked=len(report.smoke),
                chain=short_chain(report.chain),
            )
            run_logger().info(
                "restore test of %s passed: RTO %.1f s for %s bytes",
                name,
                seconds,
                report.chain_bytes,
            )
        prepend_history(HISTORY_KEY, row, f"Restore tests of site {settings.site or 'default'}")
        rows.append(row)
        started = datetime.now(UTC)
    if failures:
        raise RestoreTestError(
            f"{len(failures)} of {len(names)} restore tests failed: " + "; ".join(failures)
        )
    return rows
