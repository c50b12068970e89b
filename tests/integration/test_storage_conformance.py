"""One conformance suite for every storage tier (the contract in ``storage/base.py``).

Then the parts only one kind of tier has (the temporary files of LocalStorage), and the
capabilities every wrapper must forward.
"""

from __future__ import annotations

import dataclasses
import os
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from backupflow.errors import IntegrityError, InvalidKeyError, ObjectNotFoundError
from backupflow.storage import (
    LocalStorage,
    MemoryStorage,
    S3Storage,
    Storage,
    StorageCapabilities,
    StorageWrapper,
    Tier,
)
from backupflow.storage.s3 import ObjectLock
from tests.conftest import need
from tests.support.keys import KEYRING
from tests.support.s3 import client_for, make_bucket

KEY = "database/gantt/2026-11-26/20261126T053301Z-full-3f9a1c.data.zst"


@pytest.fixture(params=["local", "memory", "wrapped-local", "s3-mock", "s3-server"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """Every backend: folders, memory, and S3 through moto in-process and over HTTP."""
    root = tmp_path / "repo"
    if request.param == "local":
        yield LocalStorage(root)
    elif request.param == "memory":
        yield MemoryStorage()
    elif request.param == "wrapped-local":
        yield StorageWrapper(LocalStorage(root))
    elif request.param == "s3-mock":
        request.getfixturevalue("aws_env")
        with mock_aws():
            client = client_for("ap-northeast-2")
            make_bucket(client, "conformance", "ap-northeast-2")
            yield S3Storage(client, "conformance", "tier-prefix", part_bytes=5 << 20)
    else:
        server = request.getfixturevalue("moto_server")
        bucket = f"conformance-{uuid.uuid4().hex[:12]}"
        client = client_for("ap-northeast-1", server.url)
        make_bucket(client, bucket, "ap-northeast-1")
        yield S3Storage(client, bucket, part_bytes=5 << 20, max_concurrency=2)


@pytest.fixture(params=["local", "wrapped-local"])
def local(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    inner = LocalStorage(tmp_path / "repo")
    return inner if request.param == "local" else StorageWrapper(inner)


def root_of(storage: Storage) -> Path:
    inner = storage.inner if isinstance(storage, StorageWrapper) else storage
    assert isinstance(inner, LocalStorage)
    return inner.root


def read(storage: Storage, key: str, piece: int = 65_537) -> bytes:
    out = bytearray()
    with storage.open(key) as handle:
        while block := handle.read(piece):
            out += block
    return bytes(out)


def keys(storage: Storage, prefix: str = "") -> list[str]:
    return [info.key for info in storage.list(prefix)]


def temp_files(root: Path) -> list[Path]:
    return [
        Path(dirpath) / name
        for dirpath, _dirs, names in os.walk(root)
        for name in names
        if name.startswith(".tmp-")
    ]


def failing_chunks(good: int) -> Iterator[bytes]:
    for _ in range(good):
        yield os.urandom(100_000)
    raise RuntimeError("source died midway")


# ------------------------------------------------------------------------ the common contract


def test_put_then_open_returns_the_concatenated_chunks(storage: Storage) -> None:
    rng = random.Random(7)
    chunks = [os.urandom(rng.randrange(0, 40_000)) for _ in range(150)] + [b""]
    expected = b"".join(chunks)

    info = storage.put(KEY, iter(chunks))

    assert info.key == KEY
    assert info.size == len(expected)
    assert read(storage, KEY) == expected


def test_stat_gives_size_and_a_recent_utc_time(storage: Storage) -> None:
    storage.put(KEY, [b"x" * 12_345])

    info = storage.stat(KEY)

    assert info.key == KEY
    assert info.size == 12_345
    assert info.modified.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - info.modified) < timedelta(minutes=5)


def test_empty_object(storage: Storage) -> None:
    info = storage.put(KEY, [])

    assert info.size == 0
    assert storage.stat(KEY).size == 0
    assert read(storage, KEY) == b""
    assert keys(storage) == [KEY]


STORED_KEYS = [
    "database/gantt/2026-11-26/b.data.zst",
    "database/gantt/2026-11-25/z.manifest.json",
    "database/gantt/2026-11-26/a.manifest.json",
    "database/gantt2/2026-11-26/x.data.zst",
    "database/gan",
    "config/app/settings.tar.gz",
    "top-level",
]


@pytest.fixture
def filled(storage: Storage) -> Storage:
    for index, key in enumerate(random.Random(3).sample(STORED_KEYS, len(STORED_KEYS))):
        storage.put(key, [b"#" * (index + 1)])
    return storage


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        pytest.param(
            "database/gantt/",
            [
                "database/gantt/2026-11-25/z.manifest.json",
                "database/gantt/2026-11-26/a.manifest.json",
                "database/gantt/2026-11-26/b.data.zst",
            ],
            id="folder",
        ),
        pytest.param(
            "database/gantt/2026-11-26/",
            ["database/gantt/2026-11-26/a.manifest.json", "database/gantt/2026-11-26/b.data.zst"],
            id="subfolder",
        ),
        pytest.param(
            "database/gantt",
            [
                "database/gantt/2026-11-25/z.manifest.json",
                "database/gantt/2026-11-26/a.manifest.json",
                "database/gantt/2026-11-26/b.data.zst",
                "database/gantt2/2026-11-26/x.data.zst",
            ],
            id="key-beginning",
        ),
        pytest.param("database/gantt/2026-11-26/a", [STORED_KEYS[2]], id="file-beginning"),
        pytest.param("", sorted(STORED_KEYS), id="everything"),
        pytest.param("logs/", [], id="no-such-folder"),
        pytest.param("database/gantt/2026-11-24/", [], id="no-such-subfolder"),
    ],
)
def test_list_by_prefix_is_sorted_and_exact(
    filled: Storage, prefix: str, expected: list[str]
) -> None:
    assert keys(filled, prefix) == expected


def test_list_reports_sizes(filled: Storage) -> None:
    sizes = {info.key: info.size for info in filled.list("")}

    assert sizes == {key: filled.stat(key).size for key in STORED_KEYS}
    assert sorted(sizes.values()) == list(range(1, len(STORED_KEYS) + 1))


def test_delete_then_the_object_is_gone(filled: Storage) -> None:
    victim = "database/gantt/2026-11-26/b.data.zst"

    filled.delete(victim)

    with pytest.raises(ObjectNotFoundError):
        filled.stat(victim)
    with pytest.raises(ObjectNotFoundError), filled.open(victim):
        pass
    assert victim not in keys(filled)
    assert sorted(keys(filled)) == sorted(set(STORED_KEYS) - {victim})


def test_delete_of_a_missing_key_is_fine(storage: Storage) -> None:
    storage.delete(KEY)
    storage.put(KEY, [b"data"])
    storage.delete(KEY)
    storage.delete(KEY)

    assert keys(storage) == []


@pytest.mark.parametrize("key", [KEY, "never/written"])
def test_missing_key_raises_not_found_naming_it(storage: Storage, key: str) -> None:
    storage.put("database/gantt/other", [b"x"])

    with pytest.raises(ObjectNotFoundError, match=key), storage.open(key):
        pass
    with pytest.raises(ObjectNotFoundError, match=key):
        storage.stat(key)


def test_overwrite_replaces_the_object(storage: Storage) -> None:
    storage.put(KEY, [os.urandom(300_000)])

    info = storage.put(KEY, [b"second ", b"version"])

    assert info.size == len(b"second version")
    assert storage.stat(KEY).size == len(b"second version")
    assert read(storage, KEY) == b"second version"
    assert keys(storage) == [KEY]


def test_create_stores_only_when_the_key_is_free(storage: Storage) -> None:
    assert storage.create(KEY, b"first writer") is True
    assert storage.create(KEY, b"second writer") is False

    assert read(storage, KEY) == b"first writer"
    assert keys(storage) == [KEY]


def test_racing_creates_have_exactly_one_winner(storage: Storage) -> None:
    from concurrent.futures import ThreadPoolExecutor

    bodies = [f"writer {i} ".encode() * 50 for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        won = list(pool.map(lambda body: storage.create(KEY, body), bodies))

    assert won.count(True) == 1
    assert read(storage, KEY) == bodies[won.index(True)]
    assert keys(storage) == [KEY]


def test_interrupted_put_leaves_no_object_and_keeps_the_previous_one(storage: Storage) -> None:
    storage.put(KEY, [b"previous version"])

    with pytest.raises(RuntimeError, match="midway"):
        storage.put(KEY, failing_chunks(5))
    with pytest.raises(RuntimeError, match="midway"):
        storage.put(KEY + ".new", failing_chunks(5))

    assert read(storage, KEY) == b"previous version"
    assert keys(storage) == [KEY]
    with pytest.raises(ObjectNotFoundError):
        storage.stat(KEY + ".new")


BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "database/../../outside",
    "database/./x",
    "database//x",
    "database/gantt/",
    "database\\gantt",
    "database/my backup",
    "database/.tmp-x",
]


@pytest.mark.parametrize("key", BAD_KEYS)
@pytest.mark.parametrize("method", ["put", "open", "stat", "delete"])
def test_invalid_keys_are_rejected_by_every_method(
    storage: Storage, tmp_path: Path, method: str, key: str
) -> None:
    storage.put(KEY, [b"kept"])
    calls: dict[str, Callable[[], object]] = {
        "put": lambda: storage.put(key, [b"payload"]),
        "open": lambda: storage.open(key).__enter__(),
        "stat": lambda: storage.stat(key),
        "delete": lambda: storage.delete(key),
    }

    with pytest.raises(InvalidKeyError):
        calls[method]()

    assert keys(storage) == [KEY]
    assert read(storage, KEY) == b"kept"
    assert not (tmp_path / "outside").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["repo"])


@pytest.mark.parametrize(
    "prefix", ["/etc", "../", "../outside", "database/../..", "data base/", "database/.tmp-"]
)
def test_invalid_list_prefixes_are_rejected(storage: Storage, prefix: str) -> None:
    storage.put(KEY, [b"kept"])

    with pytest.raises(InvalidKeyError):
        list(storage.list(prefix))


def test_keys_with_a_dot_component_are_refused_so_every_object_lists(storage: Storage) -> None:
    with pytest.raises(InvalidKeyError, match=r"starting with '\.'"):
        storage.put("config/app/.env", [b"X=1"])
    assert keys(storage, "config/") == []


def test_a_folder_is_not_an_object(storage: Storage) -> None:
    storage.put("database/gantt/x", [b"data"])

    with pytest.raises(ObjectNotFoundError):
        storage.stat("database/gantt")
    with pytest.raises(ObjectNotFoundError), storage.open("database/gantt"):
        pass
    storage.delete("database/gantt")
    assert read(storage, "database/gantt/x") == b"data"


# ----------------------------------------------------------------------------- local folders


def test_local_objects_are_plain_files_under_the_root(local: Storage) -> None:
    local.put(KEY, [b"abc", b"def"])

    assert (root_of(local) / KEY).read_bytes() == b"abcdef"


def test_interrupted_put_leaves_no_temp_file_and_no_entry(local: Storage) -> None:
    root = root_of(local)

    with pytest.raises(RuntimeError, match="midway"):
        local.put(KEY, failing_chunks(3))

    with pytest.raises(ObjectNotFoundError):
        local.stat(KEY)
    assert keys(local) == []
    assert temp_files(root) == []
    assert not (root / KEY).exists()


def test_a_put_fails_when_another_writer_replaced_the_file(
    local: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers of one key (two hosts on one NFS folder): the one whose file did not land
    must not return success, or its manifest would name the other's bytes."""
    import backupflow.storage.local as module

    real_replace = os.replace

    def replace_then_overwritten(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        other = Path(str(dst) + ".other")
        other.write_bytes(b"the other writer's bytes")
        real_replace(other, dst)

    monkeypatch.setattr(module.os, "replace", replace_then_overwritten)
    with pytest.raises(IntegrityError, match="replaced by another writer"):
        local.put(KEY, [b"ours"])


def test_a_put_fails_when_the_file_did_not_keep_every_byte(
    local: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that accepted the writes but holds fewer bytes (a lost write)."""
    import backupflow.storage.local as module

    real_replace = os.replace

    def replace_then_cut(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        os.truncate(dst, 2)

    monkeypatch.setattr(module.os, "replace", replace_then_cut)
    with pytest.raises(IntegrityError, match="holds 2 bytes after writing 6"):
        local.put(KEY, [b"abc", b"def"])


def test_a_put_leaves_its_object_out_of_the_page_cache(local: Storage) -> None:
    """So the next verify or restore reads the disk, and a backup does not push the
    application's files out of the host's cache."""
    mincore = getattr(__import__("ctypes").CDLL(None), "mincore", None)
    need(mincore is not None, "mincore(2) to see what is in the page cache")
    import ctypes
    import mmap

    data = os.urandom(4 << 20)
    local.put(KEY, [data])
    path = root_of(local) / KEY
    # a private mapping that is never touched: mincore tells which file pages are cached
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY) as m:
        pages = (len(data) + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vector = (ctypes.c_ubyte * pages)()
        start = (ctypes.c_char * len(data)).from_buffer(m)
        try:
            assert mincore(start, ctypes.c_size_t(len(data)), vector) == 0
        finally:
            del start
        cached = sum(v & 1 for v in vector)
    assert cached < pages // 4, f"{cached} of {pages} pages still cached"


def make_temp(root: Path, relative: str, age: timedelta) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a backup")
    moment = (datetime.now(UTC) - age).timestamp()
    os.utime(path, (moment, moment))
    return path


def test_temp_files_of_a_crash_are_hidden_and_cleaned_when_old(local: Storage) -> None:
    root = root_of(local)
    local.put(KEY, [b"complete"])
    old = make_temp(root, "database/gantt/2026-11-26/.tmp-x.data.zst.1a2b3c4d", timedelta(days=2))
    old_top = make_temp(root, ".tmp-top.0f0f0f0f", timedelta(hours=3))
    fresh = make_temp(root, "database/gantt/2026-11-26/.tmp-y.data.zst.9e8d7c6b", timedelta(0))

    assert keys(local) == [KEY]
    assert keys(local, "database/gantt/2026-11-26/") == [KEY]

    removed = local.cleanup_incomplete(datetime.now(UTC) - timedelta(hours=1))

    assert sorted(removed) == sorted(
        [old.relative_to(root).as_posix(), old_top.relative_to(root).as_posix()]
    )
    assert not old.exists()
    assert not old_top.exists()
    assert fresh.exists()
    assert read(local, KEY) == b"complete"
    assert keys(local) == [KEY]


def test_cleanup_of_a_missing_root_removes_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "not-created-yet")

    assert storage.cleanup_incomplete(datetime.now(UTC)) == []
    assert list(storage.list("")) == []


def test_delete_removes_empty_parent_folders_only(local: Storage) -> None:
    root = root_of(local)
    local.put("database/gantt/2026-11-26/x.data.zst", [b"x"])
    local.put("database/keep/2026-11-26/y.data.zst", [b"y"])

    local.delete("database/gantt/2026-11-26/x.data.zst")

    assert not (root / "database" / "gantt").exists()
    assert (root / "database" / "keep" / "2026-11-26" / "y.data.zst").exists()

    local.delete("database/keep/2026-11-26/y.data.zst")

    assert not (root / "database").exists()
    assert root.is_dir()


# ----------------------------------------------------------------------------- capabilities

CAPABILITIES = [f.name for f in dataclasses.fields(StorageCapabilities)]


def _s3(lock: ObjectLock | None = None) -> S3Storage:
    return S3Storage(client_for("us-east-1"), "anything", object_lock=lock)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(
            lambda tmp: LocalStorage(tmp), StorageCapabilities(verified_writes=True), id="local"
        ),
        pytest.param(lambda tmp: MemoryStorage(), StorageCapabilities(), id="memory"),
        pytest.param(
            lambda tmp: _s3(),
            StorageCapabilities(verified_writes=True, leaves_unfinished=True),
            id="s3",
        ),
        pytest.param(
            lambda tmp: _s3(ObjectLock("COMPLIANCE", 30)),
            StorageCapabilities(verified_writes=True, write_once=True, leaves_unfinished=True),
            id="s3-object-lock",
        ),
    ],
)
def test_a_wrapper_reports_every_capability_of_what_it_wraps(
    aws_env: None, tmp_path: Path, make: Callable[[Path], Storage], expected: StorageCapabilities
) -> None:
    inner = make(tmp_path)
    wrapped = StorageWrapper(StorageWrapper(inner))  # however deep

    assert inner.capabilities == expected
    assert wrapped.capabilities == expected
    for name in CAPABILITIES:  # each one readable as an attribute, on the wrapper too
        assert getattr(wrapped, name) is getattr(inner, name) is getattr(expected, name)
    tier = Tier("dr", wrapped, KEYRING)
    assert tier.write_once is expected.write_once
    assert wrapped.name == inner.name


def test_a_wrapper_passes_every_operation_through(tmp_path: Path) -> None:
    class Counting(StorageWrapper):
        def __init__(self, inner: Storage) -> None:
            super().__init__(inner)
            self.opened = 0

        def open(self, key: str) -> Any:
            self.opened += 1
            return super().open(key)

    inner = LocalStorage(tmp_path / "repo")
    counting = Counting(inner)
    counting.put(KEY, [b"abc"])

    assert read(counting, KEY) == b"abc"
    assert counting.opened == 1
    assert keys(counting) == keys(inner) == [KEY]
    assert counting.stat(KEY) == inner.stat(KEY)
    assert counting.create(KEY, b"taken") is False
    counting.delete(KEY)
    assert keys(inner) == []
    assert counting.create(KEY, b"new") is True
    assert read(inner, KEY) == b"new"
