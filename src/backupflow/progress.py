"""An optional byte counter for long transfers, set by the CLI and read by flows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["current_progress", "report_progress"]

Progress = Callable[[int], None]

_current: ContextVar[Progress | None] = ContextVar("backupflow_progress", default=None)


@contextmanager
def report_progress(callback: Progress) -> Iterator[None]:
    """Send the byte counts of transfers in this context to ``callback``."""
    token = _current.set(callback)
    try:
        yield
    finally:
        _current.reset(token)


def current_progress() -> Progress | None:
    """The callback set by :func:`report_progress`, if any."""
    return _current.get()
