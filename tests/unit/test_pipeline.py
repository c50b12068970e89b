"""The streaming pipeline: round trips, damage detection and bounded memory."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import BinaryIO

import pytest

from backupflow.codecs import Codec, get_codec
from backupflow.errors import IntegrityError, ObjectNotFoundError
from backupflow.models import StoredObject
from backupflow.pipeline import open_verified, store_stream, verify_stored
from backupflow.storage.base import ObjectInfo, Storage, get_bytes, put_bytes, validate_key
from backupflow.storage.memory import MemoryStorage

MiB = 1 << 20
KEY = "database/gantt/2026-11-26/20261126T053301Z-full-3f9a1c.data"
CODECS = ["zstd", "gzip", "none"]


def mixed_data(size: int = 5 * MiB + 12_345) -> bytes:
    """Compressible text interleaved with random bytes, not a multiple of any chunk size."""
    text = b"".join(
        b"INSERT INTO tasks VALUES (%d, 'gantt task %d', '2026-11-%02d');\n" % (i, i, i % 28 + 1)
        for i in range(20_000)
    )
    parts: list[bytes] = []
    total = 0
    while total < size:
        part = text[:300_000] if len(parts) % 2 == 0 else os.urandom(200_000)
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:size]


@pytest.fixture(scope="module")
def data() -> bytes:
    return mixed_data()


def store(
    storage: Storage,
    data: bytes,
    codec: Codec,
    *,
    verify: bool = True,
    progress: Callable[[int], None] | None = None,
) -> StoredObject:
    return store_stream(
        storage,
        KEY + codec.extension,
        io.BytesIO(data),
        codec,
        role="data",
        chunk_bytes=256 << 10,
        verify=verify,
        progress=progress,
    )


def read_back(storage: Storage, record: StoredObject, piece: int = 100_003) -> bytes:
    out = bytearray()
    with open_verified(storage, record, chunk_bytes=64 << 10) as handle:
        while block := handle.read(piece):
            out += block
    return bytes(out)


@pytest.mark.parametrize("name", CODECS)
def test_round_trip_returns_the_same_bytes_and_true_checksums(name: str, data: bytes) -> None:
    storage = MemoryStorage()
    codec = get_codec(name)

    record = store(storage, data, codec)

    stored = get_bytes(storage, record.key)
    assert record.role == "data"
    assert record.codec == name
    assert record.raw_size == len(data)
    assert record.raw_sha256 == hashlib.sha256(data).hexdigest()
    assert record.size == len(stored) == storage.stat(record.key).size
    assert record.sha256 == hashlib.sha256(stored).hexdigest()
    assert read_back(storage, record) == data


def test_compression_shrinks_the_text_part(data: bytes) -> None:
    sizes = {name: store(MemoryStorage(), data, get_codec(name)).size for name in CODECS}

    assert sizes["none"] == len(data)
    assert sizes["zstd"] < len(data) * 0.7
    assert sizes["gzip"] < len(data) * 0.7


def test_empty_source_round_trips() -> None:
    storage = MemoryStorage()

    record = store(storage, b"", get_codec("zstd"))

    assert record.raw_size == 0
    assert record.raw_sha256 == hashlib.sha256(b"").hexdigest()
    assert read_back(storage, record) == b""


def test_gzip_objects_are_plain_gzip_files_like_the_seeds(data: bytes) -> None:
    storage = MemoryStorage()

    record = store(storage, data, get_codec("gzip"))

    assert record.key.endswith(".gz")
    stored = get_bytes(storage, record.key)
    assert gzip.decompress(stored) == data
    with gzip.GzipFile(fileobj=io.BytesIO(stored)) as handle:
        assert handle.read() == data


def test_progress_counts_every_raw_byte(data: bytes) -> None:
    seen: list[int] = []

    store(MemoryStorage(), data, get_codec("zstd"), progress=seen.append)

    assert sum(seen) == len(data)


def corrupt(storage: MemoryStorage, key: str, how: str, where: float) -> None:
    stored = bytearray(get_bytes(storage, key))
    if how == "flip":
        index = min(int(len(stored) * where), len(stored) - 1)
        stored[index] ^= 0x5A
    else:
        del stored[int(len(stored) * where) :]
    put_bytes(storage, key, bytes(stored))


DAMAGE = [
    pytest.param("flip", 0.0, id="flip-first-byte"),
    pytest.param("flip", 0.001, id="flip-near-start"),
    pytest.param("flip", 0.5, id="flip-middle"),
    pytest.param("flip", 1.0, id="flip-last-byte"),
    pytest.param("truncate", 0.5, id="truncate-half"),
    pytest.param("truncate", 0.999, id="truncate-tail"),
    pytest.param("truncate", 0.0, id="truncate-all"),
]


@pytest.mark.parametrize(("how", "where"), DAMAGE)
@pytest.mark.parametrize("name", CODECS)
def test_damaged_object_fails_reading_with_an_error_naming_the_key(
    name: str, how: str, where: float, data: bytes
) -> None:
    storage = MemoryStorage()
    record = store(storage, data, get_codec(name))
    corrupt(storage, record.key, how, where)

    with pytest.raises(IntegrityError) as caught:
        read_back(storage, record)

    assert record.key in str(caught.value)


@pytest.mark.parametrize("name", CODECS)
def test_damage_is_reported_even_when_the_reader_stops_early(name: str, data: bytes) -> None:
    storage = MemoryStorage()
    record = store(storage, data, get_codec(name))
    corrupt(storage, record.key, "flip", 0.9)

    with (
        pytest.raises(IntegrityError) as caught,  # raised when the block ends
        open_verified(storage, record) as handle,
    ):
        assert handle.read(1000) == data[:1000]

    assert record.key in str(caught.value)


def test_reading_an_intact_object_partially_is_fine(data: bytes) -> None:
    storage = MemoryStorage()
    record = store(storage, data, get_codec("zstd"))

    with open_verified(storage, record) as handle:
        head = handle.read(4096)

    assert head == data[:4096]


@pytest.mark.parametrize(("how", "where"), DAMAGE)
def test_verify_stored_detects_damage(how: str, where: float, data: bytes) -> None:
    storage = MemoryStorage()
    record = store(storage, data, get_codec("zstd"))
    verify_stored(storage, record)  # intact: no error
    corrupt(storage, record.key, how, where)

    with pytest.raises(IntegrityError) as caught:
        verify_stored(storage, record)

    assert record.key in str(caught.value)


def test_missing_object_is_reported_as_not_found(data: bytes) -> None:
    storage = MemoryStorage()
    record = store(storage, data, get_codec("gzip"))
    storage.delete(record.key)

    with pytest.raises(ObjectNotFoundError):
        read_back(storage, record)
    with pytest.raises(ObjectNotFoundError):
        verify_stored(storage, record)


class DroppingStorage(MemoryStorage):
    """Changes what is written on its way in: the write is incomplete or damaged."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        data = b"".join(chunks)
        if self.mode == "short":
            return super().put(key, [data[:-1]])
        return super().put(key, [data[:-1] + bytes([data[-1] ^ 1])])


def test_store_refuses_an_incomplete_write(data: bytes) -> None:
    storage = DroppingStorage("short")

    with pytest.raises(IntegrityError, match="not complete") as caught:
        store(storage, data, get_codec("zstd"))

    assert KEY in str(caught.value)


def test_store_verifies_what_was_written(data: bytes) -> None:
    storage = DroppingStorage("flip")

    with pytest.raises(IntegrityError) as caught:
        store(storage, data, get_codec("zstd"), verify=True)

    assert KEY in str(caught.value)


# ---------------------------------------------------------------------------- bounded memory


class GeneratedSource:
    """A reader producing ``total`` bytes on demand, hashing them as it goes."""

    def __init__(self, total: int) -> None:
        self.remaining = total
        self.sha256 = hashlib.sha256()
        self.largest_request = 0
        self._text = b"2026-11-26T02:00:00Z task=42 state=done duration=3600\n" * 2000

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            raise AssertionError("the pipeline asked for the whole source at once")
        self.largest_request = max(self.largest_request, size)
        size = min(size, self.remaining)
        if size <= 0:
            return b""
        half = size // 2
        block = (
            os.urandom(half) + (self._text * (1 + (size - half) // len(self._text)))[: size - half]
        )
        self.remaining -= size
        self.sha256.update(block)
        return block

    def readable(self) -> bool:
        return True


class CountingStorage(Storage):
    """Consumes and discards every chunk; remembers only the count and the largest chunk."""

    name = "counting"

    def __init__(self) -> None:
        self.received = 0
        self.largest_chunk = 0
        self.hash = hashlib.sha256()

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        validate_key(key)
        for chunk in chunks:
            self.received += len(chunk)
            self.largest_chunk = max(self.largest_chunk, len(chunk))
            self.hash.update(chunk)
        return ObjectInfo(key, self.received, datetime.now(UTC))

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        raise ObjectNotFoundError(f"{key} was discarded")

    def stat(self, key: str) -> ObjectInfo:
        return ObjectInfo(key, self.received, datetime.now(UTC))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(())

    def delete(self, key: str) -> None:
        return None


@pytest.mark.parametrize("name", ["zstd", "gzip"])
def test_memory_stays_bounded_for_a_large_stream(name: str) -> None:
    total = 256 * MiB
    source = GeneratedSource(total)
    storage = CountingStorage()

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        record = store_stream(
            storage,
            KEY + ".big",
            source,  # type: ignore[arg-type]
            get_codec(name),
            role="data",
            chunk_bytes=MiB,
            verify=False,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 64 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"
    assert source.largest_request <= MiB
    assert record.raw_size == total
    assert record.raw_sha256 == source.sha256.hexdigest()
    assert record.size == storage.received > total // 3
    assert record.sha256 == storage.hash.hexdigest()
