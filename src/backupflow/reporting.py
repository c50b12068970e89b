"""Human-facing summaries shared by flows, artifacts and the CLI."""

from __future__ import annotations

import re
from typing import Any

from backupflow.models import Manifest, iso
from backupflow.planning import RestorePlan

__all__ = ["artifact_key", "iso", "manifest_row", "plan_rows"]


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
