"""Flow: back up one file set (configuration, application logs or user uploads)."""

from __future__ import annotations

from prefect import flow

from backupflow.backup_run import FileSetSubject, run_backup
from backupflow.config import current_settings
from backupflow.filesets import FileSetName
from backupflow.models import Manifest
from backupflow.progress import current_progress
from backupflow.storage import open_tiers
from flows._notify import notify_on_cancellation, notify_on_failure
from flows._publish import publish_backup
from tasks.steps import PrefectSteps

__all__ = ["backup_files"]


@flow(
    name="backup-files",
    flow_run_name="backup-files-{file_set}",
    persist_result=False,
    on_failure=[notify_on_failure("backup_administrator")],
    on_cancellation=[notify_on_cancellation("backup_administrator")],
)
def backup_files(file_set: FileSetName = "config") -> Manifest:
    """Back up one file set to every tier.

    ``config`` and ``logs`` are stored as one tar stream per backup; ``uploads`` stores each
    distinct file content once and lists which content every path had.  Files that change
    or vanish while read are reported; an unreadable file fails the run after the rest is
    stored.

    Args:
        file_set: Which file set to back up: config, uploads or logs.
    """
    settings = current_settings()
    subject = FileSetSubject(file_set, settings, current_progress())
    outcome = run_backup(subject, open_tiers(settings), PrefectSteps(), on_stored=publish_backup)
    return outcome.manifest
