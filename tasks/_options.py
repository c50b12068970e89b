"""Shared task options."""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from backupflow.errors import BackupflowError

__all__ = ["SIDE_EFFECTS", "retry_if_retryable"]


def retry_if_retryable(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry only errors that backupflow marks as retryable (transient I/O)."""
    del task, task_run
    try:
        state.result()
    except BackupflowError as exc:
        return exc.retryable
    except Exception:
        return False
    return False


#: Options for every task with side effects: never cached, results never persisted.
SIDE_EFFECTS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
