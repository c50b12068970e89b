"""A wrapper that retries a backend's retryable errors with exponential back-off."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import datetime
from typing import BinaryIO, TypeVar

from backupflow.errors import BackupflowError
from backupflow.storage.base import ObjectInfo, Storage

__all__ = ["RetryingStorage"]

T = TypeVar("T")


class RetryingStorage(Storage):
    """Retries operations whose error is marked ``retryable``; other errors pass through.

    ``put`` is retried only when its chunks are a re-iterable sequence: a one-shot stream
    cannot be replayed, so a failed streaming put is reported, not silently repeated.
    """

    def __init__(
        self,
        inner: Storage,
        *,
        attempts: int = 4,
        base_delay: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.attempts = attempts
        self.base_delay = base_delay
        self._sleep = sleep

    def _call(self, op: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return op()
            except BackupflowError as exc:
                if not exc.retryable or attempt == self.attempts:
                    raise
                self._sleep(self.base_delay * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        if isinstance(chunks, list | tuple):
            return self._call(lambda: self.inner.put(key, chunks))
        return self.inner.put(key, chunks)

    @contextmanager
    def _opened(self, key: str) -> Iterator[BinaryIO]:
        with ExitStack() as stack:
            # Entering is what opens the object: retry that, not just building the manager.
            yield self._call(lambda: stack.enter_context(self.inner.open(key)))

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        return self._opened(key)

    def stat(self, key: str) -> ObjectInfo:
        return self._call(lambda: self.inner.stat(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(self._call(lambda: list(self.inner.list(prefix))))

    def delete(self, key: str) -> None:
        self._call(lambda: self.inner.delete(key))

    def cleanup_incomplete(self, older_than: datetime) -> builtins.list[str]:
        return self._call(lambda: self.inner.cleanup_incomplete(older_than))
