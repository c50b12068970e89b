"""Flow: the health of every site of the fleet, worst first, in one artifact.

Runs on the fleet's own queue (``fleet-health/fleet``, every 15 minutes) on a worker that
reads every site's tiers with each site's verify keys from the fleet file, and no signing
key.  Per site and tier it costs two storage requests per series
(:mod:`backupflow.fleet_health`); from the Prefect API it reads, once for the whole fleet,
the work queues (is a worker polling each site's queue?), the late runs, and every site's
latest restore test.  The table artifact ``fleet-health`` lists the sites worst first with
their recovery point now and predicted restore time; the run fails (and tells the DR lead)
when any site needs attention.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow

from backupflow.config import Settings
from backupflow.errors import BackupflowError, ConfigError
from backupflow.filesets import FILE_SETS
from backupflow.fleet import Fleet, Site, load_fleet
from backupflow.fleet_health import (
    SiteFacts,
    SiteHealth,
    SiteState,
    assess_site,
    survey_series,
)
from backupflow.fleetfile import FLEET_ENV_VAR
from backupflow.keys import load_keyring
from backupflow.models import TIER_NAMES, Category
from backupflow.objectives import schedule_interval
from backupflow.reporting import local_and_utc
from backupflow.storage import Tier, make_s3_client, open_tier
from flows._notify import notify_on_cancellation, notify_on_failure
from flows._publish import in_run, markdown_artifact, run_logger, table_artifact

__all__ = ["FleetHealthError", "fleet_health", "fleet_rows", "site_series"]

_READERS = 8
#: A worker that has not polled its queue for this long is taken as gone.
POLL_ALLOWED = timedelta(minutes=2)


class FleetHealthError(BackupflowError):
    """A site of the fleet needs attention: a tier, its worker, late runs, stale backups,
    or a failed restore test."""


def site_series(site: Site) -> tuple[list[tuple[Category, str, str]], list[str]]:
    """(category, name, schedule job) of each series of ``site``, and its database labels."""
    db = site.settings.database
    names = [n for n in db.databases if n != "*"] or [db.name]
    found = [(Category.DATABASE, name, "database_log") for name in names]
    found += [(FILE_SETS[name], name, name) for name in site.file_sets]
    return found, [f"{Category.DATABASE.value}/{name}" for name in names]


def _facts(fleet: Fleet) -> dict[str, SiteFacts]:
    """What the Prefect API says of each site: three reads for the whole fleet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactCollectionFilter,
        ArtifactCollectionFilterKey,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )

    if not in_run():
        return {}
    keys = [f"{site.name}-restore-test" for site in fleet.sites]
    with get_client(sync_client=True) as client:
        queues = {
            q.name: q.last_polled
            for q in _pages(
                lambda offset: client.read_work_queues(
                    work_pool_name=fleet.pool, limit=_PAGE, offset=offset
                )
            )
        }
        state = FlowRunFilterState(name=FlowRunFilterStateName(any_=["Late"]))
        late = _pages(
            lambda offset: client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=state), limit=_PAGE, offset=offset
            )
        )
        tests = [
            artifact
            for start in range(0, len(keys), _PAGE)
            for artifact in client.read_latest_artifacts(
                artifact_filter=ArtifactCollectionFilter(
                    key=ArtifactCollectionFilterKey(any_=keys[start : start + _PAGE])
                ),
                limit=_PAGE,
            )
        ]
    late_by_site: dict[str, int] = {}
    for run in late:
        for tag in run.tags or []:
            if tag.startswith("site:"):
                late_by_site[tag[5:]] = late_by_site.get(tag[5:], 0) + 1
    latest: dict[str, dict[str, Any]] = {}
    for artifact in tests:
        try:
            rows = json.loads(str(artifact.data)[: 4 << 20])
        except (ValueError, RecursionError):
            continue
        if isinstance(rows, list) and rows and isinstance(rows[0], dict):
            latest[str(artifact.key).removesuffix("-restore-test")] = rows[0]
    facts: dict[str, SiteFacts] = {}
    for site in fleet.sites:
        row = latest.get(site.name, {})
        facts[site.name] = SiteFacts(
            late_runs=late_by_site.get(site.name, 0),
            worker_polled=queues.get(site.queue),
            test_result=str(row["result"]) if "result" in row else None,
            test_bytes=_number(row.get("chain_bytes")),
            test_seconds=_number(row.get("rto_seconds")),
            test_when=str(row.get("started", ""))[:80],  # a row is input: bounded
        )
    return facts


_PAGE = 200  # the most the API returns at once


def _pages(read: Callable[[int], list[Any]]) -> list[Any]:
    """Every item of a paged API read."""
    found: list[Any] = []
    while True:
        page = read(len(found))
        found += page
        if len(page) < _PAGE:
            return found


def _number(value: object) -> Any:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _open_tiers(settings: Settings, clients: dict[tuple[Any, ...], Any]) -> list[Tier]:
    """The site's enabled tiers, sharing one S3 client per endpoint and credentials across
    sites (a client costs more to make than the two requests it makes here)."""
    keyring = load_keyring(settings.crypto)
    tiers = []
    for name in TIER_NAMES:
        tier = getattr(settings.repository, name)
        if not tier.enabled:
            continue
        client = None
        if tier.is_s3:
            key = (tier.region, tier.endpoint_url, tier.credentials_block, tier.addressing_style)
            with _CLIENTS_LOCK:
                if key not in clients:
                    clients[key] = make_s3_client(tier, settings.repository)
                client = clients[key]
        tiers.append(open_tier(name, settings, client=client, keyring=keyring))
    return tiers


_CLIENTS_LOCK = threading.Lock()


def _site_health(
    site: Site, facts: SiteFacts, now: datetime, clients: dict[tuple[Any, ...], Any]
) -> tuple[SiteHealth, int]:
    """One site's row and the storage requests it took."""
    settings = site.settings
    grace = timedelta(minutes=settings.drill.health_grace_minutes)
    series, databases = site_series(site)
    try:
        tiers = _open_tiers(settings, clients)
    except BackupflowError as exc:
        row = SiteHealth(site.name, SiteState.UNREACHABLE, None, None, None, str(exc), [str(exc)])
        return row, 0
    surveys = []
    allowed: dict[str, timedelta] = {}
    for category, name, job in series:
        cron = getattr(settings.jobs, job).schedule
        allowed[f"{category.value}/{name}"] = (
            schedule_interval(cron, settings.timezone, now) + grace
        )
        surveys += [survey_series(tier, category, name) for tier in tiers]
    row = assess_site(
        site.name,
        surveys,
        facts,
        now=now,
        allowed=allowed,
        poll_allowed=POLL_ALLOWED,
        database_series=databases,
    )
    return row, sum(s.requests for s in surveys)


def fleet_rows(
    fleet: Fleet, facts: dict[str, SiteFacts], now: datetime
) -> tuple[list[SiteHealth], int]:
    """Every site's health, worst first, and the storage requests it took (sites are read
    a few at a time: the time goes in waiting for the tiers)."""
    clients: dict[tuple[Any, ...], Any] = {}
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        found = list(
            pool.map(
                lambda s: _site_health(s, facts.get(s.name, SiteFacts()), now, clients),
                fleet.sites,
            )
        )
    rows = sorted((row for row, _ in found), key=SiteHealth.rank)
    return rows, sum(requests for _, requests in found)


def _minutes(delta: timedelta | None) -> float | str:
    return round(delta.total_seconds() / 60, 1) if delta is not None else "—"


@flow(
    name="fleet-health",
    persist_result=False,
    on_failure=[notify_on_failure("dr_lead")],
    on_cancellation=[notify_on_cancellation("dr_lead")],
)
def fleet_health() -> list[dict[str, Any]]:
    """Every site of the fleet, worst first: its recovery point now, predicted restore
    time, late runs, worker and latest restore test."""
    path = os.environ.get(FLEET_ENV_VAR)
    if not path:
        raise ConfigError(f"{FLEET_ENV_VAR} is not set on this worker: name the fleet file.")
    fleet = load_fleet(Path(path))
    timezone = fleet.sites[0].settings.timezone
    now = datetime.now(UTC)
    rows, requests = fleet_rows(fleet, _facts(fleet), now)
    table = [
        {
            "site": row.site,
            "state": row.state.value,
            "recovery_point": local_and_utc(row.recovery_point, timezone)
            if row.recovery_point
            else "—",
            "recovery_age_minutes": _minutes(row.recovery_age),
            "predicted_restore_minutes": _minutes(row.predicted_restore),
            "detail": row.detail or "—",
        }
        for row in rows
    ]
    table_artifact(
        key="fleet-health",
        table=table,
        description=f"Fleet health at {local_and_utc(now, timezone)}: {len(rows)} sites, "
        f"{requests} storage requests",
    )
    bad = [r for r in rows if r.state not in (SiteState.OK, SiteState.UNTESTED)]
    lines = [f"# Fleet health at {local_and_utc(now, timezone)}", ""]
    lines += [
        f"* **{r.site}**: {r.state.value}" + (f": {r.detail}" if r.detail else "") for r in rows
    ]
    markdown_artifact(key="fleet-health-summary", markdown="\n".join(lines) + "\n")
    run_logger().info(
        "fleet health: %d sites, %d need attention, %d storage requests",
        len(rows),
        len(bad),
        requests,
    )
    if bad:
        raise FleetHealthError(
            f"{len(bad)} of {len(rows)} sites need attention: "
            + "; ".join(f"{r.site} ({r.state.value}: {r.detail})" for r in bad[:10])
        )
    return table
