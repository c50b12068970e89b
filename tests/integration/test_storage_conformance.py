"""One conformance suite for every storage tier (the contract in ``storage/base.py``).

Then the parts only one kind of tier has: the temporary files of LocalStorage and the
retries of RetryingStorage.
"""

from __future__ import annotations

import os
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import pytest
from moto import mock_aws

from backupflow.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorageError,
    TransientStorageError,
)
from backupflow.storage import LocalStorage, MemoryStorage, RetryingStorage, S3Storage, Storage
from backupflow.storage.base import ObjectInfo
from tests.support.s3 import client_for, make_bucket

KEY = "database/gantt/2026-11-26/20261126T053301Z-full-3f9a1c.data.zst"


def _no_sleep(seconds: float) -> None:
    del seconds


@pytest.fixture(params=["local", "memory", "retrying-local", "s3-mock", "s3-server"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """Every backend: folders, memory, and S3 through moto in-process and over HTTP."""
    root = tmp_path / "repo"
    if request.param == "local":
        yield LocalStorage(root)
    elif request.param == "memory":
        yield MemoryStorage()
    elif request.param == "retrying-local":
        yield RetryingStorage(LocalStorage(root), sleep=_no_sleep)
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


@pytest.fixture(params=["local", "retrying-local"])
def local(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    inner = LocalStorage(tmp_path / "repo")
    return inner if request.param == "local" else RetryingStorage(inner, sleep=_no_sleep)


def root_of(storage: Storage) -> Path:
    inner = storage.inner if isinstance(storage, RetryingStorage) else storage
    assert isinstance(inner, LocalStorage)
    return inner.root


def is_local(storage: Storage) -> bool:
    inner = storage.inner if isinstance(storage, RetryingStorage) else storage
    return isinstance(inner, LocalStorage)


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


# ---------------------------------------------------------------------------------- retries


class FlakyStorage(MemoryStorage):
    """A backend whose next ``failures[op]`` calls of ``op`` raise ``error`` once armed."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(name="flaky")
        self.error = error
        self.failures: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def arm(self, **failures: int) -> FlakyStorage:
        """Fail the next calls of each operation; count calls from now on."""
        self.failures = Counter(failures)
        self.calls = Counter()
        return self

    def _maybe_fail(self, op: str) -> None:
        self.calls[op] += 1
        if self.failures[op] > 0:
            self.failures[op] -= 1
            raise self.error

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        self._maybe_fail("put")
        return super().put(key, chunks)

    def stat(self, key: str) -> ObjectInfo:
        self._maybe_fail("stat")
        return super().stat(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._maybe_fail("list")
        return super().list(prefix)

    def delete(self, key: str) -> None:
        self._maybe_fail("delete")
        super().delete(key)

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        # like LocalStorage.open: the file is opened (and may fail) when the block is entered
        @contextmanager
        def opened() -> Iterator[BinaryIO]:
            self._maybe_fail("open")
            with MemoryStorage.open(self, key) as handle:
                yield handle

        return opened()


def transient() -> TransientStorageError:
    return TransientStorageError("could not read x: Resource temporarily unavailable.")


def retrying(inner: Storage, sleeps: list[float], attempts: int = 4) -> RetryingStorage:
    return RetryingStorage(inner, attempts=attempts, base_delay=0.5, sleep=sleeps.append)


def test_transient_errors_are_retried_with_back_off() -> None:
    inner = FlakyStorage(transient())
    inner.put(KEY, [b"12345"])
    inner.arm(stat=2)
    sleeps: list[float] = []

    info = retrying(inner, sleeps).stat(KEY)

    assert info.size == 5
    assert inner.calls["stat"] == 3
    assert sleeps == [0.5, 1.0]


def test_transient_errors_give_up_after_the_last_attempt() -> None:
    inner = FlakyStorage(transient()).arm(stat=10)
    sleeps: list[float] = []

    with pytest.raises(TransientStorageError):
        retrying(inner, sleeps, attempts=3).stat(KEY)

    assert inner.calls["stat"] == 3
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize(
    "error",
    [
        StorageError("could not write x: the backup disk is full."),
        InvalidKeyError("storage key '../x' has an empty, '.' or '..' component."),
    ],
    ids=["disk-full", "invalid-key"],
)
def test_non_retryable_errors_are_raised_at_once(error: StorageError) -> None:
    inner = FlakyStorage(error).arm(stat=1)
    sleeps: list[float] = []

    with pytest.raises(type(error)) as caught:
        retrying(inner, sleeps).stat(KEY)

    assert caught.value is error
    assert inner.calls["stat"] == 1
    assert sleeps == []


def test_not_found_is_not_retried() -> None:
    inner = FlakyStorage(transient())
    sleeps: list[float] = []

    with pytest.raises(ObjectNotFoundError):
        retrying(inner, sleeps).stat(KEY)

    assert inner.calls["stat"] == 1
    assert sleeps == []


@pytest.mark.parametrize("op", ["list", "delete"])
def test_list_and_delete_are_retried(op: str) -> None:
    inner = FlakyStorage(transient())
    inner.put(KEY, [b"x"])
    inner.arm(**{op: 2})
    storage = retrying(inner, [])

    if op == "list":
        assert keys(storage) == [KEY]
    else:
        storage.delete(KEY)
        assert keys(inner) == []
    assert inner.calls[op] == 3


def test_put_of_a_replayable_sequence_is_retried() -> None:
    inner = FlakyStorage(transient()).arm(put=2)

    retrying(inner, []).put(KEY, [b"ab", b"cd"])

    assert inner.calls["put"] == 3
    assert read(inner, KEY) == b"abcd"


def test_put_of_a_one_shot_stream_is_not_retried() -> None:
    inner = FlakyStorage(transient()).arm(put=1)
    sleeps: list[float] = []

    with pytest.raises(TransientStorageError):
        retrying(inner, sleeps).put(KEY, (chunk for chunk in [b"ab", b"cd"]))

    assert inner.calls["put"] == 1
    assert sleeps == []
    assert keys(inner) == []


def test_transient_error_when_opening_is_retried() -> None:
    inner = FlakyStorage(transient())
    inner.put(KEY, [b"payload"])
    inner.arm(open=2)

    assert read(retrying(inner, []), KEY) == b"payload"
    assert inner.calls["open"] == 3
