"""Flow: fail over to the standby: pre-flight, whole-system restore, DNS switch, health probe."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefect import flow

from backupflow.config import Settings, current_settings
from backupflow.engines import open_engine
from backupflow.errors import BackupflowError
from backupflow.failover import (
    DnsChange,
    FailoverError,
    checked_settings,
    current_record,
    probe,
    route53_client,
    switch_dns,
)
from backupflow.reporting import artifact_key, iso, local_and_utc
from backupflow.restore_run import plan_restore
from backupflow.storage import open_tier
from flows._notify import notify_on_cancellation, notify_on_failure
from flows._publish import run_logger, run_name, run_timezone, subflow, table_artifact
from flows.restore_system import restore_system
from tasks.steps import PrefectSteps

__all__ = ["FailoverReport", "failover"]


@dataclass
class FailoverReport:
    steps: list[dict[str, Any]] = field(default_factory=list)
    change: DnsChange | None = None
    switched: bool = False


def _record(report: FailoverReport, step: str, clock: float, detail: str, ok: bool = True) -> None:
    report.steps.append(
        {
            "result": "ok" if ok else "FAILED",
            "step": step,
            "time": local_and_utc(datetime.now(UTC), run_timezone()),
            "seconds": round(time.monotonic() - clock, 2),
            "detail": detail,
        }
    )


def _preflight(settings: Settings, replace: bool) -> str:
    """Refuse, with the reason, before anything is touched."""
    tier = open_tier("dr", settings)
    engine = open_engine(settings)
    try:
        loaded = plan_restore(
            engine, [tier], settings.database.name, PrefectSteps(), target_time=None
        )
    except BackupflowError as exc:
        raise FailoverError(f"pre-flight: the DR tier cannot restore the database: {exc}") from exc
    if loaded.problems:
        raise FailoverError(f"pre-flight: the DR tier is not healthy: {'; '.join(loaded.problems)}")
    try:
        engine.check_target(engine.live_target(), replace)
    except BackupflowError as exc:
        raise FailoverError(f"pre-flight: {exc}") from exc
    return (
        f"DR tier reachable; chain of {len(loaded.plan.steps)} backup(s) to "
        f"{iso(loaded.plan.restore_point)} complete; target {engine.live_target()} ready"
    )


@flow(
    name="failover",
    flow_run_name=run_name("failover", at_start=True),
    persist_result=False,
    on_failure=[notify_on_failure("dr_lead")],
    on_cancellation=[notify_on_cancellation("dr_lead")],
)
def failover(replace: bool = False, dry_run: bool = False) -> FailoverReport:
    """Run on the standby: pre-flight, restore everything from the DR tier, switch the DNS
    record to the standby (waiting for INSYNC), then probe the application.

    Args:
        replace: Restore over this host's live database and files (they are kept aside).
            Needed when the standby already has a database.
        dry_run: Run the pre-flight and show the restore plan and the DNS change; change
            nothing.
    """
    settings = current_settings()
    logger = run_logger()
    report = FailoverReport()
    key = artifact_key("failover", settings.database.name)
    try:
        clock = time.monotonic()
        # Settings built in code skip validation: check the record, address and URL again.
        dns = checked_settings(settings.failover)
        _record(report, "pre-flight", clock, _preflight(settings, replace))
        client = route53_client(dns)
        # The record must exist (exact name and type) before anything is restored.
        report.change = current_record(client, dns)
        change = report.change
        plan = (
            f"{change.name} {change.type}: {', '.join(change.before) or '(none)'} -> {change.after}"
        )
        if dry_run:
            clock = time.monotonic()
            subflow(restore_system, source="dr", replace=replace, dry_run=True)
            _record(report, "restore (plan)", clock, "see the restore-system plan")
            _record(report, "DNS (plan)", time.monotonic(), plan)
            return report
        clock = time.monotonic()
        restored = subflow(restore_system, source="dr", replace=replace)
        _record(report, "whole-system restore", clock, f"{len(restored.steps)} steps, verified")
        clock = time.monotonic()
        try:
            change_id = switch_dns(client, change, dns.change_timeout_seconds)
        except Exception as exc:
            raise FailoverError(
                f"the standby is restored but the DNS switch failed ({exc}); DNS still points "
                f"at {', '.join(change.before) or 'nothing'}: fix access to Route 53 and run the "
                "failover again with --replace, or change the record by hand."
            ) from exc
        report.switched = True
        _record(report, "DNS switch", clock, f"{plan} ({change_id} INSYNC)")
        if dns.health_url:
            clock = time.monotonic()
            healthy, answer = probe(
                dns.health_url, dns.health_attempts, dns.health_interval_seconds
            )
            _record(report, "health probe", clock, f"{dns.health_url}: {answer}", healthy)
            if not healthy:
                raise FailoverError(
                    f"traffic now goes to the standby, but {dns.health_url} answers "
                    f"{answer}; check the application (pm2 status, its logs) on the standby."
                )
        return report
    except BackupflowError as exc:
        _record(report, "stopped", time.monotonic(), str(exc), ok=False)
        raise
    finally:
        table_artifact(key=key, table=report.steps, description="Failover steps")
        for step in report.steps:
            logger.info("%s: %s", step["step"], step["detail"])
