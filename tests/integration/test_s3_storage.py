"""What only the S3 tier does: multipart with checksums, encryption, Object Lock, errors, cost."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber
from moto import mock_aws

from backupflow.catalog import Catalog
from backupflow.config import Settings, TierSettings
from backupflow.engines.sqlite import SqliteEngine
from backupflow.errors import (
    IntegrityError,
    ObjectLockedError,
    StorageError,
    TransientStorageError,
)
from backupflow.models import BackupKind, Category, Manifest
from backupflow.restore import load_plan
from backupflow.storage import S3Storage, Tier, make_s3_client
from backupflow.storage.s3 import ObjectLock
from tests.support.keys import KEYRING
from tests.support.s3 import MotoServer, client_for, make_bucket

REGION = "ap-northeast-2"
MiB = 1 << 20


@pytest.fixture
def s3(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        client = client_for(REGION)
        make_bucket(client, "backups-test", REGION)
        yield client


def _chunks(data: bytes, size: int = 700_001) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_multipart_upload_round_trips_and_s3_holds_our_part_checksums(s3: Any) -> None:
    storage = S3Storage(s3, "backups-test", "tier", part_bytes=5 * MiB, max_concurrency=2)
    data = os.urandom(12 * MiB + 123)
    info = storage.put("database/x/1.data.zst", _chunks(data))
    assert info.size == len(data)
    with storage.open("database/x/1.data.zst") as handle:
        assert handle.read() == data
    parts = [data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    head = s3.head_object(
        Bucket="backups-test", Key="tier/database/x/1.data.zst", ChecksumMode="ENABLED"
    )
    assert head["ChecksumSHA256"].split("-")[0] == base64.b64encode(composite).decode()
    assert len(parts) == 3


def test_objects_are_encrypted_and_get_the_storage_class(s3: Any) -> None:
    storage = S3Storage(s3, "backups-test", sse="AES256", storage_class="STANDARD_IA")
    storage.put("a/b", [b"secret rows"])
    head = s3.head_object(Bucket="backups-test", Key="a/b")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["StorageClass"] == "STANDARD_IA"


def test_a_stored_object_that_differs_from_what_was_sent_is_not_trusted(s3: Any) -> None:
    storage = S3Storage(s3, "backups-test", part_bytes=5 * MiB)

    def tamper(parsed: dict[str, Any], **_: Any) -> None:
        parsed["ChecksumSHA256"] = base64.b64encode(b"\0" * 32).decode()

    s3.meta.events.register("after-call.s3.HeadObject", tamper)
    with pytest.raises(IntegrityError, match="does not hold the bytes"):
        storage.put("a/small", [b"payload"])
    with pytest.raises(IntegrityError, match="does not hold the bytes"):
        storage.put("a/large", _chunks(os.urandom(6 * MiB)))


def test_object_lock_keeps_the_copy_until_retention_ends(aws_env: None) -> None:
    with mock_aws():
        client = client_for("ap-northeast-1")
        make_bucket(client, "dr-locked", "ap-northeast-1", lock=True)
        storage = S3Storage(
            client, "dr-locked", part_bytes=5 * MiB, object_lock=ObjectLock("COMPLIANCE", 1)
        )
        storage.put("database/x/small", [b"manifest"])
        storage.put("database/x/large", _chunks(os.urandom(6 * MiB)))
        for key in ("database/x/small", "database/x/large"):
            with pytest.raises(ObjectLockedError, match="Object Lock"):
                storage.delete(key)
            assert storage.stat(key).size > 0
        head = client.head_object(Bucket="dr-locked", Key="database/x/small")
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(hours=23)


def test_permanent_errors_name_bucket_and_operation_and_are_not_retried(s3: Any) -> None:
    missing = S3Storage(s3, "no-such-bucket-here")
    with pytest.raises(StorageError, match="no-such-bucket-here") as caught:
        list(missing.list("database/"))
    assert not caught.value.retryable
    assert "ListObjectsV2" in str(caught.value)

    storage = S3Storage(s3, "backups-test")
    with Stubber(s3) as stub:
        stub.add_client_error("head_object", "AccessDenied", http_status_code=403)
        with pytest.raises(StorageError, match="denied") as denied:
            storage.stat("a/b")
        assert not denied.value.retryable
        stub.add_client_error("head_object", "SlowDown", http_status_code=503)
        with pytest.raises(TransientStorageError):
            storage.stat("a/b")


def test_an_unreachable_endpoint_is_retried_by_botocore_alone_then_transient(
    aws_env: None, settings: Settings
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tier = TierSettings(url="s3://anything", region=REGION, endpoint_url=f"http://127.0.0.1:{port}")
    client = make_s3_client(tier, settings.repository.model_copy(update={"request_attempts": 3}))
    attempts: list[str] = []
    client.meta.events.register("before-send.s3", lambda request, **_: attempts.append("x"))
    storage = S3Storage(client, "anything")

    with pytest.raises(TransientStorageError, match="retrying may help") as caught:
        storage.stat("a/b")

    assert caught.value.retryable
    assert len(attempts) == 3  # request_attempts in all: botocore's retries, nobody else's


def _manifest(index: int, kind: BackupKind, at: datetime, parent: str | None) -> Manifest:
    backup_id = f"{at.strftime('%Y%m%dT%H%M%S')}Z-{kind.value}-{index:06x}"
    return Manifest(
        id=backup_id,
        category=Category.DATABASE,
        kind=kind,
        engine="sqlite",
        database="gantt",
        started_at=at,
        finished_at=at,
        restore_point=at,
        parent_id=parent,
        base_id=None,
        objects=(),
    )


def test_planning_a_restore_over_1000_backups_costs_a_handful_of_requests(aws_env: None) -> None:
    """Hourly logs, 4-hourly differentials, daily fulls: 1,000 backups in the bucket."""
    server = MotoServer().start()
    try:
        client = client_for(REGION, server.url)
        bucket = f"plan-{uuid.uuid4().hex[:10]}"
        make_bucket(client, bucket, REGION)
        storage = S3Storage(client, bucket)
        catalog = Catalog(storage, KEYRING)
        start = datetime(2026, 10, 1, tzinfo=UTC)
        full: str | None = None
        diff: str | None = None
        previous: str | None = None
        for index in range(1000):
            at = start + timedelta(hours=index)
            kind = (
                BackupKind.FULL
                if index % 24 == 0
                else BackupKind.DIFF
                if index % 4 == 0
                else BackupKind.LOG
            )
            parent = (
                None if kind is BackupKind.FULL else full if kind is BackupKind.DIFF else previous
            )
            manifest = _manifest(index, kind, at, parent)
            catalog.write(manifest)
            if kind is BackupKind.FULL:
                full = manifest.id
            elif kind is BackupKind.DIFF:
                diff = manifest.id
            previous = manifest.id
        del diff
        requests: list[str] = []
        client.meta.events.register(
            "before-send.s3", lambda request, **_: requests.append(request.method)
        )
        now = start + timedelta(hours=1000)
        loaded = load_plan(
            [Tier("dr", storage, KEYRING)], SqliteEngine(Path("gantt.db")), "gantt", None, now
        )
        assert [s.manifest.kind for s in loaded.plan.steps] == [
            BackupKind.FULL,
            BackupKind.DIFF,
            BackupKind.LOG,
            BackupKind.LOG,
            BackupKind.LOG,
        ]
        assert requests.count("GET") == len(requests)
        assert len(requests) == 1 + len(loaded.plan.steps)  # one LIST + one GET per step
    finally:
        server.stop()
