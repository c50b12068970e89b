"""The catalog is the storage itself: the manifests under a prefix.

Data keys follow the seed's folders with the UTC date of the backup's start as a folder;
manifests sit in one folder per database and carry in their names what a restore plan
needs (restore point, id and kind, parent)::

    database/<db>/2026-11-26/<backup-id>.data.zst
    database/<db>/manifests/<restore-point>_<backup-id>_<parent-id|none>.manifest.json

So planning a restore costs one LIST request per 1,000 backups of that database, plus one
GET per backup of the chosen chain (:meth:`Catalog.entries`, :meth:`Catalog.load`).  A data
object without a manifest is not a backup: it is the left-over of an interrupted run,
removed after a grace period.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from backupflow.errors import CatalogError, ObjectNotFoundError
from backupflow.models import BackupKind, Category, Manifest, utc
from backupflow.storage.base import ObjectInfo, Storage, get_bytes, put_bytes

__all__ = [
    "CONTENT_ROLE",
    "MANIFEST_SUFFIX",
    "Catalog",
    "CatalogEntry",
    "CatalogScan",
    "content_prefix",
    "manifest_key",
    "object_key",
    "series_prefix",
]

MANIFEST_SUFFIX = ".manifest.json"


CONTENT_ROLE = "content:"


def content_prefix(category: Category, name: str) -> str:
    """The folder of a content-addressed set's shared content."""
    return f"{category.value}/{name}/content/"


def series_prefix(category: Category, name: str) -> str:
    """The folder holding every backup of one database (or one file set)."""
    return f"{category.value}/{name}/"


def object_key(
    category: Category, name: str, started_at: datetime, backup_id: str, suffix: str
) -> str:
    """Key of one object of a backup, e.g. ``database/gantt/2026-11-26/<id>.data.zst``."""
    day = utc(started_at).strftime("%Y-%m-%d")
    return f"{series_prefix(category, name)}{day}/{backup_id}{suffix}"


_POINT_FORMAT = "%Y%m%dT%H%M%S"
_MANIFEST_NAME = re.compile(
    r"^(?P<point>[0-9]{8}T[0-9]{9}Z)_(?P<id>[0-9]{8}T[0-9]{6}Z-(?P<kind>full|diff|log)-[0-9a-f]{6})"
    r"_(?P<parent>none|[0-9]{8}T[0-9]{6}Z-(?:full|diff|log)-[0-9a-f]{6})"
    + re.escape(MANIFEST_SUFFIX)
    + "$"
)


def manifests_prefix(category: Category, name: str) -> str:
    """The folder holding every manifest of one series."""
    return f"{series_prefix(category, name)}manifests/"


def _point_text(moment: datetime) -> str:
    moment = utc(moment)
    return f"{moment.strftime(_POINT_FORMAT)}{moment.microsecond // 1000:03d}Z"


def manifest_key(manifest: Manifest) -> str:
    """Where a manifest is stored: its name carries what restore planning needs."""
    return (
        f"{manifests_prefix(manifest.category, manifest.database)}"
        f"{_point_text(manifest.restore_point)}_{manifest.id}_{manifest.parent_id or 'none'}"
        f"{MANIFEST_SUFFIX}"
    )


@dataclass(frozen=True)
class CatalogEntry:
    """What a manifest's key says about a backup: enough to plan, without reading it."""

    id: str
    kind: BackupKind
    restore_point: datetime
    parent_id: str | None
    key: str

    @classmethod
    def parse(cls, key: str) -> CatalogEntry | None:
        """The entry for a manifest key, or None for any other key."""
        match = _MANIFEST_NAME.match(key.rsplit("/", 1)[-1])
        if match is None:
            return None
        point = match["point"]
        restore_point = datetime.strptime(point[:15], _POINT_FORMAT).replace(
            microsecond=int(point[15:18]) * 1000, tzinfo=UTC
        )
        parent = match["parent"]
        return cls(
            id=match["id"],
            kind=BackupKind(match["kind"]),
            restore_point=restore_point,
            parent_id=None if parent == "none" else parent,
            key=key,
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
        for info in self.storage.list(manifests_prefix(category, name)):
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

    def listing(self, category: Category, name: str) -> tuple[list[CatalogEntry], list[str]]:
        """Every backup of one series from manifest names alone (LIST requests only), and
        the keys in the manifests folder that are not manifest names of this format."""
        found: list[CatalogEntry] = []
        strays: list[str] = []
        for info in self.storage.list(manifests_prefix(category, name)):
            entry = CatalogEntry.parse(info.key)
            if entry is None:
                strays.append(info.key)
            else:
                found.append(entry)
        found.sort(key=lambda e: (e.restore_point, e.id))
        return found, strays

    def entries(self, category: Category, name: str) -> list[CatalogEntry]:
        """Every backup of one series from manifest names alone (LIST requests only)."""
        return self.listing(category, name)[0]

    def load(self, entry: CatalogEntry) -> Manifest:
        """Read and check the manifest behind an entry."""
        raw = get_bytes(self.storage, entry.key)
        manifest = Manifest.from_json(raw, source=f"{self.storage.name}/{entry.key}")
        if manifest_key(manifest) != entry.key:
            raise CatalogError(
                f"manifest {self.storage.name}/{entry.key} does not describe the backup its "
                "name says; it was not used."
            )
        return manifest

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
        """Remove a backup: its manifest first, then its data (the reverse of writing).

        Shared content (``content:*`` objects of a content-addressed set) is left for
        :meth:`unreferenced_content`, since other backups may still use it.
        """
        self.storage.delete(manifest_key(manifest))
        for obj in manifest.objects:
            if not obj.role.startswith(CONTENT_ROLE):
                self.storage.delete(obj.key)

    def orphans(self, category: Category, name: str, *, older_than: datetime) -> list[ObjectInfo]:
        """Objects of a series that no manifest lists and that are older than ``older_than``.

        Manifests that cannot be read still protect the objects their backup id names.
        """
        infos = list(self.storage.list(series_prefix(category, name)))
        claimed_ids = {
            _manifest_id_of(info.key) for info in infos if info.key.endswith(MANIFEST_SUFFIX)
        }
        shared = content_prefix(category, name)
        return [
            info
            for info in infos
            if not info.key.endswith(MANIFEST_SUFFIX)
            and not info.key.startswith(shared)
            and _backup_id_of(info.key) not in claimed_ids
            and info.modified < older_than
        ]

    def unreferenced_content(
        self, category: Category, name: str, *, older_than: datetime
    ) -> list[ObjectInfo]:
        """Shared content that no readable manifest of the series lists any more.

        If a manifest cannot be read, nothing is reported: content is never removed on a
        guess.
        """
        scan = self.scan(category, name)
        if scan.problems:
            return []
        used = {obj.key for m in scan.manifests for obj in m.objects}
        return [
            info
            for info in self.storage.list(content_prefix(category, name))
            if info.key not in used and info.modified < older_than
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


def _manifest_id_of(key: str) -> str:
    """The backup id a manifest's name claims (even when the rest of the name is odd)."""
    parts = key.rsplit("/", 1)[-1].removesuffix(MANIFEST_SUFFIX).split("_")
    return parts[1] if len(parts) == 3 else parts[0]
