"""Blocks produced ahead on a helper thread: in order, bounded, errors where the bytes would
be, and no thread left behind whatever the consumer does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from backupflow.errors import IntegrityError
from backupflow.readahead import blocks_ahead, reading_ahead


def _counting(blocks: list[bytes]) -> tuple[Callable[[], bytes], list[int]]:
    produced = [0]
    it = iter(blocks)

    def next_block() -> bytes:
        block = next(it, b"")
        if block:
            produced[0] += 1
        return block

    return next_block, produced


def test_every_block_arrives_in_order() -> None:
    blocks = [bytes([i]) * (1000 + i) for i in range(50)]
    with reading_ahead(_counting(blocks)[0], blocks=3) as reader:
        assert reader.read() == b"".join(blocks)


def test_the_producer_stays_a_bounded_number_of_blocks_ahead() -> None:
    next_block, produced = _counting([b"x" * 100] * 1000)
    with blocks_ahead(next_block, blocks=4) as ahead:
        assert next(ahead) == b"x" * 100
        deadline = time.monotonic() + 30
        while produced[0] < 6 and time.monotonic() < deadline:
            time.sleep(0.01)  # let the helper fill the queue as far as it may
        time.sleep(0.2)
        assert produced[0] <= 1 + 4 + 1  # taken, queued, and one in the helper's hands


def _failing_at(call: int) -> Callable[[], bytes]:
    """Blocks of b"ok", then (at call number ``call``) a damaged copy."""
    calls = [0]

    def next_block() -> bytes:
        calls[0] += 1
        if calls[0] == call:
            raise IntegrityError("the stored copy is damaged.")
        return b"ok"

    return next_block


def test_an_error_in_the_helper_is_raised_where_the_bytes_would_be() -> None:
    with reading_ahead(_failing_at(3)) as reader:
        assert reader.read(4) == b"okok"
        with pytest.raises(IntegrityError, match="damaged"):
            reader.read(1)


@pytest.mark.parametrize("stop", ["early", "error"])
def test_a_consumer_that_stops_leaves_no_thread_behind(stop: str) -> None:
    before = threading.active_count()
    endless: Callable[[], bytes] = lambda: b"y" * 4096  # noqa: E731
    with pytest.raises(RuntimeError, match="consumer"):  # noqa: SIM117
        with reading_ahead(endless, blocks=2) as reader:
            reader.read(10)
            if stop == "error":
                raise RuntimeError("the consumer failed")
            raise RuntimeError("the consumer had enough")
    assert threading.active_count() == before


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("stop", ["early", "damaged"])
def test_a_restore_stream_left_midway_or_damaged_leaves_no_thread_behind(
    encrypted: bool, stop: str
) -> None:
    import io
    import os

    from backupflow.codecs import get_codec
    from backupflow.pipeline import open_verified, store_stream
    from backupflow.storage.memory import MemoryStorage
    from tests.support.keys import KEYRING

    storage = MemoryStorage()
    data = os.urandom(3 << 20) + bytes(3 << 20)
    record = store_stream(
        storage,
        "database/x/data.zst",
        io.BytesIO(data),
        get_codec("zstd"),
        role="data",
        keyring=KEYRING if encrypted else None,
        chunk_bytes=1 << 18,
    )
    if stop == "damaged":
        with storage.open(record.key) as handle:
            stored = bytearray(handle.read())
        stored[len(stored) // 2] ^= 0x40
        storage.put(record.key, [bytes(stored)])
    before = threading.active_count()
    with pytest.raises((IntegrityError, RuntimeError)):  # noqa: SIM117
        with open_verified(storage, record, keyring=KEYRING, chunk_bytes=1 << 18) as plain:
            assert plain.read(1000) == data[:1000]
            if stop == "early":
                raise RuntimeError("the consumer had enough")
            plain.read()
    assert threading.active_count() == before


def test_bytes_before_an_error_are_handed_out_before_it() -> None:
    with reading_ahead(_failing_at(3)) as reader:
        assert reader.read(10) == b"okok"  # what was good, though fewer than asked
        with pytest.raises(IntegrityError, match="damaged"):
            reader.read(10)
