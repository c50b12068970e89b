"""Issue 12, class 6: sizes from a manifest are bounds, not hints.

Written as someone with write access to a tier would try it: the object and its manifest are
both theirs to rewrite, so a forged record can carry matching checksums.  What must hold: no
consumer receives more than the recorded size, a small SQLite delta cannot make a large file,
and a restore that cannot fit is refused before it writes anything.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sqlite3
import struct
import tracemalloc
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from backupflow.backup import source_of
from backupflow.codecs import get_codec
from backupflow.config import Settings
from backupflow.engines import open_engine
from backupflow.engines.base import BackupSource
from backupflow.engines.sqlite import DELTA_MAGIC, SqliteEngine
from backupflow.errors import EngineError, IntegrityError, RestoreTargetError
from backupflow.models import BackupKind, Manifest, StoredObject
from backupflow.pipeline import open_verified, store_stream, verify_stored
from backupflow.restore import LoadedPlan, execute_restore, load_plan
from backupflow.storage import LocalStorage, MemoryStorage, open_tiers
from backupflow.storage.base import ObjectInfo
from backupflow.tiers import copy_object
from tests.support.chain import restore, take_backup
from tests.support.keys import KEYRING

MiB = 1 << 20
KEY = "database/gantt/2026-11-26/20261126T053301Z-full-3f9a1c.data"
END = struct.pack(">Q", 0xFFFF_FFFF_FFFF_FFFF)


# -- oversize streams -----------------------------------------------------------------------


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, produced on demand (never held in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _forged(storage: MemoryStorage, codec: str, real_size: int, claimed: int) -> StoredObject:
    """A stored object of ``real_size`` zeros whose record claims ``claimed`` raw bytes (the
    attacker rewrote the manifest; the stored checksums still match the stored bytes)."""
    chosen = get_codec(codec)
    honest = store_stream(
        storage, KEY + chosen.extension, io.BufferedReader(_Zeros(real_size)), chosen, role="data"
    )
    return honest.model_copy(update={"raw_size": claimed})


@pytest.mark.parametrize("codec", ["zstd", "gzip", "none"])
def test_a_stream_longer_than_its_raw_size_stops_at_the_first_extra_byte(codec: str) -> None:
    storage = MemoryStorage()
    real = 256 * MiB if codec != "none" else 4 * MiB  # "none" keeps the bytes in memory
    record = _forged(storage, codec, real, claimed=1024)
    received = 0
    with (
        pytest.raises(IntegrityError, match="decompresses to more than its recorded 1024 bytes"),
        open_verified(storage, record, chunk_bytes=64 << 10) as handle,
    ):
        while block := handle.read(65536):
            received += len(block)
    assert received == 1024  # the engine saw what the record allows, never more


@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_read_everything_of_an_oversize_stream_is_refused_with_bounded_memory(codec: str) -> None:
    storage = MemoryStorage()
    record = _forged(storage, codec, 64 * MiB if codec == "zstd" else 4 * MiB, claimed=1024)
    tracemalloc.start()
    try:
        with (
            pytest.raises(IntegrityError, match="more than its recorded 1024 bytes"),
            open_verified(storage, record) as handle,
        ):
            handle.read()  # "everything" may not mean 64 MiB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB


def test_a_stream_shorter_than_its_raw_size_is_still_refused() -> None:
    storage = MemoryStorage()
    record = _forged(storage, "zstd", 4096, claimed=8192)
    with pytest.raises(IntegrityError, match="does not match its recorded SHA-256"):  # noqa: SIM117
        with open_verified(storage, record) as handle:
            assert len(handle.read()) == 4096


class _GrowingStorage(MemoryStorage):
    """Reports the recorded size but serves more bytes (replaced between stat and get)."""

    def __init__(self) -> None:
        super().__init__()
        self.extra = b""
        self.served = 0

    def stat(self, key: str) -> ObjectInfo:
        info = super().stat(key)
        return ObjectInfo(key, info.size - len(self.extra), info.modified)

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        @contextmanager
        def opened() -> Iterator[BinaryIO]:
            with MemoryStorage.open(self, key) as handle:
                yield _Counting(handle, self)

        return opened()


class _Counting(io.RawIOBase):
    def __init__(self, inner: BinaryIO, owner: _GrowingStorage) -> None:
        self.inner = inner
        self.owner = owner

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self.inner.read(-1 if size is None else size)
        self.owner.served += len(data)
        return data


def test_stored_bytes_beyond_the_recorded_size_are_refused() -> None:
    storage = _GrowingStorage()
    data = os.urandom(MiB)
    honest = store_stream(storage, KEY, io.BytesIO(data), get_codec("none"), role="data")
    storage.extra = os.urandom(2 * MiB)
    storage.put(KEY, [data, storage.extra])  # the object grows after the record was written
    storage.served = 0
    received = 0
    with (
        pytest.raises(IntegrityError, match=f"holds more than its recorded {honest.size} bytes"),
        open_verified(storage, honest, chunk_bytes=64 << 10) as handle,
    ):
        while block := handle.read(65536):
            received += len(block)
    assert received <= honest.raw_size
    assert storage.served <= honest.size + (64 << 10)  # the rest was never even read
    with pytest.raises(IntegrityError, match="holds more than its recorded"):
        verify_stored(storage, honest, chunk_bytes=64 << 10)


# -- SQLite deltas --------------------------------------------------------------------------


def _make_db(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}" * 5,) for i in range(3000)])
    conn.close()


@pytest.fixture
def chain(settings: Settings) -> tuple[SqliteEngine, BackupSource, Manifest, bytes]:
    """A real full backup (as stored) and a real diff's manifest and delta bytes."""
    live = settings.database.sqlite_path
    _make_db(live)
    full = take_backup(settings, BackupKind.FULL)
    conn = sqlite3.connect(live)
    with conn:
        conn.execute("UPDATE t SET v = 'changed' WHERE id % 50 = 0")
    conn.close()
    diff = take_backup(settings, BackupKind.DIFF)
    primary = open_tiers(settings)[0].storage
    with open_verified(primary, diff.object("data"), keyring=KEYRING) as handle:
        delta = handle.read()
    engine = open_engine(settings)
    assert isinstance(engine, SqliteEngine)
    return engine, source_of(primary, full, chunk_bytes=1 << 20, keyring=KEYRING), diff, delta


def _step(manifest: Manifest, delta: bytes, **position: Any) -> BackupSource:
    forged = manifest.model_copy(update={"position": {**manifest.position, **position}})

    def open_object(role: str) -> AbstractContextManager[BinaryIO]:
        assert role == "data"
        return nullcontext(io.BytesIO(delta))

    return BackupSource(manifest=forged, open_object=open_object)


def _delta(page_size: int, page_count: int, pages: Iterable[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack(">Q", n) + data for n, data in pages)
    return DELTA_MAGIC + struct.pack(">IQ", page_size, page_count) + body + END


def _restore_refused(
    engine: SqliteEngine, full: BackupSource, step: BackupSource, scratch: Path, match: str
) -> None:
    with pytest.raises(IntegrityError, match=match):
        engine.restore([full, step], scratch)
    written = os.stat(scratch) if scratch.exists() else None
    full_size = full.manifest.object("data").raw_size
    bound = full_size + (1 << 16)  # the full and at most a few pages the delta really holds
    assert written is None or written.st_size <= bound  # nothing large, not even sparse
    assert written is None or written.st_blocks * 512 <= bound


def test_the_real_delta_applies(chain: Any, tmp_path: Path) -> None:
    engine, full, diff, delta = chain
    engine.restore([full, _step(diff, delta)], tmp_path / "ok.db")
    digest = hashlib.sha256((tmp_path / "ok.db").read_bytes()).hexdigest()
    assert digest == diff.position["state_sha256"]


def test_a_36_byte_delta_claiming_a_terabyte_makes_no_large_file(
    chain: Any, tmp_path: Path
) -> None:
    engine, full, diff, _ = chain
    pages = (1 << 40) // 4096
    delta = _delta(4096, pages, []) + END  # magic, header, end marker and a trailing one
    assert len(delta) == 36
    step = _step(diff, delta, page_count=pages)
    _restore_refused(engine, full, step, tmp_path / "a.db", "without holding the new pages")


def test_a_delta_whose_header_disagrees_with_its_manifest_is_refused(
    chain: Any, tmp_path: Path
) -> None:
    engine, full, diff, _ = chain
    pages = diff.position["page_count"]
    bigger = _delta(4096, 1 << 28, [])
    _restore_refused(engine, full, _step(diff, bigger), tmp_path / "b.db", "manifest records")
    other_size = _delta(8192, pages, [])
    _restore_refused(engine, full, _step(diff, other_size), tmp_path / "c.db", "8192 bytes")


@pytest.mark.parametrize(
    ("position", "match"),
    [
        ({"page_size": 3000}, "invalid page size 3000"),
        ({"page_size": 256}, "invalid page size 256"),
        ({"page_size": 131072}, "invalid page size 131072"),
        ({"page_size": "4096"}, "invalid page size '4096'"),
        ({"page_size": 4096.0}, "invalid page size 4096.0"),
        ({"page_size": True}, "invalid page size True"),
        ({"page_count": 0}, "invalid page count 0"),
        ({"page_count": -1}, "invalid page count -1"),
        ({"page_count": 1 << 40}, "invalid page count"),
        ({"page_count": None}, "invalid page count None"),
        ({"state_sha256": "../../etc"}, "invalid state SHA-256"),
        ({"parent_state_sha256": 7}, "invalid parent state SHA-256"),
    ],
)
def test_malformed_positions_are_refused_before_anything_is_written(
    chain: Any, tmp_path: Path, position: dict[str, Any], match: str
) -> None:
    engine, full, diff, delta = chain
    scratch = tmp_path / "p.db"
    with pytest.raises(IntegrityError, match=match):
        engine.restore([full, _step(diff, delta, **position)], scratch)
    assert not scratch.exists()


def test_a_delta_on_top_of_another_state_is_refused_before_writing(
    chain: Any, tmp_path: Path
) -> None:
    engine, full, diff, delta = chain
    step = _step(diff, delta, parent_state_sha256="0" * 64)
    with pytest.raises(IntegrityError, match="taken on top of a different state"):
        engine.restore([full, step], tmp_path / "s.db")
    assert not (tmp_path / "s.db").exists()


def test_a_full_whose_size_is_not_its_page_layout_is_refused(chain: Any, tmp_path: Path) -> None:
    engine, full, _diff, _ = chain
    forged = full.manifest.model_copy(
        update={"position": {**full.manifest.position, "page_count": 1 << 28}}
    )
    source = BackupSource(manifest=forged, open_object=full.open_object)
    with pytest.raises(IntegrityError, match="records 268435456 pages of 4096 bytes"):
        engine.restore([source], tmp_path / "f.db")
    assert not (tmp_path / "f.db").exists()


def test_page_numbers_out_of_range_or_out_of_order_are_refused(chain: Any, tmp_path: Path) -> None:
    engine, full, diff, _ = chain
    pages = diff.position["page_count"]
    page = bytes(4096)
    cases = [
        ("beyond the database's end", [(pages, page)]),
        ("beyond the database's end", [(0xFFFF_FFFF_FFFF_FFFE, page)]),
        ("lists page 3 after page 5", [(5, page), (3, page)]),
        ("lists page 5 after page 5", [(5, page), (5, page)]),
    ]
    for n, (match, listed) in enumerate(cases):
        delta = _delta(4096, pages, listed)
        _restore_refused(engine, full, _step(diff, delta), tmp_path / f"o{n}.db", match)


def test_growth_must_be_held_by_the_delta(chain: Any, tmp_path: Path) -> None:
    engine, full, diff, _ = chain
    old = full.manifest.position["page_count"]
    page = bytes(4096)
    skipping = _delta(4096, old + 3, [(old, page), (old + 2, page)])
    step = _step(diff, skipping, page_count=old + 3)
    _restore_refused(engine, full, step, tmp_path / "g.db", f"skips pages before page {old + 2}")
    trailing = _delta(4096, old, []) + b"junk"
    step = _step(diff, trailing, page_count=old)
    _restore_refused(engine, full, step, tmp_path / "t.db", "data after its end marker")


# -- free space -----------------------------------------------------------------------------


def _usage(free: int) -> Any:
    return shutil._ntuple_diskusage(1 << 40, (1 << 40) - free, free)  # type: ignore[attr-defined]


def test_a_restore_that_cannot_fit_is_refused_before_it_starts(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = settings.database.sqlite_path
    _make_db(live)
    full = take_backup(settings, BackupKind.FULL)
    asked: list[str] = []

    def tight(path: Any) -> Any:
        asked.append(os.fspath(path))
        return _usage(free=full.object("data").raw_size - 1)

    monkeypatch.setattr(shutil, "disk_usage", tight)
    target = tmp_path / "restores" / "new" / "gantt.db"
    with pytest.raises(RestoreTargetError, match=r"^the restore needs .* free; free some space"):
        restore(settings, None, target)
    assert asked == [str(tmp_path)]  # the filesystem the restore would be built on
    assert not (tmp_path / "restores").exists()  # refused before any folder was made
    monkeypatch.undo()
    _, outcome = restore(settings, None, target)  # the same restore fits the real disk
    assert outcome.target == target


def test_a_replace_that_cannot_fit_leaves_the_live_database_alone(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = settings.database.sqlite_path
    _make_db(live)
    take_backup(settings, BackupKind.FULL)
    before = live.read_bytes()
    asked: list[str] = []

    def none_left(path: Any) -> Any:
        asked.append(os.fspath(path))
        return _usage(free=0)

    monkeypatch.setattr(shutil, "disk_usage", none_left)
    with pytest.raises(RestoreTargetError, match="has only 0 bytes free"):
        restore(settings, None, live, replace=True)
    assert asked == [str(live.parent)]
    assert live.read_bytes() == before
    assert sorted(p.name for p in live.parent.iterdir()) == ["gantt.db"]


def test_a_chain_claiming_more_than_the_real_disk_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    """No monkeypatch: the real statvfs of the target's filesystem answers."""
    live = settings.database.sqlite_path
    _make_db(live)
    take_backup(settings, BackupKind.FULL)
    take_backup(settings, BackupKind.LOG)
    loaded = load_plan(
        open_tiers(settings), open_engine(settings), "gantt", None, datetime.now(UTC)
    )
    last = loaded.plan.last
    huge = last.model_copy(
        update={"position": {**last.position, "page_size": 65536, "page_count": 0xFFFF_FFFE}}
    )
    forged = LoadedPlan(
        plan=loaded.plan.with_manifests(
            {**{m.id: m for m in loaded.plan.manifests}, last.id: huge}
        ),
        sources=loaded.sources,
    )
    target = tmp_path / "r" / "gantt.db"
    engine = open_engine(settings)
    with pytest.raises(RestoreTargetError, match=r"needs 256\.0 TiB"):
        execute_restore(engine, forged, target, replace=False, chunk_bytes=1 << 20)
    assert not (tmp_path / "r").exists()


def test_a_snapshot_that_cannot_fit_the_staging_disk_is_refused(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_db(settings.database.sqlite_path)
    asked: list[str] = []

    def none_left(path: Any) -> Any:
        asked.append(os.fspath(path))
        return _usage(free=1000)

    monkeypatch.setattr(shutil, "disk_usage", none_left)
    with pytest.raises(EngineError, match="BACKUPFLOW_STAGING_DIR to a larger disk"):
        take_backup(settings, BackupKind.FULL)
    assert asked and all(p.startswith(str(settings.staging_dir)) for p in asked)
    assert [p for p in settings.staging_dir.rglob("*") if p.is_file()] == []


def test_a_tier_copy_stops_at_the_recorded_size(tmp_path: Path) -> None:
    source = _GrowingStorage()
    data = os.urandom(MiB)
    record = store_stream(source, KEY, io.BytesIO(data), get_codec("none"), role="data")
    source.extra = os.urandom(4 * MiB)
    source.put(KEY, [data, source.extra])
    source.served = 0
    dest = LocalStorage(tmp_path / "dr")
    with pytest.raises(IntegrityError, match="holds more than its recorded"):
        copy_object(source, dest, record, chunk_bytes=64 << 10, write_once=False)
    assert source.served <= record.size + 1
    assert [p for p in (tmp_path / "dr").rglob("*") if p.is_file()] == []  # no copy, no debris


class _RecordingPuts(MemoryStorage):
    """Remembers the size of every piece a put was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[int] = []

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        def recorded() -> Iterator[bytes]:
            for chunk in chunks:
                self.pieces.append(len(chunk))
                yield chunk

        return super().put(key, recorded())


@pytest.mark.parametrize("encrypt", [False, True])
def test_a_backup_hands_its_storage_pieces_no_larger_than_the_chunk_size(encrypt: bool) -> None:
    """zstd's multi-threaded compressor returns whole finished jobs (tens of MiB at once);
    what is queued and written stays within the chunk size whatever the input."""
    from backupflow.codecs import ZstdCodec

    storage = _RecordingPuts()
    data = (os.urandom(MiB) + bytes(3 * MiB)) * 12  # 48 MiB, jobs of several MiB
    record = store_stream(
        storage,
        "database/x/data.zst",
        io.BytesIO(data),
        ZstdCodec(3, -1),
        role="data",
        chunk_bytes=256 << 10,
        keyring=KEYRING if encrypt else None,
    )
    largest = MiB if encrypt else 256 << 10  # age's writer flushes at most 1 MiB
    assert max(storage.pieces) <= largest
    assert sum(storage.pieces) == record.size
    with open_verified(storage, record, keyring=KEYRING) as handle:
        assert handle.read() == data
