"""Holding a Prefect global concurrency limit: strictly, and steady when the API is busy.

``hold(name)`` takes one slot of the limit ``name`` (``strict``: a limit the bootstrap never
created is a one-sentence :class:`~backupflow.errors.ConfigError`, not a silent overlap).
When the API is too busy to answer the acquisition (the hourly storm of a fleet on a small
server answers "503 Service Unavailable" or times out), the acquisition is tried again with
a growing pause, for up to :data:`ACQUIRE_PATIENCE` seconds, instead of failing the backup:
the run waits, as it would for a slot held by another run.  Only the acquisition is
retried, never the work done while the slot is held.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from backupflow.errors import ConfigError

__all__ = ["ACQUIRE_PATIENCE", "hold", "missing_limit"]

#: How long a busy API may keep a run from its slot before the run fails (seconds).
ACQUIRE_PATIENCE = 15 * 60
_TRANSIENT = ("503", "502", "504", "429", "Service Unavailable", "timed out", "Timeout", "connect")


def missing_limit(name: str) -> ConfigError:
    """The error for a global concurrency limit ``name`` that the API does not have."""
    return ConfigError(
        f"the global concurrency limit {name!r} does not exist on the Prefect API; run the "
        "bootstrap (python deployments/bootstrap.py) to create it."
    )


def _transient(exc: BaseException) -> bool:
    text = f"{exc} {exc.__cause__ or ''}"
    return any(mark in text for mark in _TRANSIENT)


@contextmanager
def hold(
    name: str,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    *,
    patience: float = ACQUIRE_PATIENCE,
) -> Iterator[None]:
    """Hold one slot of the global concurrency limit ``name`` while the block runs."""
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.sync import concurrency

    log = logger or logging.getLogger("backupflow.limits")
    deadline = time.monotonic() + patience
    pause = 1.0
    stack = ExitStack()
    while True:
        try:
            # A renewal the busy API misses must not kill the work in hand: the slot is
            # only a bound on concurrency, never what keeps data safe.
            stack.enter_context(
                concurrency(name, occupy=1, strict=True, raise_on_lease_renewal_failure=False)
            )
            break
        except ConcurrencySlotAcquisitionError as exc:
            if "must be created" in str(exc):
                raise missing_limit(name) from None
            if not _transient(exc) or time.monotonic() + pause > deadline:
                raise
            log.warning(
                "the Prefect API is busy (%s); asking for the %s slot again in %.0f s",
                str(exc).rsplit(":", 1)[-1].strip()[:80],
                name,
                pause,
            )
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 30.0)
    try:
        yield
    finally:
        try:
            stack.close()  # releases the slot
        except Exception as exc:
            if not _transient(exc):
                raise
            # The work is done; a release the busy API missed frees itself when the lease
            # runs out. Failing a finished backup for it would lie about the backup.
            log.warning("the %s slot could not be released now (%s); its lease frees it", name, exc)
