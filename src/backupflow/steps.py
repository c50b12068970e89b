"""The step protocol: how the core's backup and restore runs hand each step to a runner.

A run (:mod:`backupflow.backup_run`, :mod:`backupflow.restore_run`) is plain code that calls
``steps.run(name, label, fn)`` around each step and logs through ``steps.logger``.  Who
runs it decides what a step becomes:

* :class:`DirectSteps` calls the function (tests, scripts, anything without Prefect);
* ``tasks.steps.PrefectSteps`` runs each step as a named Prefect task, so the UI shows
  ``dump``, ``compress-and-store``, ``copy-to-tier``, ``write-manifest``, ``prune`` ...
  under the flow run, and the log lines go to the run's logger.

So the code the tests drive is the code the deployments run.  Steps are never retried here:
each storage backend has its own single retry layer (botocore for S3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

__all__ = [
    "CLEAN",
    "COPY",
    "DECIDE",
    "DUMP",
    "LOG",
    "MANIFEST",
    "PLAN",
    "PRUNE",
    "REPLICATE",
    "RESTORE",
    "STORE",
    "DirectSteps",
    "Logger",
    "Steps",
]

T = TypeVar("T")
Logger = logging.Logger | logging.LoggerAdapter[Any]

#: The steps of a backup and a restore, by the names a runner shows.
CLEAN = "clean-interrupted"
REPLICATE = "replicate"
DECIDE = "decide-backup"
DUMP = "dump"
STORE = "compress-and-store"
COPY = "copy-to-tier"
MANIFEST = "write-manifest"
PRUNE = "prune"
LOG = "log-event"
PLAN = "plan-restore"
RESTORE = "restore-chain"


class Steps(Protocol):
    """Runs the steps of a run, and carries the logger the run writes to."""

    @property
    def logger(self) -> Logger: ...

    def run(self, name: str, label: str, fn: Callable[[], T], *, hold: str | None = None) -> T:
        """Run one step: ``name`` is the step (one of the constants above), ``label`` names
        this occurrence (e.g. ``copy-<id>-primary-to-dr``); ``hold`` names a fleet-wide
        limit (a tier's uploads) the step holds one slot of while it runs, where the runner
        has such limits (a Prefect flow run)."""
        ...


@dataclass
class DirectSteps:
    """Runs each step by calling it; logs to the ``backupflow`` logger."""

    logger: Logger = field(default_factory=lambda: logging.getLogger("backupflow"))

    def run(self, name: str, label: str, fn: Callable[[], T], *, hold: str | None = None) -> T:
        del name, label, hold  # no orchestrator, no fleet-wide limits: the host's lock serialises
        return fn()
