"""Flow: the quarterly review over every site of the fleet, in one markdown artifact.

Runs on the fleet's queue (``fleet-review/fleet``) from the Prefect API alone: per site, its
restore tests of the period (how many, how many failed, the latest RTO and throughput), its
latest DR drill per database, and when its next drill is due (drills rotate through the
quarter, :func:`backupflow.fleet.drill_cron`).  Sites whose latest restore test or drill
failed, or that have neither on record, come first.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cronsim import CronSim
from prefect import flow

from backupflow.errors import ConfigError
from backupflow.fleet import drill_cron, load_fleet
from backupflow.fleetfile import FLEET_ENV_VAR
from backupflow.reporting import artifact_key
from flows._publish import in_run, markdown_artifact, run_name
from flows.fleet_health import site_series

__all__ = ["fleet_review"]

_PAGE = 200


def _histories(keys: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The latest version of each history artifact in ``keys`` (its rows, newest first as
    written)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    if not in_run():
        return {}
    found: dict[str, list[dict[str, Any]]] = {}
    with get_client(sync_client=True) as client:
        for start in range(0, len(keys), _PAGE):
            for artifact in client.read_latest_artifacts(
                artifact_filter=ArtifactCollectionFilter(
                    key=ArtifactCollectionFilterKey(any_=keys[start : start + _PAGE])
                ),
                limit=_PAGE,
            ):
                try:
                    rows = json.loads(str(artifact.data)[: 16 << 20])
                except (ValueError, RecursionError):
                    continue
                if isinstance(rows, list):
                    found[str(artifact.key)] = [r for r in rows if isinstance(r, dict)]
    return found


@flow(
    name="fleet-review",
    flow_run_name=run_name("fleet-review", at_start=True),
    persist_result=False,
)
def fleet_review(days: int = 92) -> str:
    """Restore tests and DR drills of every site over the period, and each site's next drill.

    Args:
        days: How many days back the review looks (92: one quarter).
    """
    path = os.environ.get(FLEET_ENV_VAR)
    if not path:
        raise ConfigError(f"{FLEET_ENV_VAR} is not set on this worker: name the fleet file.")
    fleet = load_fleet(Path(path))
    now = datetime.now(UTC)
    since = now - timedelta(days=days)
    drill_keys = {
        site.name: [
            artifact_key(site.name, "dr-drill", name.rpartition("/")[2])
            for name in site_series(site)[1]
        ]
        for site in fleet.sites
    }
    tests_keys = {site.name: f"{site.name}-restore-test" for site in fleet.sites}
    histories = _histories(
        [*tests_keys.values(), *(k for keys in drill_keys.values() for k in keys)]
    )
    entries: list[tuple[int, str]] = []
    for index, site in enumerate(fleet.sites):
        tests = histories.get(tests_keys[site.name], [])
        failed = sum(1 for t in tests if t.get("result") != "passed")
        latest = tests[0] if tests else {}
        drills = [histories.get(k, []) for k in drill_keys[site.name]]
        drill_rows = [rows[-1] for rows in drills if rows]  # drill histories: oldest first
        next_drill = next(CronSim(drill_cron(index), now.replace(tzinfo=None)))
        trouble = (
            not tests
            or latest.get("result") != "passed"
            or not drill_rows
            or any(d.get("result") != "passed" for d in drill_rows)
        )
        drill_text = (
            ", ".join(
                f"{d.get('result')} (RTO {d.get('rto_minutes')} min, RPO {d.get('rpo_minutes')} "
                f"min, {d.get('started', '?')})"
                for d in drill_rows
            )
            or "none on record"
        )
        entries.append(
            (
                0 if trouble else 1,
                f"| {site.name} | {len(tests)} ({failed} failed) | "
                f"{latest.get('result', '—')}, {latest.get('rto_seconds', '—')} s, "
                f"{latest.get('throughput_mb_s', '—')} MB/s | {drill_text} | "
                f"{next_drill:%Y-%m-%d} |",
            )
        )
    entries.sort(key=lambda entry: entry[0])
    lines = [
        f"# Fleet review, {since:%Y-%m-%d} to {now:%Y-%m-%d} ({len(fleet.sites)} sites)",
        "",
        "Restore tests keep their latest 100 rows; drills their whole history.",
        "",
        "| site | restore tests | latest test | latest drill | next drill |",
        "| --- | --- | --- | --- | --- |",
        *(line for _, line in entries),
    ]
    markdown = "\n".join(lines) + "\n"
    markdown_artifact(key="fleet-review", markdown=markdown)
    return markdown
