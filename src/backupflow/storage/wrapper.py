"""The base of every storage that wraps another (counting, logging, dry-run, ...).

A wrapper embeds what it wraps: it forwards every operation and every capability of the
inner storage, so a caller never has to reach through it (``isinstance(..., S3Storage)``) to
learn what the storage underneath guarantees.  A subclass overrides only the operations it
changes.  Retries are not a wrapper: each backend has exactly one retry layer of its own
(botocore's for S3; none for a local disk).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from typing import BinaryIO

from backupflow.storage.base import ObjectInfo, Storage, StorageCapabilities, UnfinishedWrite

__all__ = ["StorageWrapper"]


class StorageWrapper(Storage):
    """Forwards everything to ``inner``; its capabilities are ``inner``'s."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.name = inner.name

    @property
    def capabilities(self) -> StorageCapabilities:
        return self.inner.capabilities

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        return self.inner.put(key, chunks)

    def create(self, key: str, data: bytes) -> bool:
        return self.inner.create(key, data)

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        return self.inner.open(key)

    def stat(self, key: str) -> ObjectInfo:
        return self.inner.stat(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def cleanup_incomplete(self, older_than: datetime) -> builtins.list[str]:
        return self.inner.cleanup_incomplete(older_than)

    def unfinished_writes(self, prefix: str = "") -> builtins.list[UnfinishedWrite]:
        return self.inner.unfinished_writes(prefix)
