"""botocore errors translated into backupflow's: one clear sentence, transient ones retryable.

Throttling, 5xx and connection failures are :class:`~backupflow.errors.TransientStorageError`;
access denied or a missing bucket fail at once, naming the bucket and the operation.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from backupflow.errors import ObjectNotFoundError, StorageError, TransientStorageError

__all__ = ["translate_s3_error"]

_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
    "502",
    "504",
}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_NETWORK_ERRORS = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
)


def translate_s3_error(
    exc: Exception, *, bucket: str, operation: str, key: str = ""
) -> StorageError:
    """One clear StorageError for a botocore error; transient ones are retryable."""
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(exc, _NETWORK_ERRORS):
        return TransientStorageError(f"{operation} on {where} failed: {exc}; retrying may help.")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _NOT_FOUND_CODES or (status == "404" and code not in ("NoSuchBucket",)):
            return ObjectNotFoundError(f"{where} does not exist.")
        if code == "NoSuchBucket":
            return StorageError(
                f"{operation} failed: the bucket {bucket} does not exist (or is in another "
                "account); check the tier's URL."
            )
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"{operation} on {where} was denied ({code}); check the credentials and the "
                "IAM permissions listed in docs/security.md for this tier."
            )
        if code in _TRANSIENT_CODES or status.startswith("5"):
            return TransientStorageError(
                f"{operation} on {where} failed ({code or status}); retrying may help."
            )
        return StorageError(f"{operation} on {where} failed: {code} {error.get('Message', '')}.")
    if isinstance(exc, BotoCoreError):
        return TransientStorageError(f"{operation} on {where} failed: {exc}.")
    return StorageError(f"{operation} on {where} failed: {exc}.")
