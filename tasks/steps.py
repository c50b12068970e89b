"""The Prefect side of the step protocol: each core step runs as a named Prefect task.

The core's runs (:mod:`backupflow.backup_run`, :mod:`backupflow.restore_run`) call
``steps.run(name, label, fn)``; here that becomes a task named ``name`` (``dump``,
``compress-and-store``, ``copy-to-tier``, ``write-manifest``, ``prune`` ...) whose run is
called ``label``, never cached, its result never persisted.  No task retries: each storage
backend has exactly one retry layer of its own (botocore's for S3).  Outside a flow run (the
CLI running a flow's body without Prefect) a step is simply called, and logs to the
``backupflow`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from prefect import Task, get_run_logger
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext

from backupflow.steps import Logger
from tasks.limits import hold

__all__ = ["PrefectSteps"]

T = TypeVar("T")


class PrefectSteps:
    """Runs each step of a core run as a Prefect task of the current flow run."""

    @property
    def logger(self) -> Logger:
        if FlowRunContext.get() is None:
            return logging.getLogger("backupflow")
        return get_run_logger()

    def run(self, name: str, label: str, fn: Callable[[], T], *, hold: str | None = None) -> T:
        if FlowRunContext.get() is None:
            return fn()
        if hold is not None:
            return _holding(hold, lambda: self.run(name, label, fn))

        def step() -> T:
            return fn()

        step.__name__ = step.__qualname__ = name.replace("-", "_")
        step.__doc__ = f"backupflow step {name}"
        runner = Task(
            step, name=name, task_run_name=label, cache_policy=NO_CACHE, persist_result=False
        )
        return runner()


def _holding(limit: str, fn: Callable[[], T]) -> T:
    """``fn()`` while holding one slot of the global concurrency limit ``limit``."""
    with hold(limit, get_run_logger()):
        return fn()
