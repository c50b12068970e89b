"""Task that appends one JSON line to the backup log."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.context import FlowRunContext

from backupflow.backuplog import BackupLog
from tasks._options import SIDE_EFFECTS

__all__ = ["log_event"]


@task(name="log-event", task_run_name="log-{event}-{status}", **SIDE_EFFECTS)
def _log_event(log: BackupLog, event: str, status: str, **fields: Any) -> dict[str, Any]:
    return log.append(event, status=status, **fields)


def log_event(log: BackupLog, event: str, status: str, **fields: Any) -> dict[str, Any]:
    """Append ``event`` with ``status`` and ``fields`` to the backup log: a task of the flow
    run, or a plain append outside one (the CLI running without Prefect)."""
    if FlowRunContext.get() is None:
        return log.append(event, status=status, **fields)
    done: dict[str, Any] = _log_event(log, event, status, **fields)
    return done
