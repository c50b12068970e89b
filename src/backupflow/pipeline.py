"""The streaming pipeline: source -> compress -> encrypt (age) -> SHA-256 -> storage, and back.

Memory stays bounded by the chunk size whatever the size of the backup: nothing reads a
whole object.  Reading back checks both the stored (encrypted) bytes' and the plaintext
bytes' SHA-256 against the manifest, and names the object when they differ; age itself
authenticates every ciphertext chunk on the way.  A file content's record may hold a keyed
content id instead of its plaintext's SHA-256 (:data:`CONTENT_ID_DIGEST`): that one is
checked only where the signing key is held.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, BinaryIO

from backupflow.codecs import CODEC_ERRORS, Codec, get_codec
from backupflow.crypto import AGE_FORMAT, decrypted_blocks, encrypting
from backupflow.errors import IntegrityError
from backupflow.keys import Keyring
from backupflow.models import StoredObject
from backupflow.readahead import blocks_ahead, reading_ahead
from backupflow.storage.base import Storage

__all__ = [
    "CONTENT_ID_DIGEST",
    "ENCRYPTED_SUFFIX",
    "HashThread",
    "HashingReader",
    "open_verified",
    "store_stream",
    "verify_stored",
]

#: Appended to the key of every encrypted object (``<id>.data.zst.age``).
ENCRYPTED_SUFFIX = ".age"
#: :attr:`StoredObject.raw_digest` of a record whose ``raw_sha256`` is the keyed content id
#: of its plaintext (:meth:`Keyring.content_id`), not the plaintext's SHA-256.
CONTENT_ID_DIGEST = "content-id"

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
    keyring: Keyring | None = None,
) -> StoredObject:
    """Compress (then, when ``keyring.encrypt``, age-encrypt) ``source`` into ``storage`` in
    one pass and return its record.

    An encrypted object is stored under ``key`` + ``.age``.  The stored size is checked
    against what was sent, and with ``verify`` the stored object is read back and its
    SHA-256 recomputed before the record is returned, unless the storage's writes are
    verified (S3 checked the SHA-256 of every part it received: reading the object back
    would only double the transfer).  Without a keyring nothing is encrypted (tests,
    benchmarks, adopted format-1 objects).
    """
    encrypt = keyring is not None and keyring.encrypt
    recipients = keyring.age_recipients() if keyring is not None and encrypt else []
    raw = HashingReader(source, progress)
    stored_hash = hashlib.sha256()
    stored_size = 0
    compressor = codec.compressor()

    def compressed() -> Iterator[bytes]:
        while block := raw.read(chunk_bytes):
            yield from _pieces(compressor.compress(block), chunk_bytes)
        yield from _pieces(compressor.flush(), chunk_bytes)

    def chunks(ready: Iterator[bytes]) -> Iterator[bytes]:
        nonlocal stored_size
        for out in ready:
            stored_hash.update(out)
            stored_size += len(out)
            yield out

    if encrypt:
        key += ENCRYPTED_SUFFIX
    with ExitStack() as stack:
        if encrypt:
            # the age thread pulls the compressed chunks: reading and compressing run there
            ready = encrypting(compressed(), recipients)
        else:
            # reading and compressing run on a helper thread, a few chunks ahead of the
            # stored-bytes hash and the writes here
            produced = compressed()
            ready = stack.enter_context(blocks_ahead(lambda: next(produced, b"")))
        info = storage.put(key, chunks(ready))
    record = StoredObject(
        role=role,
        key=key,
        codec=codec.name,
        size=stored_size,
        sha256=stored_hash.hexdigest(),
        raw_size=raw.size,
        raw_sha256=raw.sha256.hexdigest(),
        encryption=AGE_FORMAT if encrypt else None,
        recipients=keyring.recipient_ids if keyring is not None and encrypt else (),
    )
    if info.size != stored_size:
        raise IntegrityError(
            f"{key} in {storage.name} holds {info.size} bytes after writing {stored_size}; "
            "the write was not complete."
        )
    if verify and not storage.verified_writes:
        verify_stored(storage, record, chunk_bytes=chunk_bytes)
    return record


def _pieces(out: bytes, size: int) -> Iterator[bytes]:
    """``out`` in pieces of at most ``size`` bytes: zstd's multi-threaded compressor hands
    back whole finished jobs at once (tens of MiB), and what waits in a queue must stay
    bounded by the chunk size."""
    if len(out) <= size:
        if out:
            yield out
        return
    view = memoryview(out)
    for start in range(0, len(out), size):
        yield bytes(view[start : start + size])


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
    keyring: Keyring | None = None,
) -> Iterator[BinaryIO]:
    """Stream the decrypted, decompressed content of ``record``; verify it when the block
    exits.  An encrypted record needs an identity for one of its recipients in ``keyring``
    (else one sentence naming the key ids it needs, before anything is read).

    The caller must treat what it read as provisional until the ``with`` block ends
    without an error: damage is detected once every byte has been seen.  Sizes are bounds:
    a read that would pass the recorded ``raw_size`` (or stored ``size``) raises
    :class:`IntegrityError` before the extra bytes reach the caller.
    """
    identities: list[Any] = []
    if record.encryption is not None:
        if record.encryption != AGE_FORMAT:
            raise IntegrityError(
                f"{record.key} in {storage.name} is encrypted with {record.encryption!r}, which "
                "this backupflow cannot read."
            )
        identities = (keyring or Keyring()).age_identities(record.recipients)
    info = storage.stat(record.key)
    if info.size != record.size:
        raise IntegrityError(
            f"{record.key} in {storage.name} is {info.size} bytes but the manifest says "
            f"{record.size}; the stored copy is damaged or incomplete."
        )
    codec = get_codec(record.codec)
    background = HashThread()
    try:
        with ExitStack() as stack:
            handle = stack.enter_context(storage.open(record.key))
            # The stored bytes are read and hashed on a helper thread, a few chunks ahead:
            # disk and network waits overlap decryption and decompression.
            # An encrypted object is decrypted there too, a block at a time.
            stored = HashingReader(handle, limit=record.size, overflow=_longer(storage, record))

            def read_stored() -> bytes:
                return stored.read(chunk_bytes)

            compressed = stack.enter_context(
                reading_ahead(
                    decrypted_blocks(read_stored, identities) if identities else read_stored,
                    progress=progress,
                )
            )
            try:
                plain = HashingReader(
                    codec.reader(compressed),
                    None,
                    background,
                    limit=record.raw_size,
                    overflow=(
                        f"{record.key} in {storage.name} decompresses to more than its recorded "
                        f"{record.raw_size} bytes; the stored copy is damaged."
                    ),
                )
                # Decompression runs on a second helper thread, so that the caller's writes
                # overlap it.
                with reading_ahead(lambda: plain.read(chunk_bytes)) as decompressed:
                    yield decompressed
                    while decompressed.read(chunk_bytes):
                        pass
                # whatever follows the compressed stream is read (hashed, authenticated) too
                while compressed.read(chunk_bytes):
                    pass
            except CODEC_ERRORS as exc:
                raise IntegrityError(
                    f"{record.key} in {storage.name} cannot be decompressed ({exc}); "
                    "the stored copy is damaged."
                ) from exc
            except IntegrityError as exc:
                if record.key in str(exc):
                    raise
                raise IntegrityError(
                    f"{record.key} in {storage.name}: {str(exc)[0].lower()}{str(exc)[1:]}"
                ) from None
    finally:
        background.close()
    if stored.size != record.size or stored.sha256.hexdigest() != record.sha256:
        raise IntegrityError(
            f"{record.key} in {storage.name} does not match its recorded SHA-256; "
            "the stored copy is damaged."
        )
    if plain.size != record.raw_size or not _same_plaintext(
        record, plain.sha256.hexdigest(), keyring
    ):
        raise IntegrityError(
            f"{record.key} in {storage.name} decompresses to data that does not match its "
            "recorded SHA-256; the stored copy is damaged."
        )


def _same_plaintext(record: StoredObject, sha256: str, keyring: Keyring | None) -> bool:
    """Whether the plaintext SHA-256 read agrees with the record.

    A record whose ``raw_sha256`` is a keyed content id can be checked only by a holder of
    the signing key; without it the object is still proven by its stored SHA-256 (which the
    signed manifest records) and, encrypted, by age's authentication of every chunk, and
    the caller checks the plaintext against its own record (a file set's member list).
    """
    if record.raw_digest is None:
        return sha256 == record.raw_sha256
    if keyring is None or keyring.signer is None:
        return True
    return keyring.content_id(sha256) == record.raw_sha256
