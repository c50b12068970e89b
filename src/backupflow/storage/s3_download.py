"""Reading an S3 object as a stream that survives a broken connection.

botocore retries a request until its response arrives, but not the body: a connection reset,
a read timeout or a short body in the middle of a large download would otherwise fail the
whole read (and a restore would start over from another tier).  :class:`ResumingReader`
asks again for the rest, from the byte it reached, with a ranged ``GetObject`` pinned to the
object it started reading (its ``VersionId`` when the bucket keeps versions, and always
``IfMatch`` on its ETag), so bytes of a replaced object are never spliced onto the first
one's.  It resumes at most ``resumes`` times per object; then, or when the object changed,
the error is a retryable :class:`~backupflow.errors.TransientStorageError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError

from backupflow.errors import TransientStorageError
from backupflow.storage.s3_errors import translate_s3_error

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["STREAM_ERRORS", "ResumingReader"]

#: What a body read raises when the connection breaks midway: botocore's
#: ResponseStreamingError (a urllib3 ProtocolError: reset, IncompleteRead),
#: ReadTimeoutError and ConnectionClosedError (all HTTPClientError), a short body
#: (IncompleteReadError), or a socket error that got through unwrapped.
STREAM_ERRORS: tuple[type[Exception], ...] = (HTTPClientError, IncompleteReadError, OSError)


class ResumingReader:
    """A ``GetObject`` body whose reads resume after a transient break."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        response: Any,
        *,
        resumes: int,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._body = response["Body"]
        self._etag = str(response.get("ETag") or "")
        self._version = response.get("VersionId")
        self._size = int(response.get("ContentLength") or 0)
        self._left = resumes
        self.position = 0
        #: How many times the read was resumed (for tests and logs).
        self.resumed = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0:  # everything left, block by block, so that a break loses nothing
            out = bytearray()
            while block := self.read(1 << 20):
                out += block
            return bytes(out)
        while True:
            try:
                data = cast(bytes, self._body.read(size))
            except STREAM_ERRORS as exc:
                if self.position >= self._size:
                    return b""  # every byte arrived; the break came after the last one
                self._resume(exc)
                continue
            except (ClientError, BotoCoreError) as exc:
                raise self._translated(exc) from exc
            self.position += len(data)
            return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._body.close()

    def _translated(self, exc: Exception) -> Exception:
        return translate_s3_error(exc, bucket=self._bucket, operation="GetObject", key=self._key)

    def _where(self) -> str:
        return f"s3://{self._bucket}/{self._key}"

    def _resume(self, exc: Exception) -> None:
        if self._left <= 0 or not self._etag:
            raise TransientStorageError(
                f"reading {self._where()} broke off at byte {self.position} of {self._size} "
                f"after {self.resumed} resumed reads ({exc}); retrying may help."
            ) from exc
        self._left -= 1
        self.resumed += 1
        self.close()
        args: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": self._key,
            "Range": f"bytes={self.position}-",
            "IfMatch": self._etag,
        }
        if self._version and self._version != "null":
            args["VersionId"] = self._version
        try:
            response = self._client.get_object(**args)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "PreconditionFailed" or status == 412:
                raise TransientStorageError(
                    f"{self._where()} was replaced while it was being read (at byte "
                    f"{self.position} of {self._size}); read it again from the start."
                ) from error
            raise self._translated(error) from error
        except BotoCoreError as error:
            raise self._translated(error) from error
        expected = f"bytes {self.position}-"
        if not str(response.get("ContentRange") or "").startswith(expected) or (
            str(response.get("ETag") or "") != self._etag
        ):
            response["Body"].close()
            raise TransientStorageError(
                f"{self._where()} did not answer the resumed read from byte {self.position} "
                "with the rest of the same object; read it again from the start."
            ) from exc
        self._body = response["Body"]
