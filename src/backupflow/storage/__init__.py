"""Storage tiers behind one small interface, and the one place they are composed.

Each backend has one retry layer, its own: an S3 tier relies on botocore's ``standard``
retry mode (``repository.request_attempts`` attempts per request, see
:func:`make_s3_client`) and resumes an interrupted download itself; a local disk is not
retried (its errors do not pass with time, and Python already restarts calls interrupted
by a signal, PEP 475).  Nothing here wraps a storage in a retry layer of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupflow.config import RepositorySettings, Settings, TierSettings
from backupflow.errors import ConfigError
from backupflow.keys import Keyring, load_keyring
from backupflow.models import TIER_NAMES, SourceName, TierName
from backupflow.storage.base import (
    ObjectInfo,
    Storage,
    StorageCapabilities,
    get_bytes,
    put_bytes,
    validate_key,
)
from backupflow.storage.local import LocalStorage
from backupflow.storage.memory import MemoryStorage
from backupflow.storage.s3 import ObjectLock, S3Storage
from backupflow.storage.wrapper import StorageWrapper

__all__ = [
    "TIER_NAMES",
    "LocalStorage",
    "MemoryStorage",
    "ObjectInfo",
    "S3Storage",
    "SourceName",
    "Storage",
    "StorageCapabilities",
    "StorageWrapper",
    "Tier",
    "TierName",
    "get_bytes",
    "make_s3_client",
    "open_primary",
    "open_tier",
    "open_tiers",
    "put_bytes",
    "tiers_for",
    "validate_key",
]


@dataclass(frozen=True)
class Tier:
    """A named storage tier, and the keys this process holds for it (the same keyring for
    every tier: they hold copies of the same backups)."""

    name: TierName
    storage: Storage
    keyring: Keyring = field(default_factory=Keyring, repr=False, compare=False)

    @property
    def write_once(self) -> bool:
        """True when objects cannot be deleted early (S3 Object Lock)."""
        return self.storage.write_once


def make_s3_client(tier: TierSettings, repository: RepositorySettings) -> Any:
    """A boto3 S3 client for one tier: its region, endpoint, credentials and retry policy.

    Credentials come from the prefect-aws ``AwsCredentials`` block the tier names, else from
    boto3's default chain; never from a flow parameter.

    Retries are botocore's alone, in ``standard`` mode, ``request_attempts`` attempts in all
    per request (``total_max_attempts``: ``max_attempts`` would count retries, one more).
    ``standard`` retries throttling, 5xx and connection errors with jittered exponential
    back-off under a retry quota, the same way in every AWS SDK.  ``adaptive`` adds a
    client-side rate limiter that AWS still calls experimental; it pays off for many
    processes hammering one prefix, not for a backup of a few large objects whose parts
    share one client, and a throttled limiter would slow every part of the upload.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": repository.request_attempts, "mode": "standard"},
        s3={"addressing_style": tier.addressing_style},
        connect_timeout=10,
        read_timeout=120,
        max_pool_connections=max(10, repository.max_concurrency * 2),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    if tier.credentials_block:
        from backupflow.prefect_adapter import aws_session

        session = aws_session(
            tier.credentials_block, "BACKUPFLOW_REPOSITORY__<TIER>__CREDENTIALS_BLOCK"
        )
    else:
        session = boto3.session.Session()
    return session.client(
        "s3", region_name=tier.region, endpoint_url=tier.endpoint_url, config=config
    )


def open_tier(
    name: TierName, settings: Settings, *, client: Any = None, keyring: Keyring | None = None
) -> Tier:
    """The storage for one tier, with the settings' keyring (no wrapper: see the module)."""
    if keyring is None:
        keyring = load_keyring(settings.crypto)
    tier: TierSettings = getattr(settings.repository, name)
    if tier.is_s3:
        bucket, _, prefix = tier.url[5:].partition("/")
        lock = (
            ObjectLock(tier.object_lock_mode, tier.object_lock_days)
            if tier.object_lock_mode
            else None
        )
        storage: Storage = S3Storage(
            client or make_s3_client(tier, settings.repository),
            bucket,
            prefix,
            name=f"{name}:{tier.url}",
            part_bytes=settings.repository.part_bytes,
            max_concurrency=settings.repository.max_concurrency,
            sse=tier.sse,
            kms_key_id=tier.kms_key_id,
            storage_class=tier.storage_class,
            object_lock=lock,
            read_resumes=settings.repository.request_attempts,
        )
    else:
        root = Path(tier.url.removeprefix("file://"))
        storage = LocalStorage(root, name=f"{name}:{root}")
    return Tier(name, storage, keyring)


def open_tiers(settings: Settings, names: tuple[TierName, ...] = TIER_NAMES) -> list[Tier]:
    """The enabled tiers among ``names``, in the order given (the keyring is loaded once)."""
    keyring = load_keyring(settings.crypto)
    return [
        open_tier(name, settings, keyring=keyring)
        for name in names
        if getattr(settings.repository, name).enabled
    ]


def tiers_for(settings: Settings, source: SourceName) -> list[Tier]:
    """The tiers a restore reads: every enabled one for ``auto``, else the one named."""
    if source == "auto":
        return open_tiers(settings)
    if not getattr(settings.repository, source).enabled:
        raise ConfigError(f"the {source} tier is disabled in the settings.")
    return [open_tier(source, settings)]


def open_primary(settings: Settings) -> Storage:
    """The primary tier's storage."""
    return open_tier("primary", settings).storage
