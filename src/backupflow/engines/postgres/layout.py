"""Laying a base backup down in a new data folder, and reading what a manifest recorded.

The tar is read as a stream (``tarfile`` ``r|``): only regular files and folders are
written, never an absolute name, a ``..`` part, a link or a device; folders are ``0700``
and files ``0600``, created exclusively, so a name in the tar can never write outside the
new folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from backupflow.catalog import Catalog
from backupflow.engines.postgres.walnames import WalName, parse_lsn, parse_wal_name
from backupflow.errors import BackupflowError, CatalogError, IntegrityError
from backupflow.models import BackupKind, Category, Manifest
from backupflow.storage import Tier

__all__ = [
    "extract_base",
    "newest_log_last",
    "position_int",
    "position_lsn",
    "position_str",
    "wal_files",
    "wal_since",
]

_CHUNK = 1 << 20


def _safe_parts(name: str) -> tuple[str, ...]:
    path = PurePosixPath(name)
    parts = tuple(p for p in path.parts if p not in ("", "."))
    if path.is_absolute() or not parts or any(p == ".." or "\x00" in p for p in parts):
        raise IntegrityError(f"the base backup holds the unsafe name {name[:80]!r}; refusing it.")
    return parts


#: The largest backup manifest read (about 200 bytes per file of the cluster).
_MAX_MANIFEST = 512 << 20


def manifest_checksums(path: Path) -> dict[str, str] | None:
    """Each file's SHA-256 as ``pg_basebackup``'s backup manifest at ``path`` records it
    (path -> hex), or None when any entry has no plain path or no SHA-256 (then
    pg_verifybackup checks the checksums itself)."""
    with path.open("rb") as handle:
        raw = handle.read(_MAX_MANIFEST + 1)
    if len(raw) > _MAX_MANIFEST:
        return None
    try:
        files = json.loads(raw).get("Files")
    except (ValueError, AttributeError):
        return None  # pg_verifybackup says what is wrong with it
    if not isinstance(files, list):
        return None
    found: dict[str, str] = {}
    for entry in files:
        if not isinstance(entry, dict):
            return None
        name, algorithm, digest = (
            entry.get("Path"),
            entry.get("Checksum-Algorithm"),
            entry.get("Checksum"),
        )
        if not isinstance(name, str) or algorithm != "SHA256" or not isinstance(digest, str):
            return None
        found[name] = digest.lower()
    return found


def extract_base(
    stream: BinaryIO,
    dest: Path,
    chown: Callable[[Path], None],
    *,
    chunk: int = _CHUNK,
    checksums: Mapping[str, str] | None = None,
) -> int:
    """Write the base tar from ``stream`` into the new folder ``dest``; the bytes written.
    With ``checksums`` (:func:`manifest_checksums`), each file it names is checked against
    its SHA-256 as it is written, and every one it names must be in the tar."""
    dest.mkdir(mode=0o700)
    chown(dest)
    written = 0
    seen: set[str] = set()
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            parts = _safe_parts(member.name)
            target = dest.joinpath(*parts)
            if member.isdir():
                _make_dirs(dest, parts, chown)
                continue
            if not member.isfile():
                raise IntegrityError(
                    f"the base backup holds {member.name[:80]!r}, which is not a regular file "
                    "or folder (extra tablespaces and links are not supported); refusing it."
                )
            _make_dirs(dest, parts[:-1], chown)
            source = tar.extractfile(member)
            if source is None:
                raise IntegrityError(f"cannot read {member.name[:80]!r} from the base backup.")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(target, flags, 0o600)
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                while block := source.read(chunk):
                    out.write(block)
                    digest.update(block)
                    written += len(block)
            chown(target)
            relative = "/".join(parts)
            expected = checksums.get(relative) if checksums is not None else None
            if expected is not None:
                if digest.hexdigest() != expected:
                    raise IntegrityError(
                        f"{relative[:80]} in the base backup does not match the SHA-256 its "
                        "backup manifest records; caught before PostgreSQL read it."
                    )
                seen.add(relative)
    if checksums is not None and len(seen) != len(checksums):
        lost = sorted(set(checksums) - seen)
        raise IntegrityError(
            f"the base backup lacks {lost[0][:80]} (and {len(lost) - 1} more), which its "
            "backup manifest lists."
        )
    return written


def _make_dirs(root: Path, parts: tuple[str, ...], chown: Callable[[Path], None]) -> None:
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise IntegrityError(f"{current} is a link; refusing to write through it.")
        if not current.is_dir():
            current.mkdir(mode=0o700)
            chown(current)


def _position(manifest: Manifest) -> dict[str, Any]:
    return manifest.position or {}


def position_str(manifest: Manifest, key: str) -> str:
    value = _position(manifest).get(key)
    if not isinstance(value, str) or not value or len(value) > 64:
        raise CatalogError(f"backup {manifest.id} does not record its {key}; it cannot be used.")
    return value


def position_int(manifest: Manifest, key: str) -> int:
    value = _position(manifest).get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CatalogError(f"backup {manifest.id} does not record its {key}; it cannot be used.")
    return value


def position_lsn(manifest: Manifest, key: str) -> int:
    try:
        return parse_lsn(position_str(manifest, key))
    except ValueError:
        raise CatalogError(f"backup {manifest.id} records an unreadable {key}.") from None


def wal_files(manifest: Manifest) -> list[str]:
    """The archived WAL names a log backup lists, checked."""
    names = _position(manifest).get("files", [])
    if not isinstance(names, list):
        raise CatalogError(f"backup {manifest.id} records an unreadable WAL file list.")
    try:
        segment_bytes = position_int(manifest, "segment_bytes")
        for name in names:
            parse_wal_name(str(name), segment_bytes)
    except ValueError as exc:
        raise CatalogError(f"backup {manifest.id} lists a bad WAL name: {exc}.") from None
    return [str(n) for n in names]


def wal_since(names: list[WalName], after: int, timeline: int, last: WalName) -> list[WalName]:
    """The archived names a log backup lists, in replay order: segments (and ``.partial`` /
    ``.backup`` files) after segment ``after`` of ``timeline`` through ``last``; on a later
    timeline (a restore promoted a copy), every one up to ``last`` from its fork; and the
    history files of the timelines after ``timeline`` up to ``last``'s."""
    return [
        n
        for n in sorted(names)
        if (n.kind == "history" and timeline < n.timeline <= last.timeline)
        or (
            n.kind != "history"
            and n.segno <= last.segno
            and n.timeline <= last.timeline
            and (n.segno > after or n.timeline > timeline)
        )
    ]


def newest_log_last(tier: Tier, database: str, sysid: str, segment_bytes: int) -> WalName | None:
    """The last WAL segment the newest log backup of the series in ``tier`` lists, whatever
    base it builds on; None when there is none, or it is of another cluster or unreadable.

    The first log after a new base starts there, not at the base's start segment: the WAL
    between the previous chain's last log and the new base is then listed too, so every
    second between them stays restorable from the older base."""
    catalog = Catalog(tier.storage, tier.keyring)
    try:
        entries, _ = catalog.listing(Category.DATABASE, database)
        logs = [e for e in entries if e.kind is BackupKind.LOG]
        if not logs:
            return None
        newest = max(logs, key=lambda e: (e.restore_point, e.id))
        manifest = catalog.load(newest)
        if position_str(manifest, "system_identifier") != sysid:
            return None
        return parse_wal_name(position_str(manifest, "last"), segment_bytes)
    except (BackupflowError, ValueError):
        return None
