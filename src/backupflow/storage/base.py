"""The storage interface every tier implements, and key validation.

Contract (every backend, checked by ``tests/integration/test_storage_conformance.py``):

* Keys are relative ``/``-separated paths of safe characters; no empty component, no
  leading ``/``, no component starting with ``.`` (so no ``.``/``..``, and ``.tmp-*`` stays
  reserved for writes in progress).  :func:`validate_key` enforces this at the boundary of
  every call.
* :meth:`Storage.put` consumes an iterable of byte chunks and makes the object visible only
  when it is complete and durable: a reader never sees half an object, and an interrupted
  put leaves no object under ``key``.  An existing object is replaced atomically.
* :meth:`Storage.open` streams an object's bytes; a missing key raises
  :class:`~backupflow.errors.ObjectNotFoundError`.
* :meth:`Storage.stat` returns size and modification time, or raises ObjectNotFoundError.
* :meth:`Storage.list` yields every complete object under a prefix, sorted by key.  A prefix
  ending in ``/`` is a folder; otherwise it matches key beginnings.
* :meth:`Storage.delete` removes an object; deleting a missing key is not an error.
* Errors are :class:`~backupflow.errors.StorageError`; transient ones are
  :class:`~backupflow.errors.TransientStorageError` (``retryable``).

What a backend guarantees beyond the contract is declared in one place,
:attr:`Storage.capabilities` (a :class:`StorageCapabilities`); callers branch on a capability,
never on a backend's class, and a wrapper (:class:`~backupflow.storage.wrapper.StorageWrapper`)
reports the capabilities of the storage it wraps.
"""

from __future__ import annotations

import builtins
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from backupflow.errors import InvalidKeyError, StorageError

__all__ = [
    "TMP_PREFIX",
    "ObjectInfo",
    "Storage",
    "StorageCapabilities",
    "UnfinishedWrite",
    "get_bytes",
    "put_bytes",
    "validate_key",
]

TMP_PREFIX = ".tmp-"
_SAFE = re.compile(r"^[A-Za-z0-9._\-=+@]+$")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a backend knows about one stored object."""

    key: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class UnfinishedWrite:
    """A write that was started and never completed (an open S3 multipart upload)."""

    key: str
    started: datetime | None
    #: Where it is, for a person (``s3://bucket/key``).
    where: str


@dataclass(frozen=True, slots=True)
class StorageCapabilities:
    """What a backend guarantees beyond the contract (all off by default).

    ``verified_writes``: a completed ``put`` proves the stored bytes equal the bytes sent
    (S3 checked the SHA-256 sent with every part), so nobody need read the object back.
    ``write_once``: objects cannot be deleted or replaced before their retention ends
    (S3 Object Lock), so a damaged copy must never be written there.
    """

    verified_writes: bool = False
    write_once: bool = False
    #: Writes can be left unfinished and still cost storage (S3 multipart uploads):
    #: ``unfinished_writes`` lists them, one request per 1,000.
    leaves_unfinished: bool = False


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`InvalidKeyError`."""
    if not key or key.startswith("/") or key.endswith("/"):
        raise InvalidKeyError(f"storage key {key!r} must be a relative path to an object.")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKeyError(f"storage key {key!r} has an empty, '.' or '..' component.")
        if not _SAFE.fullmatch(part):
            raise InvalidKeyError(f"storage key {key!r} has characters outside [A-Za-z0-9._-=+@].")
        if part.startswith("."):
            raise InvalidKeyError(
                f"storage key {key!r} has a component starting with '.', which is reserved for "
                "writes in progress."
            )
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key beginning (which may end in ``/``)."""
    if prefix:
        validate_key(prefix.rstrip("/") or "x/")
    return prefix


class Storage(ABC):
    """A flat namespace of immutable-by-convention objects (a folder, a bucket, memory)."""

    #: Short human name used in messages, e.g. ``primary:/var/backups``.
    name: str

    @property
    def capabilities(self) -> StorageCapabilities:
        """What this backend guarantees beyond the contract; a wrapper reports its inner's."""
        return StorageCapabilities()

    @property
    def verified_writes(self) -> bool:
        """True when ``put`` itself proves the stored bytes (no read-back needed)."""
        return self.capabilities.verified_writes

    @property
    def write_once(self) -> bool:
        """True when objects cannot be deleted early (S3 Object Lock)."""
        return self.capabilities.write_once

    @property
    def leaves_unfinished(self) -> bool:
        """True when writes can be left unfinished (S3 multipart uploads)."""
        return self.capabilities.leaves_unfinished

    @abstractmethod
    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        """Store the concatenated ``chunks`` under ``key``, atomically and durably."""

    @abstractmethod
    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """Open ``key`` for streaming reads."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time of ``key``."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every complete object whose key starts with ``prefix``, sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    def create(self, key: str, data: bytes) -> bool:
        """Store the small object ``data`` under ``key`` only if no object is there yet,
        atomically and durably: True when it was stored, False when ``key`` already existed
        (nothing was changed).  Backends that cannot do it atomically refuse."""
        del data
        raise StorageError(
            f"{self.name} cannot create {key} only if it is absent; use a folder, S3 or memory."
        )

    def cleanup_incomplete(self, older_than: datetime) -> builtins.list[str]:
        """Remove left-overs of interrupted writes older than ``older_than``.

        A folder removes its temporary files, S3 aborts its unfinished multipart uploads;
        backends whose writes cannot leave debris (memory is atomic) keep this default, which
        removes nothing.
        """
        del older_than
        return []

    def unfinished_writes(self, prefix: str = "") -> builtins.list[UnfinishedWrite]:
        """Writes under ``prefix`` that were started and never completed, which a reader
        cannot see but which still cost storage.  Backends whose writes cannot be left open
        (a folder writes to a temporary name, memory is atomic) keep this default: none."""
        validate_prefix(prefix)
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def put_bytes(storage: Storage, key: str, data: bytes) -> ObjectInfo:
    """Store a small object given as bytes."""
    return storage.put(key, [data])


#: The most :func:`get_bytes` reads: anything it reads is a record, never a backup's data.
MAX_RECORD_BYTES = 64 << 20


def get_bytes(storage: Storage, key: str, *, limit: int = MAX_RECORD_BYTES) -> bytes:
    """Read a small object whole (manifests and records only; backups are streamed); one
    larger than ``limit`` is refused unread."""
    parts: list[bytes] = []
    size = 0
    with storage.open(key) as handle:
        while size <= limit and (part := handle.read(min(1 << 20, limit + 1 - size))):
            parts.append(part)
            size += len(part)
    data = b"".join(parts)
    if size > limit:
        raise StorageError(
            f"{storage.name}/{key} is larger than {limit >> 20} MiB, which no record of "
            "backupflow's is; it was not read."
        )
    return data
