"""Human-facing summaries shared by flows, artifacts and the CLI: artifact keys, table
cells, times shown in the configured timezone and in UTC, and RTO and RPO as
docs/objectives.md defines them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from backupflow.models import Manifest, iso, utc
from backupflow.planning import RestorePlan

__all__ = [
    "EMPTY",
    "artifact_key",
    "cell",
    "iso",
    "local_and_utc",
    "manifest_row",
    "minutes",
    "name_time",
    "plan_rows",
    "recovery_point",
    "recovery_time",
    "short_chain",
]


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def manifest_row(manifest: Manifest) -> dict[str, Any]:
    """One catalog row."""
    raw = sum(obj.raw_size for obj in manifest.objects)
    return {
        "id": manifest.id,
        "kind": manifest.kind.value,
        "database": manifest.database,
        "restore_point": iso(manifest.restore_point),
        "parent": manifest.parent_id or "-",
        "raw_bytes": raw,
        "stored_bytes": manifest.stored_bytes,
        "seconds": round((manifest.finished_at - manifest.started_at).total_seconds(), 2),
    }


def plan_rows(plan: RestorePlan[Manifest]) -> list[dict[str, Any]]:
    """One row per step of a restore plan."""
    return [
        {
            "step": index,
            "id": step.manifest.id,
            "kind": step.manifest.kind.value,
            "restore_point": iso(step.manifest.restore_point),
            "stored_bytes": step.manifest.stored_bytes,
            "why": step.reason,
        }
        for index, step in enumerate(plan.steps, start=1)
    ]


EMPTY = "—"
"""What an artifact shows in a cell that has nothing to say (never ``-`` or ``•``)."""


def cell(value: object) -> object:
    """``value``, or :data:`EMPTY` for None, an empty string or the old ``-`` placeholder."""
    return EMPTY if value is None or value in ("", "-") else value


def local_and_utc(moment: datetime | None, timezone: str) -> str:
    """``moment`` in ``timezone`` with its offset, then in UTC, to the second:
    ``2026-11-26 18:08:03+09:00 (09:08:03 UTC)``; the UTC date is added when it differs."""
    if moment is None:
        return EMPTY
    at = utc(moment)
    local = at.astimezone(ZoneInfo(timezone))
    offset = local.strftime("%z")
    shown = f"{local:%Y-%m-%d %H:%M:%S}{offset[:3]}:{offset[3:]}"
    in_utc = f"{at:%H:%M:%S}" if at.date() == local.date() else f"{at:%Y-%m-%d %H:%M:%S}"
    return f"{shown} ({in_utc} UTC)"


def name_time(moment: datetime, timezone: str) -> str:
    """A moment for a run name, to the minute in ``timezone``: ``2026-11-26T18:08+09:00``."""
    local = utc(moment).astimezone(ZoneInfo(timezone))
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%dT%H:%M}{offset[:3]}:{offset[3:]}"


def short_chain(ids: Sequence[str]) -> str:
    """A restore chain in one short cell: ``first … last (n backups)``."""
    if not ids:
        return EMPTY
    if len(ids) == 1:
        return f"{ids[0]} (1 backup)"
    return f"{ids[0]} … {ids[-1]} ({len(ids)} backups)"


def recovery_time(run_started: datetime, verified: datetime) -> timedelta:
    """RTO (docs/objectives.md): from the run's scheduled or created start to the verified
    restore."""
    return max(utc(verified) - utc(run_started), timedelta(0))


def recovery_point(
    restore_point: datetime, requested: datetime | None, run_started: datetime
) -> timedelta:
    """RPO (docs/objectives.md): the requested time minus the restore point reached, or for
    the latest state the run's start minus the restore point; never negative."""
    reference = requested if requested is not None else run_started
    return max(utc(reference) - utc(restore_point), timedelta(0))


def minutes(delta: timedelta) -> float:
    """A duration in minutes, to the hundredth, for a table cell."""
    return round(delta.total_seconds() / 60, 2)
