"""Producing blocks ahead of their consumer, on a helper thread (stored objects read ahead,
chunks compressed ahead).

A restore reads the stored bytes, hashes them, decrypts and decompresses them, hashes the
result and writes it; a backup reads, hashes and compresses, then hashes and writes.  Done on
one thread, every read from a cold disk (or a socket) and every write stalls the rest.
:func:`blocks_ahead` runs the first stages on a helper thread that stays at most ``blocks``
blocks ahead of the consumer (:func:`reading_ahead` gives them as a reader): file and socket
I/O, ``hashlib``, zstd and the AEAD release the GIL, so the stages overlap on the cores, and
memory stays at ``blocks`` x the block size.

An error on the helper thread (a damaged or unreadable object) is raised in the consumer at
the point where the bytes would have been; a consumer that stops early stops the helper.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

__all__ = ["BlockReader", "blocks_ahead", "reading_ahead"]

_DONE = object()
_POLL_SECONDS = 0.1
_JOIN_SECONDS = 5.0


class _Stopped(Exception):
    """The consumer left; the helper thread unwinds."""


class BlockReader(io.RawIOBase):
    """A raw reader over a function that returns blocks (``b""`` at the end); ``progress``
    counts the bytes of each block as it is taken."""

    def __init__(
        self, next_block: Callable[[], bytes], progress: Callable[[int], None] | None = None
    ) -> None:
        self._next = next_block
        self._progress = progress
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._rest:
            block = self._next()
            self._rest = memoryview(block)
            if self._progress is not None and block:
                self._progress(len(block))
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]  # a view: what is left is not copied
        return size


class _AheadStream:
    """The consumer's side of :func:`reading_ahead`: a read fills the request from the blocks
    in order, as a buffered file does, except that bytes which arrived before an error are
    handed out first and the error is raised by the next read (so a consumer sees exactly
    the bytes that were good, never fewer)."""

    def __init__(self, blocks: Iterator[bytes], progress: Callable[[int], None] | None) -> None:
        self._blocks = blocks
        self._progress = progress
        self._rest = memoryview(b"")
        self._error: Exception | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        want = -1 if size is None or size < 0 else size
        parts: list[memoryview] = []
        got = 0
        while want < 0 or got < want:
            if not self._rest:
                try:
                    block = next(self._blocks, b"")
                except Exception as exc:
                    if not got:
                        raise
                    self._error = exc
                    break
                if not block:
                    break
                if self._progress is not None:
                    self._progress(len(block))
                self._rest = memoryview(block)
            take = len(self._rest) if want < 0 else min(want - got, len(self._rest))
            parts.append(self._rest[:take])
            self._rest = self._rest[take:]
            got += take
        return b"".join(parts)

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextmanager
def blocks_ahead(next_block: Callable[[], bytes], *, blocks: int = 8) -> Iterator[Iterator[bytes]]:
    """The blocks ``next_block`` returns (``b""`` at the end), produced on a helper thread up
    to ``blocks`` blocks ahead of the consumer."""
    ahead: queue.Queue[Any] = queue.Queue(maxsize=blocks)
    stopped = threading.Event()

    def hand_over(item: Any) -> None:
        while True:
            if stopped.is_set():
                raise _Stopped
            try:
                ahead.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def run() -> None:
        try:
            while block := next_block():
                hand_over(block)
            hand_over(_DONE)
        except _Stopped:
            return
        except BaseException as exc:  # raised in the consumer, where the bytes would be
            try:
                hand_over(exc)
            except _Stopped:
                return

    def consumed() -> Iterator[bytes]:
        while True:
            item = ahead.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    thread = threading.Thread(target=run, name="read-ahead", daemon=True)
    thread.start()
    try:
        yield consumed()
    finally:
        stopped.set()
        # Bounded: a helper stuck in a read of a stalled source (a hung dump process) must
        # not keep the caller from cleaning up, which is what ends that read.
        thread.join(timeout=_JOIN_SECONDS)


@contextmanager
def reading_ahead(
    next_block: Callable[[], bytes],
    *,
    blocks: int = 8,
    progress: Callable[[int], None] | None = None,
) -> Iterator[BinaryIO]:
    """A reader of the blocks ``next_block`` returns (``b""`` at the end), called on a
    helper thread up to ``blocks`` blocks ahead of the reader.  ``progress`` counts the
    bytes as the consumer takes them."""
    with blocks_ahead(next_block, blocks=blocks) as produced:
        yield cast(BinaryIO, _AheadStream(produced, progress))
