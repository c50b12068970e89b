"""The catalog is the storage itself: the manifests under a prefix.

Data keys follow the seed's folders with the UTC date of the backup's start as a folder;
manifests sit in one folder per database and carry in their names what a restore plan
needs (restore point, id and kind, parent)::

    database/<db>/2026-11-26/<backup-id>.data.zst.age
    database/<db>/manifests/<restore-point>_<backup-id>_<parent-id|none>.manifest.json
    database/<db>/wal/<system-id>/<wal-file-name>.zst.age   (PostgreSQL: by wal-push)
    database/<db>/wal/<system-id>/<wal-file-name>.rec       (its signed archive record)

A tier is untrusted storage.  A manifest is stored as a signed envelope
(:mod:`backupflow.envelope`); only one a trusted key signed, stored under the key its
content gives, and naming only the object keys derived from its backup's identity
(category, series, date, id, role) is a backup.  Anything else is *foreign*: reported by
tier and key, and never restored, copied, or the reason anything is overwritten or deleted.

So planning a restore costs one LIST request per 1,000 backups of that database, plus one
GET per backup of the chosen chain (:meth:`Catalog.entries`, :meth:`Catalog.load`).  A data
object without a manifest is not a backup: it is the left-over of an interrupted run,
removed after a grace period.  Archived WAL is not: ``backupflow wal-push`` writes it before
any backup lists it, so it is never an orphan (only retention, through the log backup that
lists it, deletes it).

Size: about 430 lines: the key layout, the names' grammar and the catalog's reads and writes
are one rule set (what is ours, what is foreign), kept in one place.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from backupflow.codecs import get_codec
from backupflow.engines.registry import ENGINES
from backupflow.envelope import is_envelope, open_envelope, seal
from backupflow.errors import (
    BackupflowError,
    CatalogError,
    ForeignManifestError,
    ObjectNotFoundError,
)
from backupflow.keys import Keyring
from backupflow.models import MANIFEST_VERSION, BackupKind, Category, Manifest, StoredObject, utc
from backupflow.storage.base import ObjectInfo, Storage, get_bytes, put_bytes

__all__ = [
    "CONTENT_ROLE",
    "MANIFEST_SUFFIX",
    "WAL_RECORD_SUFFIX",
    "Catalog",
    "CatalogEntry",
    "CatalogScan",
    "condemned_prefix",
    "content_prefix",
    "expected_key",
    "manifest_key",
    "mark_key",
    "new_push_id",
    "object_key",
    "owned_keys",
    "read_unsigned",
    "series_of_key",
    "series_prefix",
    "wal_key",
    "wal_prefix",
    "wal_push_id",
    "wal_record_key",
]

MANIFEST_SUFFIX = ".manifest.json"


CONTENT_ROLE = "content:"
WAL_RECORD_SUFFIX = ".rec"


def content_prefix(category: Category, name: str) -> str:
    """The folder of a content-addressed set's shared content."""
    return f"{category.value}/{name}/content/"


def condemned_prefix(category: Category, name: str) -> str:
    """The folder of a content-addressed set's condemned marks (beside its series' folder,
    so that nothing that lists the series takes a mark for a backup's object)."""
    return f"{category.value}/{name}.gc/"


def mark_key(category: Category, name: str, key: str) -> str:
    """Where the condemned mark of the content object ``key`` is stored."""
    return condemned_prefix(category, name) + key.removeprefix(series_prefix(category, name))


def wal_prefix(category: Category, name: str) -> str:
    """The folder of a PostgreSQL series' archived WAL files and their records."""
    return f"{category.value}/{name}/wal/"


#: The push id in an archived WAL file's key: each push stores its own object
#: (``<name>.p<16 hex>.zst.age``), so two pushes of one segment never replace each other's.
WAL_PUSH_ID = re.compile(r"\.(?P<push>p[0-9a-f]{16})(?=(?:\.zst|\.gz)?(?:\.age)?$)")


def new_push_id() -> str:
    """A fresh push id (64 random bits)."""
    return "p" + secrets.token_hex(8)


def wal_key(
    category: Category, name: str, wal_path: str, extension: str, push_id: str | None = None
) -> str:
    """Where one archived WAL file is stored; ``wal_path`` is ``<sysid>/<file name>``
    (checked by the caller), ``extension`` its codec's and encryption's, ``push_id`` the
    push that wrote it (None: a key written before push ids)."""
    if push_id is not None and not re.fullmatch(r"p[0-9a-f]{16}", push_id):
        raise ValueError(f"{push_id[:40]!r} is not a push id")
    middle = f".{push_id}" if push_id else ""
    return f"{wal_prefix(category, name)}{wal_path}{middle}{extension}"


def wal_push_id(key: str) -> str | None:
    """The push id in an archived WAL file's key, None when it has none."""
    found = WAL_PUSH_ID.search(key)
    return found["push"] if found else None


def wal_record_key(category: Category, name: str, wal_path: str) -> str:
    """Where the signed record of one archived WAL file is stored."""
    return f"{wal_prefix(category, name)}{wal_path}{WAL_RECORD_SUFFIX}"


def series_of_key(key: str) -> str:
    """The series (``category/name``) a key of a series' folder belongs to: what a signer's
    scope is checked against."""
    return "/".join(key.split("/", 2)[:2])


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


_ID = r"[0-9]{8}T[0-9]{6}Z-(?:full|diff|log)-[0-9a-f]{6}"
#: Names our backups' objects have: ``<YYYY-MM-DD>/<backup-id>.<role>[.<codec ext>][.age]``.
_OBJECT_NAME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}/(?P<id>" + _ID + r")\.[a-z][a-z0-9_-]{0,31}"
    r"(?:\.zst|\.gz)?(?:\.age)?$"
)


def expected_key(manifest: Manifest, obj: StoredObject) -> str:
    """The only key an object of this backup may have, derived from the backup's identity
    (category, series, start date, id, role), its codec and its encryption."""
    from backupflow.filesets import content_key

    extension = get_codec(obj.codec).extension + (".age" if obj.encryption else "")
    for spec in ENGINES.values():  # roles an engine owns (PostgreSQL's archived WAL)
        if spec.object_key is not None and obj.role.startswith(spec.object_roles):
            return spec.object_key(manifest, obj, extension)
    if obj.role.startswith(CONTENT_ROLE):
        sha = obj.role.removeprefix(CONTENT_ROLE)
        return content_key(manifest.category, manifest.database, sha, extension)
    return object_key(
        manifest.category,
        manifest.database,
        manifest.started_at,
        manifest.id,
        f".{obj.role}{extension}",
    )


def owned_keys(manifest: Manifest) -> list[str]:
    """The object keys of a manifest that are not the ones its identity gives (empty when
    every key is its own)."""
    return [obj.key for obj in manifest.objects if obj.key != expected_key(manifest, obj)]


def _check_identity(manifest: Manifest, key: str, source: str) -> None:
    """Foreign unless stored where its content says and naming only its own object keys."""
    if manifest_key(manifest) != key:
        raise ForeignManifestError(
            f"foreign manifest {source} ignored: it describes backup {manifest.id} of "
            f"{manifest.category.value}/{manifest.database}, which belongs elsewhere."
        )
    strangers = [obj.key for obj in manifest.objects if obj.key != expected_key(manifest, obj)]
    if strangers or len({obj.role for obj in manifest.objects}) != len(manifest.objects):
        raise ForeignManifestError(
            f"foreign manifest {source} ignored: it names object keys that are not its "
            f"backup's own ({', '.join(strangers[:3]) or 'a role twice'})."
        )


def read_unsigned(raw: bytes, key: str, source: str) -> Manifest:
    """A format-1 (unsigned) manifest, checked for shape and identity (``adopt`` only)."""
    if is_envelope(raw):
        raise CatalogError(f"manifest {source} is already signed.")
    manifest = Manifest.from_json(raw, source=source)
    if manifest.format_version != 1:
        raise ForeignManifestError(
            f"foreign manifest {source} ignored: an unsigned manifest of format "
            f"{manifest.format_version} was never written by backupflow."
        )
    _check_identity(manifest, key, source)
    return manifest


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


#: Above this many objects, recording a backup lists their folders instead of a HEAD each.
_LIST_OVER = 32
#: Manifests read at once when a whole series is authenticated.
READ_WORKERS = 8


class Catalog:
    """Reads and writes the signed manifests of one storage tier."""

    def __init__(self, storage: Storage, keyring: Keyring | None = None) -> None:
        self.storage = storage
        self.keyring = keyring or Keyring()

    def scan(self, category: Category, name: str) -> CatalogScan:
        """Every authenticated manifest of one series; foreign and unreadable ones are
        reported, not fatal."""
        entries, strays = self.listing(category, name)
        problems = [
            f"foreign object {self.storage.name}/{key} in the manifests folder ignored."
            for key in strays
            if key.endswith(MANIFEST_SUFFIX)
        ]
        manifests, failed = self.load_many(entries)
        problems += failed
        manifests.sort(key=lambda m: (m.restore_point, m.id))
        return CatalogScan(tuple(manifests), tuple(problems))

    def load_many(self, entries: Iterable[CatalogEntry]) -> tuple[list[Manifest], list[str]]:
        """Authenticate many manifests (a few GETs at a time); the failures as sentences."""
        wanted = list(entries)

        def one(entry: CatalogEntry) -> Manifest | str | None:
            try:
                return self.load(entry)
            except ObjectNotFoundError:
                return None  # removed while listing
            except BackupflowError as exc:
                return str(exc)

        if len(wanted) > 1:
            with ThreadPoolExecutor(min(READ_WORKERS, len(wanted))) as pool:
                results = list(pool.map(one, wanted))
        else:
            results = [one(e) for e in wanted]
        manifests = [r for r in results if isinstance(r, Manifest)]
        return manifests, [r for r in results if isinstance(r, str)]

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
        """Read and authenticate the manifest behind an entry; anything not signed by a
        trusted key, stored elsewhere than its content says, or naming keys that are not its
        own is a :class:`ForeignManifestError`."""
        return self.load_key(entry.key)

    def load_key(self, key: str) -> Manifest:
        """:meth:`load` for a manifest key."""
        return self.load_raw(key)[0]

    def load_raw(self, key: str) -> tuple[Manifest, bytes]:
        """:meth:`load` for a manifest key, with the envelope's exact bytes (which
        replication copies, so it needs no signing key)."""
        source = f"{self.storage.name}/{key}"
        raw = get_bytes(self.storage, key)
        if not is_envelope(raw):
            raise ForeignManifestError(
                f"unsigned manifest {source} ignored: no trusted key signed it."
            )
        payload = open_envelope(raw, self.keyring, source=source, series=series_of_key(key))
        try:
            manifest = Manifest.from_json(payload, source=source)
        except CatalogError as exc:
            raise ForeignManifestError(f"foreign manifest {source} ignored: {exc}") from None
        if manifest.format_version != MANIFEST_VERSION:
            raise ForeignManifestError(
                f"foreign manifest {source} ignored: a signed manifest must be format "
                f"{MANIFEST_VERSION}."
            )
        _check_identity(manifest, key, source)
        return manifest, raw

    def copy_envelope(self, manifest: Manifest, raw: bytes) -> str:
        """Write a manifest's envelope exactly as it was signed (replication): it must be
        one this tier's keyring trusts for that very manifest, and every object it lists
        must be stored here at its recorded size.  Needs no signing key."""
        key = manifest_key(manifest)
        source = f"the copy of {manifest.id} for {self.storage.name}"
        payload = open_envelope(raw, self.keyring, source=source, series=series_of_key(key))
        if Manifest.from_json(payload, source=source) != manifest:
            raise CatalogError(f"refusing to copy backup {manifest.id}: its envelope differs.")
        self._check_sizes(manifest)
        put_bytes(self.storage, key, raw)
        return key

    def _check_sizes(self, manifest: Manifest) -> None:
        """Every object is stored at its recorded size: one LIST per folder when a backup has
        many objects (thousands of shared contents, a day of WAL), else one HEAD each."""
        sizes: dict[str, int] = {}
        if len(manifest.objects) > _LIST_OVER:
            for folder in sorted({obj.key.rsplit("/", 1)[0] + "/" for obj in manifest.objects}):
                sizes.update((info.key, info.size) for info in self.storage.list(folder))
        for obj in manifest.objects:
            size = sizes.get(obj.key)
            info = self.storage.stat(obj.key) if size is None else None
            if info is not None:
                size = info.size
            if size != obj.size:
                raise CatalogError(
                    f"refusing to record backup {manifest.id}: {obj.key} is {size} bytes, "
                    f"not {obj.size}."
                )

    def write(self, manifest: Manifest) -> str:
        """Sign and write a manifest; call only after every object it lists is stored and
        verified.  Needs the signing key."""
        if manifest.format_version != MANIFEST_VERSION:
            manifest = manifest.model_copy(update={"format_version": MANIFEST_VERSION})
        strangers = owned_keys(manifest)
        if strangers:
            raise CatalogError(
                f"refusing to record backup {manifest.id}: {strangers[0]} is not a key of "
                "that backup."
            )
        sealed = seal(manifest.to_json(), self.keyring)
        self._check_sizes(manifest)
        key = manifest_key(manifest)
        put_bytes(self.storage, key, sealed)
        return key

    def delete(self, manifest: Manifest, *, keep: Collection[str] = ()) -> None:
        """Remove a backup: its manifest first, then its data (the reverse of writing).

        Shared content (``content:*`` objects of a content-addressed set) is left for
        :func:`~backupflow.filesets.contents.sweep_content`, since other backups may still
        use it; so is any key in ``keep`` (objects another, kept backup also lists, e.g.
        archived WAL).
        """
        self.storage.delete(manifest_key(manifest))
        for obj in manifest.objects:
            if not obj.role.startswith(CONTENT_ROLE) and obj.key not in keep:
                self.storage.delete(obj.key)

    def orphans(self, category: Category, name: str, *, older_than: datetime) -> list[ObjectInfo]:
        """Objects of a series named as our backups' objects are
        (``<date>/<backup-id>.<role>...``), whose backup id no manifest name claims, older
        than ``older_than``.  Nothing else in the series is ever an orphan: a key we would
        not have written is not ours to delete.

        Manifests that cannot be read (even foreign ones) still protect the objects their
        backup id names.
        """
        prefix = series_prefix(category, name)
        infos = list(self.storage.list(prefix))
        claimed_ids = {
            _manifest_id_of(info.key) for info in infos if info.key.endswith(MANIFEST_SUFFIX)
        }
        found = []
        for info in infos:
            match = _OBJECT_NAME.match(info.key.removeprefix(prefix))
            if match is None or match["id"] in claimed_ids or info.modified >= older_than:
                continue
            found.append(info)
        return found

    def remove(self, infos: Iterable[ObjectInfo]) -> list[str]:
        """Delete the given objects; returns their keys."""
        removed = []
        for info in infos:
            self.storage.delete(info.key)
            removed.append(info.key)
        return removed


def _manifest_id_of(key: str) -> str:
    """The backup id a manifest's name claims (even when the rest of the name is odd)."""
    parts = key.rsplit("/", 1)[-1].removesuffix(MANIFEST_SUFFIX).split("_")
    return parts[1] if len(parts) == 3 else parts[0]
