"""The database-backup slot: a Prefect global concurrency limit, held strictly.

Every database backup (and every pruning run, which must not delete while a backup writes)
holds one slot of the limit the settings name (``concurrency_limit``, created by
``deployments/bootstrap.py``).  Before taking it, the limit is read: a limit that was never
created is a one-sentence :class:`~backupflow.errors.ConfigError` that says to run the
bootstrap (instead of Prefect's raw "Concurrency limits [...] must be created"), and a slot
held by another run is logged before the wait, so a backup that waits says so.

Without a Prefect API (a CLI call runs its flow on a temporary server, which has no limits)
or without a configured limit, backups on this host take a lock file instead, and wait for
it the same way: CLI backups are serialised with each other and with the host's workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from backupflow.config import Settings
from backupflow.errors import ConfigError
from backupflow.locks import backup_lock
from tasks.limits import hold, missing_limit

__all__ = ["missing_limit", "slot"]


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("backupflow.slots")


def _read_limit(name: str) -> Any:
    """The limit ``name`` as the API has it; :func:`missing_limit` when it has none."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            raise missing_limit(name) from None


def _api_configured() -> bool:
    """Whether a Prefect API is configured (not the temporary server a CLI call starts,
    which holds no limits) and this is a flow run on it (not the CLI running without
    Prefect because the API did not answer)."""
    from prefect.settings import PREFECT_API_URL

    from flows._publish import running_without_prefect

    return bool(PREFECT_API_URL.value()) and not running_without_prefect()


@contextmanager
def slot(settings: Settings, what: str = "database-backup") -> Iterator[None]:
    """Hold one slot of ``settings.concurrency_limit`` when a Prefect API is configured,
    else the host's backup lock file (:func:`backupflow.locks.backup_lock`); either way,
    logging when another run holds it and this one waits."""
    name = settings.concurrency_limit
    if not (name and _api_configured()):
        with backup_lock(
            settings.staging_dir,
            run=os.environ.get("PREFECT__FLOW_RUN_ID"),
            wait=lambda line: _logger().info(line),
        ):
            yield
        return
    try:
        limit = _read_limit(name)
    except ConfigError:
        raise
    except Exception:  # a busy API: the acquisition below waits for it
        limit = None
    if limit is not None and limit.active_slots >= limit.limit:
        _logger().info(f"waiting for the {what} slot held by another run ({name})")
    # strict: a limit that was never created is an error, not a silent overlap; a busy API
    # is asked again (tasks.limits)
    with hold(name, _logger()):
        yield
