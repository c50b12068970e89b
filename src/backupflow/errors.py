"""One error tree for backupflow.

Every error a user can meet is a :class:`BackupflowError`; its message is one sentence that
says what was wrong and what to do.  Third-party exceptions are translated at the adapter
boundary (``raise StorageError(...) from exc``).  ``retryable`` marks errors worth retrying
(transient I/O); nothing else is retried.

::

    BackupflowError
    ├── ConfigError                 bad or missing settings                (exit 3)
    │   └── MissingKeyError         a key needed to sign/verify/encrypt/decrypt is absent
    ├── ParameterError              a flow parameter or CLI option is wrong (exit 2)
    ├── StorageError                a storage backend failed
    │   ├── ObjectNotFoundError     the key does not exist
    │   ├── InvalidKeyError         a key that is not relative, or has "..", etc.
    │   ├── ObjectLockedError       S3 Object Lock forbids deleting it yet
    │   ├── TransientStorageError   retryable (timeouts, throttling, 5xx)
    │   └── TierError               a backup is missing from some tier after a run
    ├── EngineError                 a database engine failed
    │   └── SourceNotFoundError     the database to back up does not exist
    ├── IntegrityError              data does not match its recorded checksum
    ├── CatalogError                a manifest cannot be read or trusted
    │   ├── UnsupportedManifestError  unknown format version
    │   └── ForeignManifestError    not signed by a trusted key: never a backup
    ├── RestorePlanError            no restore plan can reach the target
    │   ├── NoBackupError           nothing at or before the target
    │   ├── TargetInFutureError     the target time is later than now
    │   └── ChainGapError           a backup the chain needs is missing
    └── RestoreTargetError          the restore target is unsafe to write
"""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "BackupflowError",
    "BackupsUnreadableError",
    "CatalogError",
    "ChainGapError",
    "ConfigError",
    "EngineError",
    "ForeignManifestError",
    "IntegrityError",
    "InvalidKeyError",
    "MissingKeyError",
    "NoBackupError",
    "ObjectLockedError",
    "ObjectNotFoundError",
    "ParameterError",
    "RestorePlanError",
    "RestoreTargetError",
    "SourceNotFoundError",
    "StorageError",
    "TargetInFutureError",
    "TargetNotReachedError",
    "TierError",
    "TransientStorageError",
    "UnsupportedManifestError",
]


class BackupflowError(Exception):
    """Base of every error backupflow raises on purpose."""

    retryable: bool = False
    #: The command line's exit code for this error (documented in docs/operations.md).
    exit_code: int = 1


class ConfigError(BackupflowError):
    """The settings are invalid or incomplete."""

    exit_code = 3


class MissingKeyError(ConfigError):
    """A repository key needed for this operation is not configured here (or is wrong)."""


class ParameterError(BackupflowError):
    """A flow parameter or command-line option is invalid, or conflicts with another."""

    exit_code = 2


class StorageError(BackupflowError):
    """A storage backend could not complete an operation."""


class ObjectNotFoundError(StorageError):
    """The requested key does not exist in the storage."""


class InvalidKeyError(StorageError):
    """A key is not a valid relative object key."""


class ObjectLockedError(StorageError):
    """The object is under S3 Object Lock retention and cannot be deleted yet."""


class TransientStorageError(StorageError):
    """A storage failure that may succeed when retried."""

    retryable = True


class TierError(StorageError):
    """A backup reached some tiers but not all of them (the next run repairs the gap)."""


class EngineError(BackupflowError):
    """A database engine failed to back up or restore."""


class SourceNotFoundError(EngineError):
    """The database to back up does not exist."""


class IntegrityError(BackupflowError):
    """Data read back does not match the checksum recorded for it."""


class CatalogError(BackupflowError):
    """A manifest is unreadable, inconsistent or untrusted."""


class UnsupportedManifestError(CatalogError):
    """A manifest has a format version this backupflow does not read."""


class ForeignManifestError(CatalogError):
    """A manifest that no trusted key signed: it is reported and ignored, never a backup."""


class RestorePlanError(BackupflowError):
    """No restore plan reaches the requested target."""


class NoBackupError(RestorePlanError):
    """No full backup exists at or before the target."""


class BackupsUnreadableError(NoBackupError):
    """No restore could be planned because a tier that may hold the backups could not be
    read (unreachable or denied): not "there are no backups"."""


class TargetInFutureError(RestorePlanError):
    """The requested restore point is later than now."""


class ChainGapError(RestorePlanError):
    """A backup that the restore chain needs is missing from the catalog."""


class TargetNotReachedError(RestorePlanError):
    """The requested time lies after everything the backups and the archive hold; the
    restore stops unless the operator accepts the latest point it can reach."""

    def __init__(self, message: str, reached: datetime | None = None) -> None:
        super().__init__(message)
        #: The latest point the restore can reach (None when it is not known).
        self.reached = reached


class RestoreTargetError(BackupflowError):
    """The restore target exists (or is live) and no explicit flag allows replacing it."""
