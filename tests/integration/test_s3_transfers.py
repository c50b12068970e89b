"""S3 transfers: a download broken midway resumes (and never splices two objects); a copy to
S3 is not read back, because S3 verified the SHA-256 sent with every part; nor is a folder,
which checks instead that the file at the key is the one it wrote, whole.

moto checks no checksum itself, so the upload tests check what real S3 checks: every PUT
carries an ``x-amz-checksum-sha256`` equal to the SHA-256 of its own body.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import (
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from moto import mock_aws
from urllib3.exceptions import ProtocolError

from backupflow.codecs import get_codec
from backupflow.config import Settings, TierSettings
from backupflow.errors import StorageError, TransientStorageError
from backupflow.models import StoredObject
from backupflow.pipeline import open_verified, store_stream
from backupflow.storage import LocalStorage, S3Storage, Storage, StorageWrapper, open_tier
from backupflow.tiers import copy_object
from tests.support.keys import KEYRING
from tests.support.s3 import CuttingProxy, MotoServer, client_for, make_bucket

REGION = "ap-northeast-2"
MiB = 1 << 20
KEY = "database/gantt/2026-11-26/20261126T053301Z-full-3f9a1c.data.zst"


@pytest.fixture(params=["in-process", "server"])
def s3(request: pytest.FixtureRequest, aws_env: None) -> Iterator[tuple[Any, str]]:
    """A client and an empty bucket: moto in this process, or moto's HTTP server."""
    bucket = f"transfers-{uuid.uuid4().hex[:12]}"
    if request.param == "in-process":
        with mock_aws():
            client = client_for(REGION)
            make_bucket(client, bucket, REGION)
            yield client, bucket
    else:
        server: MotoServer = request.getfixturevalue("moto_server")
        client = client_for(REGION, server.url)
        make_bucket(client, bucket, REGION)
        yield client, bucket


# -- downloads that break midway ---------------------------------------------------------------


class Breaking:
    """A response body that raises ``error`` once ``after`` bytes have passed (calling
    ``before_break`` first)."""

    def __init__(
        self, body: Any, after: int, error: Exception, before_break: Callable[[], None] | None
    ) -> None:
        self._body = body
        self._after = after
        self._error = error
        self._before_break = before_break
        self.passed = 0

    def read(self, amt: int | None = None) -> bytes:
        room = self._after - self.passed
        if room <= 0:
            if self._before_break is not None:
                self._before_break()
            raise self._error
        data: bytes = self._body.read(room if amt is None else min(amt, room))
        self.passed += len(data)
        return data

    def close(self) -> None:
        self._body.close()


def break_downloads(
    client: Any, *breaks: tuple[int, Exception], before_break: Callable[[], None] | None = None
) -> list[str]:
    """The next GETs break after the given byte counts; returns each GET's Range answer."""
    plans = list(breaks)
    answered: list[str] = []

    def inject(parsed: dict[str, Any], **_: Any) -> None:
        if "Body" not in parsed:
            return  # an error answer
        answered.append(str(parsed.get("ContentRange") or "whole"))
        if plans:
            after, error = plans.pop(0)
            parsed["Body"] = Breaking(parsed["Body"], after, error, before_break)

    client.meta.events.register("after-call.s3.GetObject", inject)
    return answered


def read_all(storage: Storage, key: str, piece: int) -> bytes:
    out = bytearray()
    with storage.open(key) as handle:
        if piece < 0:
            return handle.read()
        while block := handle.read(piece):
            out += block
    return bytes(out)


BREAKS = {
    "connection-reset": ResponseStreamingError(
        error=ProtocolError("Connection broken", ConnectionResetError(104, "reset by peer"))
    ),
    "read-timeout": ReadTimeoutError(endpoint_url="http://s3", error="timed out"),
    "incomplete-read": IncompleteReadError(actual_bytes=10, expected_bytes=20),
    "connection-closed": ConnectionClosedError(endpoint_url="http://s3"),
    "socket-error": ConnectionResetError(104, "Connection reset by peer"),
}


@pytest.mark.parametrize("piece", [65_537, -1], ids=["streamed", "read-whole"])
@pytest.mark.parametrize("error", list(BREAKS))
def test_a_download_broken_midway_resumes_with_the_exact_bytes(
    s3: tuple[Any, str], error: str, piece: int
) -> None:
    client, bucket = s3
    storage = S3Storage(client, bucket, "tier", part_bytes=5 * MiB)
    data = os.urandom(3 * MiB + 17)
    storage.put(KEY, [data])
    first, second = MiB + 5, 700_001
    answered = break_downloads(client, (first, BREAKS[error]), (second, BREAKS[error]))

    assert read_all(storage, KEY, piece) == data
    assert answered == [
        "whole",
        f"bytes {first}-{len(data) - 1}/{len(data)}",
        f"bytes {first + second}-{len(data) - 1}/{len(data)}",
    ]


def test_an_object_replaced_before_the_resume_is_refused_never_spliced(
    s3: tuple[Any, str],
) -> None:
    client, bucket = s3
    storage = S3Storage(client, bucket, part_bytes=5 * MiB)
    original, replacement = os.urandom(2 * MiB), os.urandom(2 * MiB)
    storage.put(KEY, [original])
    break_downloads(
        client,
        (MiB, BREAKS["connection-reset"]),
        before_break=lambda: client.put_object(Bucket=bucket, Key=KEY, Body=replacement),
    )
    got = bytearray()

    with (
        pytest.raises(TransientStorageError, match="replaced while it was being read") as caught,
        storage.open(KEY) as handle,
    ):
        while block := handle.read(65_536):
            got += block

    assert caught.value.retryable  # a restore moves on to the next tier
    assert bytes(got) == original[:MiB]  # not one byte of the replacement
    assert read_all(storage, KEY, 65_536) == replacement  # a fresh read gets the new object


def test_on_a_versioned_bucket_the_resume_reads_the_version_it_started(
    s3: tuple[Any, str],
) -> None:
    client, bucket = s3
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    storage = S3Storage(client, bucket, part_bytes=5 * MiB)
    original = os.urandom(2 * MiB)
    storage.put(KEY, [original])
    break_downloads(
        client,
        (MiB + 1, BREAKS["read-timeout"]),
        before_break=lambda: client.put_object(Bucket=bucket, Key=KEY, Body=b"newer"),
    )

    assert read_all(storage, KEY, 65_536) == original


def test_resumes_are_bounded_then_the_error_is_retryable(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    storage = S3Storage(client, bucket, part_bytes=5 * MiB, read_resumes=2)
    storage.put(KEY, [os.urandom(MiB)])
    reset = BREAKS["connection-reset"]
    answered = break_downloads(client, *[(100_000, reset)] * 5)

    with pytest.raises(StorageError, match="broke off at byte 300000") as caught:
        read_all(storage, KEY, 65_536)

    assert caught.value.retryable
    assert len(answered) == 3  # the first GET and two resumes, no more


def test_a_real_connection_reset_midway_resumes(moto_server: MotoServer) -> None:
    proxy = CuttingProxy(moto_server.port)
    try:
        client = client_for(REGION, proxy.url)
        bucket = f"cut-{uuid.uuid4().hex[:12]}"
        make_bucket(client, bucket, REGION)
        storage = S3Storage(client, bucket, part_bytes=5 * MiB)
        data = os.urandom(4 * MiB + 3)
        storage.put(KEY, [data])
        gets: list[str] = []
        client.meta.events.register(
            "before-send.s3",
            lambda request, **_: gets.append(str(request.headers.get("Range", "whole"))),
        )
        proxy.cut_after(MiB + 333)

        assert read_all(storage, KEY, 65_536) == data
        assert proxy.cuts == 1
        assert len(gets) == 2 and gets[0] == "whole" and gets[1].startswith("b'bytes=")
    finally:
        proxy.close()


# -- copies to S3 are verified by S3, not read back --------------------------------------------


class Requests:
    """Every request a client sends: method, path, and whether a PUT's body matches the
    SHA-256 it announces (the check real S3 makes on every object and part)."""

    def __init__(self, client: Any) -> None:
        self.sent: list[tuple[str, str]] = []
        self.unchecked_puts: list[str] = []
        client.meta.events.register("before-send.s3", self._record)

    def _record(self, request: Any, **_: Any) -> None:
        path = urlsplit(request.url).path
        self.sent.append((request.method, path))
        if request.method == "PUT":
            body = request.body
            raw = body.getvalue() if isinstance(body, io.BytesIO) else bytes(body or b"")
            announced = request.headers.get("x-amz-checksum-sha256")
            if isinstance(announced, bytes):
                announced = announced.decode()
            if announced != base64.b64encode(hashlib.sha256(raw).digest()).decode():
                self.unchecked_puts.append(request.url)

    def of(self, method: str) -> list[str]:
        return [path for m, path in self.sent if m == method]


class CountingOpens(StorageWrapper):
    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.opened: list[str] = []

    def open(self, key: str) -> Any:
        self.opened.append(key)
        return super().open(key)


def with_s3_secondary(settings: Settings, bucket: str) -> Settings:
    secondary = TierSettings(url=f"s3://{bucket}/backupflow", region=REGION)
    repository = settings.repository.model_copy(update={"secondary": secondary})
    return settings.model_copy(update={"repository": repository})


def backup_on_primary(settings: Settings, size: int) -> tuple[Storage, StoredObject, bytes]:
    """An encrypted backup object on the (local) primary tier, and its plaintext."""
    primary = open_tier("primary", settings, keyring=KEYRING).storage
    data = os.urandom(size)
    record = store_stream(
        primary, KEY, io.BytesIO(data), get_codec("zstd"), role="data", keyring=KEYRING
    )
    return primary, record, data


def restored(storage: Storage, record: StoredObject) -> bytes:
    with open_verified(storage, record, keyring=KEYRING) as stream:
        return stream.read()


@pytest.mark.parametrize("size", [100_000, 19 * MiB], ids=["one-put", "multipart"])
def test_a_backup_copy_to_s3_is_not_read_back(
    s3: tuple[Any, str], settings: Settings, size: int
) -> None:
    client, bucket = s3
    settings = with_s3_secondary(settings, bucket)
    primary, record, data = backup_on_primary(settings, size)
    secondary = open_tier("secondary", settings, client=client, keyring=KEYRING)
    requests = Requests(client)

    copy_object(
        primary, secondary.storage, record, chunk_bytes=MiB, write_once=secondary.write_once
    )

    object_path = f"/{bucket}/backupflow/{record.key}"
    assert object_path not in requests.of("GET")  # no read-back of what S3 verified
    assert requests.of("GET") == []
    assert len(requests.of("PUT")) == (1 if size < 8 * MiB else 3)  # parts of 8 MiB
    assert requests.unchecked_puts == []  # every object and part carried its SHA-256
    assert secondary.storage.verified_writes
    assert restored(secondary.storage, record) == data


def test_storing_on_s3_or_in_a_folder_is_not_read_back(
    s3: tuple[Any, str], settings: Settings, tmp_path: Path
) -> None:
    client, bucket = s3
    settings = with_s3_secondary(settings, bucket)
    on_s3 = open_tier("secondary", settings, client=client, keyring=KEYRING).storage
    folder = CountingOpens(LocalStorage(tmp_path / "folder"))
    requests = Requests(client)
    data = os.urandom(9 * MiB)

    for storage in (on_s3, folder):
        record = store_stream(
            storage, KEY, io.BytesIO(data), get_codec("zstd"), role="data", verify=True
        )
        assert restored(storage, record) == data

    assert requests.of("GET") == [f"/{bucket}/backupflow/{KEY}"]  # the restore's read only
    # S3 checked every part's SHA-256; the folder checked that its file landed whole, and
    # reading it back at once would only read the page cache
    assert folder.opened == [KEY]  # the restore's read only
    assert requests.unchecked_puts == []


def test_a_copy_to_a_folder_is_not_read_back(settings: Settings, tmp_path: Path) -> None:
    primary, record, data = backup_on_primary(settings, 300_000)
    dest = CountingOpens(LocalStorage(tmp_path / "elsewhere"))

    copy_object(primary, dest, record, chunk_bytes=MiB, write_once=False)

    assert dest.opened == []
    assert restored(dest, record) == data


def test_a_store_that_ignores_checksums_is_read_back(s3: tuple[Any, str]) -> None:
    client, bucket = s3

    def forget_checksum(parsed: dict[str, Any], **_: Any) -> None:
        parsed.pop("ChecksumSHA256", None)  # an S3-compatible store that verified nothing

    client.meta.events.register("after-call.s3.HeadObject", forget_checksum)
    storage = S3Storage(client, bucket, part_bytes=5 * MiB)
    requests = Requests(client)
    data = os.urandom(200_000)

    store_stream(storage, KEY, io.BytesIO(data), get_codec("zstd"), role="data", verify=True)

    assert not storage.verified_writes
    assert requests.of("GET") == [f"/{bucket}/{KEY}"]  # so the pipeline read it back
