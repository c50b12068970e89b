"""Reading a stored object ahead of its consumer, on a helper thread.

A restore reads the stored bytes, hashes them, decrypts and decompresses them, hashes the
result and writes it.  Done on one thread, every read from a cold disk (or a socket) stalls
the rest.  :func:`reading_ahead` moves the reads, and whatever the caller wants done to each
block as it arrives (hashing), to a helper thread that stays at most ``blocks`` blocks ahead
of the consumer: the file and socket reads and ``hashlib`` release the GIL, so they overlap
decompression on another core, and memory stays at ``blocks`` x ``chunk_bytes``.

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

__all__ = ["reading_ahead"]

_DONE = object()
_POLL_SECONDS = 0.1


class _Stopped(Exception):
    """The consumer left; the helper thread unwinds."""


class _AheadReader(io.RawIOBase):
    """The consumer's side: blocks from the queue, in order."""

    def __init__(self, blocks: queue.Queue[Any], progress: Callable[[int], None] | None) -> None:
        self._blocks = blocks
        self._progress = progress
        self._rest = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest and not self._done:
            item = self._blocks.get()
            if item is _DONE:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                raise item
            else:
                self._rest = memoryview(item)
                if self._progress is not None:
                    self._progress(len(item))
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]  # a view: what is left is not copied
        return size


@contextmanager
def reading_ahead(
    read_block: Callable[[], bytes],
    *,
    blocks: int = 8,
    buffer_bytes: int = 1 << 16,
    progress: Callable[[int], None] | None = None,
) -> Iterator[BinaryIO]:
    """A buffered reader of the blocks ``read_block`` returns (``b""`` at the end), called on
    a helper thread up to ``blocks`` blocks ahead of the reader.  ``progress`` counts the
    bytes as the consumer takes them."""
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
            while block := read_block():
                hand_over(block)
            hand_over(_DONE)
        except _Stopped:
            return
        except BaseException as exc:  # raised in the consumer, where the bytes would be
            try:
                hand_over(exc)
            except _Stopped:
                return

    thread = threading.Thread(target=run, name="read-ahead", daemon=True)
    thread.start()
    try:
        yield cast(BinaryIO, io.BufferedReader(_AheadReader(ahead, progress), buffer_bytes))
    finally:
        stopped.set()
        thread.join()
