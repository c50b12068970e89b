"""Artifacts the flows publish from the core runs' outcomes (stable keys, history in the UI)."""

from __future__ import annotations

from prefect.artifacts import create_table_artifact

from backupflow.backup_run import BackupOutcome
from backupflow.reporting import artifact_key

__all__ = ["publish_backup"]


def publish_backup(outcome: BackupOutcome) -> None:
    """The latest backup of a series, as a one-row table (before a missing tier fails the
    run, so the UI shows where it was stored)."""
    manifest = outcome.manifest
    create_table_artifact(
        key=artifact_key("backup", manifest.category.value, manifest.database, manifest.kind.value),
        table=[outcome.row()],
        description=f"Latest {manifest.kind.value} backup of {manifest.category.value} "
        f"{manifest.database}",
    )
