"""Task that appends one JSON line to the backup log."""

from __future__ import annotations

from typing import Any

from prefect import task

from backupflow.backuplog import BackupLog
from tasks._options import SIDE_EFFECTS

__all__ = ["log_event"]


@task(name="log-event", task_run_name="log-{event}-{status}", **SIDE_EFFECTS)
def log_event(log: BackupLog, event: str, status: str, **fields: Any) -> dict[str, Any]:
    """Append ``event`` with ``status`` and ``fields`` to the backup log."""
    return log.append(event, status=status, **fields)
