"""Immutable domain records: stored objects and backup manifests.

A manifest describes one complete, verified backup.  It is the last thing written for a
backup, and the only thing that makes its data objects a backup.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from backupflow import __version__
from backupflow.errors import CatalogError, UnsupportedManifestError

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "READABLE_VERSIONS",
    "TIER_NAMES",
    "Adoption",
    "BackupKind",
    "Category",
    "Manifest",
    "SourceName",
    "StoredObject",
    "TierName",
    "compact",
    "iso",
    "localized",
    "new_backup_id",
    "utc",
]

#: The storage tiers, defined once: local, a second copy (S3), disaster recovery (S3 in
#: another region).  Everything else (settings, flows' parameters, the CLI) derives from it.
TierName = Literal["primary", "secondary", "dr"]
TIER_NAMES: tuple[TierName, ...] = get_args(TierName)
#: Where a restore reads from: one tier, or "auto" (every tier, in order, with fallback).
SourceName = Literal["auto", TierName]

MANIFEST_FORMAT = "backupflow.manifest"
#: Version 2: stored as a signed envelope, objects may be age-encrypted.  Version 1 manifests
#: (unsigned) are read only by ``backupflow adopt``.
MANIFEST_VERSION = 2
READABLE_VERSIONS = (1, 2)


class Category(StrEnum):
    """What was backed up; also the top-level folder of its keys (the seed's folders)."""

    DATABASE = "database"
    CONFIG = "config"
    LOGS = "logs"
    UPLOADS = "uploads"


class BackupKind(StrEnum):
    """Full, differential (changes since the full) or log (changes since the previous)."""

    FULL = "full"
    DIFF = "diff"
    LOG = "log"


def utc(moment: datetime) -> datetime:
    """Return ``moment`` as an aware UTC datetime; naive datetimes are refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a timestamp must carry a timezone (for example +09:00 or Z)")
    return moment.astimezone(UTC)


def iso(moment: datetime | None) -> str:
    """The one timestamp spelling of reports and messages: UTC ISO-8601 to the millisecond
    (``2026-11-26T02:00:00.000Z``), or ``-``."""
    if moment is None:
        return "-"
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def compact(moment: datetime) -> str:
    """The one timestamp spelling inside names (files kept aside, default targets):
    ``20261126T020000Z``."""
    return utc(moment).strftime("%Y%m%dT%H%M%SZ")


def localized(moment: datetime, timezone: str) -> datetime:
    """``moment`` as given, or, without an offset, read in ``timezone``."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=ZoneInfo(timezone))
    return moment


def new_backup_id(kind: BackupKind, started_at: datetime) -> str:
    """A sortable, unique id: ``20261126T053301Z-full-3f9a1c``."""
    stamp = utc(started_at).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}Z-{kind.value}-{secrets.token_hex(3)}"


class StoredObject(BaseModel):
    """One object in the storage and the checksums that prove it intact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str = Field(description="What the object holds, e.g. 'data' or 'pages'.")
    key: str = Field(description="Storage key, relative to the tier's root.")
    codec: str = Field(description="Compression codec of the stored bytes.")
    size: int = Field(ge=0, description="Stored (compressed) size in bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the stored bytes.")
    raw_size: int = Field(ge=0, description="Size before compression.")
    raw_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 before compression.")
    encryption: str | None = Field(
        default=None,
        description="Encryption of the stored bytes ('age-v1-x25519'), or None when stored "
        "in the clear (backups adopted from format 1).",
    )
    recipients: tuple[str, ...] = Field(
        default=(), max_length=100, description="Key ids of the age recipients it is encrypted to."
    )
    raw_digest: Literal["content-id"] | None = Field(
        default=None,
        description="What raw_sha256 holds: None (never written) for the SHA-256 before "
        "compression; 'content-id' for the keyed content id of that SHA-256 (HMAC under a key "
        "derived from the signing key), so an encrypted file content does not show its "
        "plaintext's hash to whoever can read the manifest.",
    )

    @model_serializer(mode="wrap")
    def _without_default_digest(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A record without ``raw_digest`` is written as before the field existed."""
        data = handler(self)
        if isinstance(data, dict) and data.get("raw_digest") is None:
            data.pop("raw_digest", None)
        return data


class Adoption(BaseModel):
    """How an unsigned (format 1) backup came to be signed: ``backupflow adopt``, when, by
    which key, and the digest of the list the operator confirmed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    by: str = Field(pattern=r"^[0-9a-f]{16}$", description="Key id of the signing key.")
    confirmed: str = Field(pattern=r"^[0-9a-f]{20}$", description="The confirmed list's digest.")
    cutoff: datetime = Field(description="The repository's first key record: all was older.")


class Manifest(BaseModel):
    """The catalog record of one backup (format version 2; version 1 only for adopt)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = MANIFEST_FORMAT
    format_version: int = MANIFEST_VERSION
    id: str = Field(pattern=r"^[0-9]{8}T[0-9]{6}Z-(full|diff|log)-[0-9a-f]{6}$")
    category: Category
    kind: BackupKind
    engine: str
    database: str
    started_at: datetime
    finished_at: datetime
    restore_point: datetime = Field(description="The state this backup restores to.")
    position: dict[str, Any] = Field(
        default_factory=dict, description="Engine data that chains backups (pages, LSNs)."
    )
    base_id: str | None = Field(default=None, description="The full backup this one builds on.")
    parent_id: str | None = Field(
        default=None, description="The backup whose state this one is applied on top of."
    )
    objects: tuple[StoredObject, ...]
    tool_version: str = __version__
    notes: tuple[str, ...] = ()
    adopted: Adoption | None = Field(
        default=None, description="Set when `backupflow adopt` signed an unsigned backup."
    )

    @model_serializer(mode="wrap")
    def _without_adoption(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A manifest that was not adopted is written as before the field existed."""
        data = handler(self)
        if isinstance(data, dict) and data.get("adopted") is None:
            data.pop("adopted", None)
        return data

    @field_validator("started_at", "finished_at")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        return utc(value)

    @field_validator("restore_point")
    @classmethod
    def _whole_milliseconds(cls, value: datetime) -> datetime:
        """Restore points are kept (and shown) to the millisecond, rounded down, so that the
        time an operator copies from a listing selects that very backup."""
        value = utc(value)
        return value.replace(microsecond=value.microsecond // 1000 * 1000)

    def object(self, role: str) -> StoredObject:
        """The stored object with ``role``; a missing role is a catalog error."""
        for obj in self.objects:
            if obj.role == role:
                return obj
        raise CatalogError(f"backup {self.id} has no {role!r} object in its manifest.")

    @property
    def stored_bytes(self) -> int:
        """Total stored size of the backup's objects."""
        return sum(obj.size for obj in self.objects)

    def to_json(self) -> bytes:
        """Canonical JSON bytes (sorted keys, UTC timestamps)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes, *, source: str) -> Manifest:
        """Parse a manifest read from ``source``, refusing unknown formats and versions."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CatalogError(f"manifest {source} is not valid JSON; it is damaged.") from exc
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise CatalogError(f"{source} is not a backupflow manifest.")
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise UnsupportedManifestError(
                f"manifest {source} has format version {version}, but this backupflow reads "
                f"versions {', '.join(map(str, READABLE_VERSIONS))}; use the backupflow release "
                "that wrote it."
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise CatalogError(f"manifest {source} is invalid at {where}: {first['msg']}.") from exc
