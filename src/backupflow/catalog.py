"""The catalog is the storage itself: the manifests under a prefix.

Keys follow the seed's folders with the UTC date of the backup's start as a folder::

    database/<db>/2026-11-26/<backup-id>.manifest.json
    database/<db>/2026-11-26/<backup-id>.data.zst

Listing one database reads only that database's prefix.  A data object without a manifest
is not a backup: it is the left-over of an interrupted run, removed after a grace period.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from backupflow.errors import CatalogError, ObjectNotFoundError
from backupflow.models import Category, Manifest, utc
from backupflow.storage.base import ObjectInfo, Storage, get_bytes, put_bytes

__all__ = ["MANIFEST_SUFFIX", "Catalog", "CatalogScan", "object_key", "series_prefix"]

MANIFEST_SUFFIX = ".manifest.json"


def series_prefix(category: Category, name: str) -> str:
    """The folder holding every backup of one database (or one file set)."""
    return f"{category.value}/{name}/"


def object_key(
    category: Category, name: str, started_at: datetime, backup_id: str, suffix: str
) -> str:
    """Key of one object of a backup, e.g. ``database/gantt/2026-11-26/<id>.data.zst``."""
    day = utc(started_at).strftime("%Y-%m-%d")
    return f"{series_prefix(category, name)}{day}/{backup_id}{suffix}"


def manifest_key(manifest: Manifest) -> str:
    """Where a manifest is stored."""
    return object_key(
        manifest.category, manifest.database, manifest.started_at, manifest.id, MANIFEST_SUFFIX
    )


@dataclass(frozen=True)
class CatalogScan:
    """The readable manifests of one series, oldest first, and the ones that could not be read."""

    manifests: tuple[Manifest, ...]
    problems: tuple[str, ...] = field(default=())


class Catalog:
    """Reads and writes manifests in one storage tier."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def scan(self, category: Category, name: str) -> CatalogScan:
        """Every manifest of one series; unreadable ones are reported, not fatal."""
        manifests: list[Manifest] = []
        problems: list[str] = []
        for info in self.storage.list(series_prefix(category, name)):
            if not info.key.endswith(MANIFEST_SUFFIX):
                continue
            try:
                raw = get_bytes(self.storage, info.key)
                manifest = Manifest.from_json(raw, source=f"{self.storage.name}/{info.key}")
            except ObjectNotFoundError:
                continue  # removed while listing
            except CatalogError as exc:
                problems.append(str(exc))
                continue
            if manifest_key(manifest) != info.key:
                problems.append(
                    f"manifest {self.storage.name}/{info.key} describes backup {manifest.id} "
                    "of another place; it was ignored."
                )
                continue
            manifests.append(manifest)
        manifests.sort(key=lambda m: (m.restore_point, m.id))
        return CatalogScan(tuple(manifests), tuple(problems))

    def write(self, manifest: Manifest) -> str:
        """Write a manifest; call only after every object it lists is stored and verified."""
        for obj in manifest.objects:
            info = self.storage.stat(obj.key)
            if info.size != obj.size:
                raise CatalogError(
                    f"refusing to record backup {manifest.id}: {obj.key} is {info.size} bytes, "
                    f"not {obj.size}."
                )
        key = manifest_key(manifest)
        put_bytes(self.storage, key, manifest.to_json())
        return key

    def delete(self, manifest: Manifest) -> None:
        """Remove a backup: its manifest first, then its data (the reverse of writing)."""
        self.storage.delete(manifest_key(manifest))
        for obj in manifest.objects:
            self.storage.delete(obj.key)

    def orphans(self, category: Category, name: str, *, older_than: datetime) -> list[ObjectInfo]:
        """Objects of a series that no manifest lists and that are older than ``older_than``.

        Manifests that cannot be read still protect the objects their backup id names.
        """
        infos = list(self.storage.list(series_prefix(category, name)))
        claimed_ids = {
            info.key.rsplit("/", 1)[-1].removesuffix(MANIFEST_SUFFIX)
            for info in infos
            if info.key.endswith(MANIFEST_SUFFIX)
        }
        return [
            info
            for info in infos
            if not info.key.endswith(MANIFEST_SUFFIX)
            and _backup_id_of(info.key) not in claimed_ids
            and info.modified < older_than
        ]

    def remove(self, infos: Iterable[ObjectInfo]) -> list[str]:
        """Delete the given objects; returns their keys."""
        removed = []
        for info in infos:
            self.storage.delete(info.key)
            removed.append(info.key)
        return removed


def _backup_id_of(key: str) -> str:
    return key.rsplit("/", 1)[-1].split(".", 1)[0]
