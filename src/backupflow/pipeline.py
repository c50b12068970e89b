"""The streaming pipeline: source -> compress -> SHA-256 -> storage, and back.

Memory stays bounded by the chunk size whatever the size of the backup: nothing reads a
whole object.  Reading back checks both the stored bytes' and the decompressed bytes'
SHA-256 against the manifest, and names the object when they differ.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

from backupflow.codecs import CODEC_ERRORS, Codec, get_codec
from backupflow.errors import IntegrityError
from backupflow.models import StoredObject
from backupflow.storage.base import Storage

__all__ = ["HashThread", "HashingReader", "open_verified", "store_stream", "verify_stored"]

Progress = Callable[[int], None]


class HashThread:
    """Hashes byte blocks on a helper thread, in order, through a bounded queue.

    hashlib releases the GIL on large buffers, so hashing overlaps decompression and
    writing on another core; the queue keeps memory at a few chunks.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Any, bytes] | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()
        self._open = True

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            item[0].update(item[1])

    def update(self, digest: Any, data: bytes) -> None:
        self._queue.put((digest, data))

    def close(self) -> None:
        """Return once every block given so far is hashed."""
        if self._open:
            self._open = False
            self._queue.put(None)
            self._thread.join()


class HashingReader:
    """Wraps a reader; hashes and counts every byte that passes through ``read``.

    With ``background``, hashing happens on that thread: close it before reading ``sha256``.
    With ``limit``, a read that would pass more than ``limit`` bytes in total raises
    :class:`IntegrityError` (``overflow`` is its message): reads stop at the limit, and once
    there a single byte more is the error.  Memory stays bounded even for ``read()`` of
    everything.
    """

    def __init__(
        self,
        inner: BinaryIO,
        progress: Progress | None = None,
        background: HashThread | None = None,
        *,
        limit: int | None = None,
        overflow: str = "the stream is longer than recorded; the stored copy is damaged.",
    ) -> None:
        self._inner = inner
        self._progress = progress
        self._background = background
        self._limit = limit
        self._overflow = overflow
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None:
            size = -1
        if self._limit is not None:
            room = self._limit - self.size
            # Up to the limit, never past it; at the limit, one byte shows an overflow.
            size = (room if size < 0 else min(size, room)) if room > 0 else 1
        data = self._inner.read(size)
        if data:
            if self._limit is not None and self.size + len(data) > self._limit:
                raise IntegrityError(self._overflow)
            if self._background is not None:
                self._background.update(self.sha256, data)
            else:
                self.sha256.update(data)
            self.size += len(data)
            if self._progress is not None:
                self._progress(len(data))
        return data

    def readable(self) -> bool:
        return True

    def drain(self, chunk_bytes: int) -> None:
        """Read (and hash) whatever is left."""
        while self.read(chunk_bytes):
            pass


def store_stream(
    storage: Storage,
    key: str,
    source: BinaryIO,
    codec: Codec,
    *,
    role: str,
    chunk_bytes: int = 1 << 20,
    verify: bool = True,
    progress: Progress | None = None,
) -> StoredObject:
    """Compress ``source`` into ``storage`` under ``key`` in one pass and return its record.

    The stored size is checked against what was sent, and with ``verify`` the stored
    object is read back and its SHA-256 recomputed before the record is returned.
    """
    raw = HashingReader(source, progress)
    stored_hash = hashlib.sha256()
    stored_size = 0
    compressor = codec.compressor()

    def chunks() -> Iterator[bytes]:
        nonlocal stored_size
        while block := raw.read(chunk_bytes):
            out = compressor.compress(block)
            if out:
                stored_hash.update(out)
                stored_size += len(out)
                yield out
        tail = compressor.flush()
        if tail:
            stored_hash.update(tail)
            stored_size += len(tail)
            yield tail

    info = storage.put(key, chunks())
    record = StoredObject(
        role=role,
        key=key,
        codec=codec.name,
        size=stored_size,
        sha256=stored_hash.hexdigest(),
        raw_size=raw.size,
        raw_sha256=raw.sha256.hexdigest(),
    )
    if info.size != stored_size:
        raise IntegrityError(
            f"{key} in {storage.name} holds {info.size} bytes after writing {stored_size}; "
            "the write was not complete."
        )
    if verify:
        verify_stored(storage, record, chunk_bytes=chunk_bytes)
    return record


def verify_stored(storage: Storage, record: StoredObject, *, chunk_bytes: int = 1 << 20) -> None:
    """Re-read a stored object and check its size and SHA-256 (without decompressing)."""
    with storage.open(record.key) as handle:
        reader = HashingReader(handle, limit=record.size, overflow=_longer(storage, record))
        reader.drain(chunk_bytes)
    if reader.size != record.size or reader.sha256.hexdigest() != record.sha256:
        raise IntegrityError(
            f"{record.key} in {storage.name} does not match its recorded SHA-256; "
            "the stored copy is damaged."
        )


def _longer(storage: Storage, record: StoredObject) -> str:
    return (
        f"{record.key} in {storage.name} holds more than its recorded {record.size} bytes; "
        "the stored copy is damaged."
    )


@contextmanager
def open_verified(
    storage: Storage,
    record: StoredObject,
    *,
    chunk_bytes: int = 1 << 20,
    progress: Progress | None = None,
) -> Iterator[BinaryIO]:
    """Stream the decompressed content of ``record``; verify it when the block exits.

    The caller must treat what it read as provisional until the ``with`` block ends
    without an error: damage is detected once every byte has been seen.  Sizes are bounds:
    a read that would pass the recorded ``raw_size`` (or stored ``size``) raises
    :class:`IntegrityError` before the extra bytes reach the caller.
    """
    info = storage.stat(record.key)
    if info.size != record.size:
        raise IntegrityError(
            f"{record.key} in {storage.name} is {info.size} bytes but the manifest says "
            f"{record.size}; the stored copy is damaged or incomplete."
        )
    codec = get_codec(record.codec)
    background = HashThread()
    try:
        with storage.open(record.key) as handle:
            stored = HashingReader(
                handle, progress, background, limit=record.size, overflow=_longer(storage, record)
            )
            try:
                plain = HashingReader(
                    codec.reader(cast(BinaryIO, stored)),
                    None,
                    background,
                    limit=record.raw_size,
                    overflow=(
                        f"{record.key} in {storage.name} decompresses to more than its recorded "
                        f"{record.raw_size} bytes; the stored copy is damaged."
                    ),
                )
                yield cast(BinaryIO, plain)
                plain.drain(chunk_bytes)
                stored.drain(chunk_bytes)
            except CODEC_ERRORS as exc:
                raise IntegrityError(
                    f"{record.key} in {storage.name} cannot be decompressed ({exc}); "
                    "the stored copy is damaged."
                ) from exc
    finally:
        background.close()
    if stored.size != record.size or stored.sha256.hexdigest() != record.sha256:
        raise IntegrityError(
            f"{record.key} in {storage.name} does not match its recorded SHA-256; "
            "the stored copy is damaged."
        )
    if plain.size != record.raw_size or plain.sha256.hexdigest() != record.raw_sha256:
        raise IntegrityError(
            f"{record.key} in {storage.name} decompresses to data that does not match its "
            "recorded SHA-256; the stored copy is damaged."
        )
