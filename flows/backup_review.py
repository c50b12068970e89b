"""Flow: the quarterly review of the backup logs and drills (a markdown artifact)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from prefect import flow
from prefect.artifacts import Artifact

from backupflow.backuplog import BackupLog
from backupflow.config import current_settings
from backupflow.reporting import EMPTY, artifact_key, iso
from backupflow.series import all_series, databases
from backupflow.storage import open_tiers
from backupflow.tiers import locate
from flows._publish import latest_artifact, markdown_artifact, run_name

__all__ = ["backup_review", "review_figures"]


def review_figures(records: list[dict[str, Any]], since: datetime) -> dict[str, dict[str, Any]]:
    """Per job: backups, failures, stored bytes (first, last), mean seconds. Pure."""
    figures: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"completed": 0, "failed": 0, "sizes": [], "seconds": []}
    )
    for record in records:
        if record.get("event") != "backup" or datetime.fromisoformat(record["time"]) < since:
            continue
        job = f"{record.get('category', 'database')}/{record.get('kind', 'full')}"
        entry = figures[job]
        if record.get("status") == "failed":
            entry["failed"] += 1
            continue
        entry["completed"] += 1
        entry["sizes"].append(int(record.get("stored_bytes", 0)))
        entry["seconds"].append(float(record.get("seconds", 0.0)))
    return {
        job: {
            "completed": f["completed"],
            "failed": f["failed"],
            "first_bytes": f["sizes"][0] if f["sizes"] else 0,
            "last_bytes": f["sizes"][-1] if f["sizes"] else 0,
            "mean_seconds": round(sum(f["seconds"]) / len(f["seconds"]), 2) if f["seconds"] else 0,
        }
        for job, f in sorted(figures.items())
    }


@flow(
    name="backup-review",
    flow_run_name=run_name("backup-review", at_start=True),
    persist_result=False,
)
def backup_review(days: int = 92) -> str:
    """Backups and failures per job, sizes, durations, drill history, restore points per tier.

    Args:
        days: How many days back the review looks (92: one quarter).
    """
    settings = current_settings()
    now = datetime.now(UTC)
    figures = review_figures(BackupLog(settings.backup_log).read(), now - timedelta(days=days))
    lines = [f"# Backup review, {iso(now - timedelta(days=days))} to {iso(now)}", ""]
    lines += ["| job | backups | failures | first size | last size | mean seconds |"]
    lines += ["| --- | --- | --- | --- | --- | --- |"]
    lines += [
        f"| {job} | {f['completed']} | {f['failed']} | {f['first_bytes']:,} | "
        f"{f['last_bytes']:,} | {f['mean_seconds']} |"
        for job, f in figures.items()
    ]
    lines += ["", "## DR drills (RTO / RPO in minutes)", ""]
    names, _skipped = databases(settings)
    for name in names:
        drills = cast(Artifact | None, latest_artifact(artifact_key("dr-drill", name)))
        history = json.loads(str(drills.data)) if drills is not None and drills.data else []
        lines += [_drill_line(name, d) for d in history] or [f"* {name}: no drill on record"]
    lines += ["", "## Restore points per tier", ""]
    tiers = open_tiers(settings)
    for one in all_series(settings):
        category, name = one.category, one.name
        holdings = locate(tiers, category.value, name)
        for tier in holdings.listed:
            points = [
                e.restore_point for e in holdings.sorted_entries() if tier in holdings.holders[e.id]
            ]
            span = f"{iso(min(points))} .. {iso(max(points))}" if points else "none"
            lines.append(f"* {category.value}/{name} in {tier.name}: {span}")
    markdown = "\n".join(lines)
    markdown_artifact(key="backup-review", markdown=markdown)
    return markdown


def _drill_line(name: str, drill: dict[str, Any]) -> str:
    """One drill of the history (rows written before the failed drills were recorded say
    ``time`` and ``pass``/``FAIL``)."""
    line = (
        f"* {name}: {drill.get('started', drill.get('time', EMPTY))} from {drill['tier']}: "
        f"{drill['result']}, RTO {drill['rto_minutes']}, RPO {drill['rpo_minutes']}"
    )
    reason = drill.get("reason", EMPTY)
    return line if reason == EMPTY else f"{line} ({reason})"
