"""Streaming age encryption of stored objects (compression first, then encryption).

pyrage's ``encrypt_io`` copies a whole stream in Rust; it runs on a helper thread between a
reader and a bounded queue, so memory stays at a few chunks whatever the object's size, and
the rest of the pipeline keeps its generator / reader shape.  Decryption reads the same
files block by block with :mod:`backupflow.agefile` (pyrage's streaming reader crosses into
Python every 8 KiB, which halves a restore's speed).  A stored object is a plain binary age
file: ``age -d -i key.txt obj.zst.age | zstd -d`` reads it.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

import pyrage

from backupflow.agefile import AgeDecryptor, identity_secret
from backupflow.readahead import BlockReader

__all__ = ["AGE_FORMAT", "decrypted_blocks", "decrypting", "encrypting"]

AGE_FORMAT = "age-v1-x25519"
_QUEUE_CHUNKS = 8
_DONE = object()


class _Cancelled(Exception):
    """The consumer stopped early; the helper thread unwinds."""


class _IterReader(io.RawIOBase):
    """A raw reader over an iterator of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            try:
                self._rest = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]  # a view: no copy of what is left
        return size


class _QueueWriter(io.RawIOBase):
    """A raw writer that hands each write to a bounded queue (the helper thread's output)."""

    def __init__(self, out: queue.Queue[Any], cancelled: threading.Event) -> None:
        self._out = out
        self._cancelled = cancelled

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        block = bytes(data)
        while True:
            if self._cancelled.is_set():
                raise _Cancelled
            try:
                self._out.put(block, timeout=0.1)
                return len(block)
            except queue.Full:
                continue


def _run(work: Any, out: queue.Queue[Any], cancelled: threading.Event) -> threading.Thread:
    def target() -> None:
        try:
            work()
            item: Any = _DONE
        except BaseException as exc:  # handed to the consumer
            item = exc
        while not cancelled.is_set():
            try:
                out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=target, name="age", daemon=True)
    thread.start()
    return thread


def encrypting(chunks: Iterable[bytes], recipients: Sequence[Any]) -> Iterator[bytes]:
    """The age encryption of ``chunks`` to ``recipients``, as chunks."""
    out: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_CHUNKS)
    cancelled = threading.Event()
    source = io.BufferedReader(_IterReader(chunks), 1 << 16)
    sink = io.BufferedWriter(_QueueWriter(out, cancelled), 1 << 20)

    def work() -> None:
        pyrage.encrypt_io(source, sink, list(recipients))
        sink.flush()

    thread = _run(work, out, cancelled)
    try:
        while True:
            item = out.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancelled.set()
        thread.join(timeout=5)


def decrypted_blocks(read: Callable[[], bytes], identities: Sequence[Any]) -> Callable[[], bytes]:
    """A function that returns the next block of plaintext of the age file whose bytes
    ``read`` returns block by block (``b""`` at the end, once the last chunk is checked).
    ``identities`` are pyrage X25519 identities; an object that does not decrypt, or fails
    authentication anywhere, is an :class:`IntegrityError`, never wrong data."""
    decryptor = AgeDecryptor([identity_secret(str(identity)) for identity in identities])
    finished = False

    def next_block() -> bytes:
        nonlocal finished
        while not finished:
            data = read()
            if not data:
                finished = True
                return decryptor.finish()
            plain = decryptor.update(data)
            if plain:
                return plain
        return b""

    return next_block


@contextmanager
def decrypting(
    stored: BinaryIO, identities: Sequence[Any], *, chunk_bytes: int = 1 << 20
) -> Iterator[BinaryIO]:
    """A reader of the plaintext of the age file ``stored`` (authenticated chunk by chunk:
    a tampered byte is an IntegrityError, never wrong data; a whole file replaced by another
    encrypted to the same recipient is caught only by the manifest's SHA-256)."""
    blocks = decrypted_blocks(lambda: stored.read(chunk_bytes), identities)
    yield cast(BinaryIO, io.BufferedReader(BlockReader(blocks), 1 << 16))
