"""An in-memory storage tier, for tests and dry runs."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import BinaryIO

from backupflow.errors import ObjectNotFoundError
from backupflow.storage.base import ObjectInfo, Storage, validate_key, validate_prefix

__all__ = ["MemoryStorage"]


class MemoryStorage(Storage):
    """Objects live in a dict; a put becomes visible only once all chunks are consumed."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._objects: dict[str, tuple[bytes, datetime]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        validate_key(key)
        data = b"".join(chunks)
        with self._lock:
            self._objects[key] = (data, datetime.now(UTC))
        return self.stat(key)

    def create(self, key: str, data: bytes) -> bool:
        validate_key(key)
        with self._lock:
            if key in self._objects:
                return False
            self._objects[key] = (bytes(data), datetime.now(UTC))
        return True

    def _get(self, key: str) -> tuple[bytes, datetime]:
        validate_key(key)
        with self._lock:
            try:
                return self._objects[key]
            except KeyError:
                raise ObjectNotFoundError(f"{key} does not exist in {self.name}.") from None

    def open(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return io.BytesIO(self._get(key)[0])

    def stat(self, key: str) -> ObjectInfo:
        data, modified = self._get(key)
        return ObjectInfo(key, len(data), modified)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        with self._lock:
            items = sorted((k, v) for k, v in self._objects.items() if k.startswith(prefix))
        for key, (data, modified) in items:
            yield ObjectInfo(key, len(data), modified)

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._lock:
            self._objects.pop(key, None)
