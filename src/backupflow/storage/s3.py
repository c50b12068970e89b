"""A storage tier in an S3 bucket (or an S3-compatible store such as MinIO).

* Uploads stream: chunks are cut into parts of ``part_bytes`` and uploaded as a multipart
  upload with at most ``max_concurrency`` parts in flight, so memory stays bounded by about
  ``part_bytes * (max_concurrency + 3)`` whatever the object's size.  Small objects are one
  ``PutObject``.
* Every object and every part carries its SHA-256 (``ChecksumSHA256``), which S3 checks on
  receipt (a mismatch is refused with ``BadDigest``).  After the upload the object's
  checksum reported by S3 is compared with the one computed here (for a multipart object:
  the SHA-256 of the parts' SHA-256s), and its size with the bytes sent, so the stored
  bytes are exactly the bytes our whole-object SHA-256 was computed on: writes are
  verified (``capabilities.verified_writes``) and nobody reads a copy back.  A store that
  answers without the checksum (an S3-compatible one that ignores it) verified nothing:
  from then on this storage reports unverified writes, and the pipeline reads back.
* Reads resume after a connection breaks midway (:mod:`backupflow.storage.s3_download`);
  every request is retried by botocore alone (see ``make_s3_client``).
* Server-side encryption, storage class and Object Lock retention are applied to every
  object.  On a tier with Object Lock, ``delete`` removes object versions explicitly (it
  never hides a locked object behind a delete marker) and reports a locked object as
  :class:`~backupflow.errors.ObjectLockedError`.
* Multipart uploads of killed runs are aborted by the next run once they are older than the
  grace period (:meth:`S3Storage.cleanup_incomplete`), only under this storage's prefix.
* botocore errors are translated (:mod:`backupflow.storage.s3_errors`).

Size: a little over 400 lines, because this is the whole S3 interface of one backend
(streamed multipart writes with their checksums, Object Lock deletes, listing and aborting
unfinished uploads); resumable reads and error translation are modules of their own.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TypeVar, cast

from botocore.exceptions import BotoCoreError, ClientError

from backupflow.errors import IntegrityError, ObjectLockedError
from backupflow.storage.base import (
    ObjectInfo,
    Storage,
    StorageCapabilities,
    UnfinishedWrite,
    validate_key,
    validate_prefix,
)
from backupflow.storage.s3_download import ResumingReader
from backupflow.storage.s3_errors import translate_s3_error

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import ObjectLockRetentionTypeDef

__all__ = ["ObjectLock", "S3Storage", "translate_s3_error"]

T = TypeVar("T")


@dataclass(frozen=True)
class ObjectLock:
    """S3 Object Lock retention applied to every object written."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    days: int

    def until(self) -> datetime:
        return datetime.now(UTC) + timedelta(days=self.days)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class S3Storage(Storage):
    """Objects under ``prefix`` in ``bucket``; a broken download resumes ``read_resumes``
    times at most."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        name: str | None = None,
        part_bytes: int = 8 << 20,
        max_concurrency: int = 4,
        sse: Literal["none", "AES256", "aws:kms"] = "AES256",
        kms_key_id: str | None = None,
        storage_class: str = "STANDARD",
        object_lock: ObjectLock | None = None,
        read_resumes: int = 3,
    ) -> None:
        if part_bytes < 5 << 20:
            raise ValueError("S3 parts must be at least 5 MiB")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.name = name or f"s3://{bucket}/{self.prefix}"
        self.part_bytes = part_bytes
        self.max_concurrency = max(1, max_concurrency)
        self.object_lock = object_lock
        self.read_resumes = max(0, read_resumes)
        self._checksums_confirmed = True
        self._put_args: dict[str, Any] = {"StorageClass": storage_class}
        if sse != "none":
            self._put_args["ServerSideEncryption"] = sse
            if sse == "aws:kms" and kms_key_id:
                self._put_args["SSEKMSKeyId"] = kms_key_id

    @property
    def capabilities(self) -> StorageCapabilities:
        return StorageCapabilities(
            verified_writes=self._checksums_confirmed,
            write_once=self.object_lock is not None,
            leaves_unfinished=True,
        )

    # -- helpers -----------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _call(self, operation: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (ClientError, BotoCoreError) as exc:
            raise translate_s3_error(exc, bucket=self.bucket, operation=operation, key=key) from exc

    def _lock_args(self) -> dict[str, Any]:
        if self.object_lock is None:
            return {}
        return {
            "ObjectLockMode": self.object_lock.mode,
            "ObjectLockRetainUntilDate": self.object_lock.until(),
        }

    # -- the interface -----------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        full_key = self._key(key)
        parts = _parts(chunks, self.part_bytes)
        first = next(parts, b"")
        second = next(parts, None)
        if second is None:
            digest = hashlib.sha256(first).digest()
            self._call(
                "PutObject",
                full_key,
                lambda: self.client.put_object(
                    Bucket=self.bucket,
                    Key=full_key,
                    Body=first,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=_b64(digest),
                    **self._put_args,
                    **self._lock_args(),
                ),
            )
            return self._check(key, full_key, len(first), _b64(digest))[0]
        return self._multipart(key, full_key, first, second, parts)

    def create(self, key: str, data: bytes) -> bool:
        full_key = self._key(key)
        digest = hashlib.sha256(data).digest()
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=full_key,
                Body=data,
                IfNoneMatch="*",  # S3's conditional write: refused when the key exists
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64(digest),
                **self._put_args,
                **self._lock_args(),
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code")
            # 409 ConditionalRequestConflict: a racing conditional write to the same key.
            if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise translate_s3_error(
                exc, bucket=self.bucket, operation="PutObject", key=key
            ) from exc
        except BotoCoreError as exc:
            raise translate_s3_error(
                exc, bucket=self.bucket, operation="PutObject", key=key
            ) from exc
        self._check(key, full_key, len(data), _b64(digest))
        return True

    def _multipart(
        self, key: str, full_key: str, first: bytes, second: bytes, rest: Iterator[bytes]
    ) -> ObjectInfo:
        upload = self._call(
            "CreateMultipartUpload",
            full_key,
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=full_key,
                ChecksumAlgorithm="SHA256",
                **self._put_args,
                **self._lock_args(),
            ),
        )
        upload_id = upload["UploadId"]
        digests: list[bytes] = []
        futures: list[Future[dict[str, Any]]] = []
        in_flight = threading.BoundedSemaphore(self.max_concurrency)
        total = 0

        def send(number: int, body: bytes, digest: bytes) -> dict[str, Any]:
            try:
                response = self._call(
                    "UploadPart",
                    full_key,
                    lambda: self.client.upload_part(
                        Bucket=self.bucket,
                        Key=full_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=body,
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=_b64(digest),
                    ),
                )
                return {
                    "PartNumber": number,
                    "ETag": response["ETag"],
                    "ChecksumSHA256": _b64(digest),
                }
            finally:
                in_flight.release()

        try:
            with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="s3-part") as pool:
                for number, body in enumerate(_chain(first, second, rest), start=1):
                    digest = hashlib.sha256(body).digest()
                    digests.append(digest)
                    total += len(body)
                    in_flight.acquire()  # bounds the parts held in memory
                    futures.append(pool.submit(send, number, body, digest))
                    if any(f.done() and f.exception() for f in futures):
                        break
                completed = [f.result() for f in futures]
            self._call(
                "CompleteMultipartUpload",
                full_key,
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": completed},  # type: ignore[typeddict-item]
                ),
            )
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=full_key, UploadId=upload_id
                )
            raise
        composite = _b64(hashlib.sha256(b"".join(digests)).digest())
        info, version = self._check(key, full_key, total, composite)
        lock = self.object_lock
        if lock is not None:
            # Some S3-compatible stores ignore lock headers on multipart uploads: set it again.
            retention: ObjectLockRetentionTypeDef = {
                "Mode": lock.mode,
                "RetainUntilDate": lock.until(),
            }
            self._call(
                "PutObjectRetention",
                full_key,
                lambda: self.client.put_object_retention(
                    Bucket=self.bucket, Key=full_key, VersionId=version, Retention=retention
                ),
            )
        return info

    def _check(self, key: str, full_key: str, size: int, checksum: str) -> tuple[ObjectInfo, str]:
        """Compare what S3 stored with what was sent; the object's info and version id."""
        head = self._call(
            "HeadObject",
            full_key,
            lambda: self.client.head_object(
                Bucket=self.bucket, Key=full_key, ChecksumMode="ENABLED"
            ),
        )
        stored = str(head.get("ChecksumSHA256") or "").split("-", 1)[0]
        if head["ContentLength"] != size or (stored and stored != checksum):
            raise IntegrityError(
                f"s3://{self.bucket}/{full_key} does not hold the bytes that were uploaded "
                f"({head['ContentLength']} of {size} bytes); the upload is not trusted."
            )
        if not stored:
            self._checksums_confirmed = False  # the store ignored it: nothing was verified
        info = ObjectInfo(key, int(head["ContentLength"]), head["LastModified"])
        return info, str(head.get("VersionId") or "null")

    @contextlib.contextmanager
    def _opened(self, key: str) -> Iterator[BinaryIO]:
        full_key = self._key(key)
        response = self._call(
            "GetObject", full_key, lambda: self.client.get_object(Bucket=self.bucket, Key=full_key)
        )
        reader = ResumingReader(
            self.client, self.bucket, full_key, response, resumes=self.read_resumes
        )
        try:
            yield cast(BinaryIO, reader)
        finally:
            reader.close()

    def open(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return self._opened(key)

    def stat(self, key: str) -> ObjectInfo:
        full_key = self._key(key)
        head = self._call(
            "HeadObject",
            full_key,
            lambda: self.client.head_object(Bucket=self.bucket, Key=full_key),
        )
        return ObjectInfo(key, int(head["ContentLength"]), head["LastModified"])

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        found: builtins.list[ObjectInfo] = []
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    found.append(ObjectInfo(key, int(item["Size"]), item["LastModified"]))
        except (ClientError, BotoCoreError) as exc:
            raise translate_s3_error(
                exc, bucket=self.bucket, operation="ListObjectsV2", key=self.prefix + prefix
            ) from exc
        yield from sorted(found, key=lambda info: info.key)

    def _uploads(self, prefix: str) -> builtins.list[tuple[str, str, datetime | None]]:
        """Open multipart uploads under this storage's prefix + ``prefix``: (full key,
        upload id, when it was started)."""
        validate_prefix(prefix)
        paginator = self.client.get_paginator("list_multipart_uploads")
        found: builtins.list[tuple[str, str, datetime | None]] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for upload in page.get("Uploads", []):
                    started = upload.get("Initiated")
                    found.append(
                        (
                            str(upload.get("Key", "?")),
                            str(upload.get("UploadId", "")),
                            started if isinstance(started, datetime) else None,
                        )
                    )
        except (ClientError, BotoCoreError) as exc:
            raise translate_s3_error(
                exc, bucket=self.bucket, operation="ListMultipartUploads", key=self.prefix + prefix
            ) from exc
        return found

    def unfinished_writes(self, prefix: str = "") -> builtins.list[UnfinishedWrite]:
        """Multipart uploads under ``prefix`` that were never completed or aborted."""
        return [
            UnfinishedWrite(
                key[len(self.prefix) :] if key.startswith(self.prefix) else key,
                started,
                f"s3://{self.bucket}/{key}",
            )
            for key, _, started in self._uploads(prefix)
        ]

    def cleanup_incomplete(self, older_than: datetime) -> builtins.list[str]:
        """Abort the multipart uploads under this storage's prefix that were started before
        ``older_than`` (left by killed runs: invisible, yet billed); returns their keys.

        Only uploads whose start S3 reports are judged, and only under ``prefix``: another
        tenant's uploads in the same bucket, and any upload younger than the grace period
        (a backup still uploading), are left alone.  An upload that is already gone counts
        as aborted.
        """
        aborted: builtins.list[str] = []
        for key, upload_id, started in self._uploads(""):
            if not key.startswith(self.prefix) or not upload_id:
                continue
            if started is None or started >= older_than:
                continue
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code != "NoSuchUpload":
                    raise translate_s3_error(
                        exc, bucket=self.bucket, operation="AbortMultipartUpload", key=key
                    ) from exc
            except BotoCoreError as exc:
                raise translate_s3_error(
                    exc, bucket=self.bucket, operation="AbortMultipartUpload", key=key
                ) from exc
            aborted.append(key[len(self.prefix) :])
        return aborted

    def delete(self, key: str) -> None:
        full_key = self._key(key)
        if self.object_lock is None:
            self._call(
                "DeleteObject",
                full_key,
                lambda: self.client.delete_object(Bucket=self.bucket, Key=full_key),
            )
            return
        listing = self._call(
            "ListObjectVersions",
            full_key,
            lambda: self.client.list_object_versions(Bucket=self.bucket, Prefix=full_key),
        )
        versions = [
            v["VersionId"]
            for v in [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]
            if v["Key"] == full_key
        ]
        for version in versions:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=full_key, VersionId=version)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code == "AccessDenied":
                    raise ObjectLockedError(
                        f"s3://{self.bucket}/{full_key} is under Object Lock and cannot be "
                        "deleted before its retention ends."
                    ) from exc
                raise translate_s3_error(
                    exc, bucket=self.bucket, operation="DeleteObject", key=full_key
                ) from exc


def _parts(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut a stream of chunks into parts of exactly ``size`` bytes (the last may be less)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def _chain(first: bytes, second: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield second
    yield from rest
