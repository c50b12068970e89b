"""Storage tiers behind one small interface, and the one place they are composed."""

from __future__ import annotations

from backupflow.config import Settings
from backupflow.storage.base import ObjectInfo, Storage, get_bytes, put_bytes, validate_key
from backupflow.storage.local import LocalStorage
from backupflow.storage.memory import MemoryStorage
from backupflow.storage.retry import RetryingStorage

__all__ = [
    "LocalStorage",
    "MemoryStorage",
    "ObjectInfo",
    "RetryingStorage",
    "Storage",
    "get_bytes",
    "open_primary",
    "put_bytes",
    "validate_key",
]


def open_primary(settings: Settings) -> Storage:
    """The primary tier from the settings, wrapped with retries."""
    return RetryingStorage(
        LocalStorage(settings.repository.primary, name=f"primary:{settings.repository.primary}")
    )
