"""Flow: verify every site of the fleet, weekly, in one artifact worst first.

Runs on the fleet's queue (``fleet-verify/fleet``) with the fleet file alone: each site's
tiers are read with that site's verify keys (no signing key, no identity: verification checks
what is stored, it decrypts nothing).  For each site it runs the same verification as
``verify-backups`` (authenticity, presence, a rotating sample of full reads, chains,
agreement between tiers, foreign objects, orphans) and writes one row per site to the table
artifact ``fleet-verify``, the sites with findings first.  Fails when any site has one.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow

from backupflow.errors import BackupflowError, ConfigError
from backupflow.fleet import load_fleet
from backupflow.fleetfile import FLEET_ENV_VAR
from backupflow.retention import policy_for
from backupflow.series import Series
from backupflow.storage import open_tiers
from backupflow.verify import (
    DEFAULT_READ_DATA_PERCENT,
    VerificationFailedError,
    sample_window,
    verify,
)
from flows._notify import notify_on_cancellation, notify_on_failure
from flows._publish import run_logger, run_name, table_artifact
from flows.fleet_health import site_series

__all__ = ["fleet_verify"]


@flow(
    name="fleet-verify",
    flow_run_name=run_name("fleet-verify", at_start=True),
    persist_result=False,
    on_failure=[notify_on_failure("backup_administrator")],
    on_cancellation=[notify_on_cancellation("backup_administrator")],
)
def fleet_verify(read_data_percent: float | None = None) -> list[dict[str, Any]]:
    """Verify every backup of every site in every tier; one row per site, worst first.

    Args:
        read_data_percent: Percentage of the backups to read in full (0 to 100). Empty: 25,
            rotating weekly so that four runs read everything.
    """
    path = os.environ.get(FLEET_ENV_VAR)
    if not path:
        raise ConfigError(f"{FLEET_ENV_VAR} is not set on this worker: name the fleet file.")
    fleet = load_fleet(Path(path))
    percent = DEFAULT_READ_DATA_PERCENT if read_data_percent is None else read_data_percent
    now = datetime.now(UTC)
    sample_window(now, percent)  # a bad percentage fails before any request
    rows: list[dict[str, Any]] = []
    for site in fleet.sites:
        settings = site.settings
        series = [Series(category, name) for category, name, _job in site_series(site)[0]]
        try:
            report = verify(
                open_tiers(settings),
                series,
                now=now,
                read_data_percent=percent,
                grace=timedelta(minutes=settings.orphan_grace_minutes),
                policy=partial(policy_for, settings),
                chunk_bytes=settings.pipeline.chunk_bytes,
            )
        except BackupflowError as exc:
            rows.append(
                {
                    "site": site.name,
                    "findings": 1,
                    "requests": 0,
                    "bytes_read": 0,
                    "first_finding": f"could not verify: {exc}",
                }
            )
            continue
        first = report.findings[0] if report.findings else None
        rows.append(
            {
                "site": site.name,
                "findings": len(report.findings),
                "requests": report.requests,
                "bytes_read": report.bytes_read,
                "first_finding": (
                    f"{first.kind} {first.series} in {first.tier}: {first.detail}" if first else "—"
                ),
            }
        )
    rows.sort(key=lambda row: (-int(row["findings"]), row["site"]))
    table_artifact(
        key="fleet-verify",
        table=rows,
        description=f"Verification of {len(rows)} sites at {now:%Y-%m-%d %H:%M} UTC "
        f"({percent:g}% read in full)",
    )
    bad = [row for row in rows if row["findings"]]
    run_logger().info("fleet verify: %d sites, %d with findings", len(rows), len(bad))
    if bad:
        raise VerificationFailedError(
            f"verify found problems on {len(bad)} of {len(rows)} sites: "
            + "; ".join(f"{row['site']} ({row['first_finding']})" for row in bad[:10])
        )
    return rows
