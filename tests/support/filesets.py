"""Hand-made file-set backups (tar or content-addressed) for hostile-restore tests."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from datetime import UTC, datetime
from pathlib import Path

from backupflow.catalog import Catalog
from backupflow.codecs import ZstdCodec
from backupflow.config import FileSetSettings
from backupflow.filesets import Member, content_key
from backupflow.filesets.engine import FileSetEngine
from backupflow.models import BackupKind, Category, Manifest, StoredObject, new_backup_id
from backupflow.pipeline import store_stream
from backupflow.restore import RestoreOutcome, execute_restore, load_plan
from backupflow.storage import MemoryStorage, Tier
from backupflow.storage.base import Storage
from tests.support.keys import KEYRING

__all__ = [
    "LAYOUTS",
    "file",
    "files_engine",
    "folder",
    "link",
    "restore",
    "snapshot",
    "store",
    "tar_of",
]


def files_engine(name: str) -> FileSetEngine:
    """A file-set engine whose only use is its chain rule (planning reads no files)."""
    return FileSetEngine(
        name, FileSetSettings(root=Path("/nonexistent"), include=["**"]), staging_dir=Path(".")
    )


LAYOUTS = ("tar", "content")
SETS = {"tar": ("config", Category.CONFIG), "content": ("uploads", Category.UPLOADS)}


def file(path: str, data: bytes = b"x", mode: int = 0o644, size: int | None = None) -> Member:
    """A file member; ``size`` overrides the recorded size (to lie about it)."""
    digest = hashlib.sha256(data).hexdigest()
    return Member(path, "file", mode, 1_700_000_000.0, len(data) if size is None else size, digest)


def folder(path: str, mode: int = 0o755) -> Member:
    return Member(path, "dir", mode, 1_700_000_000.0)


def link(path: str, target: str) -> Member:
    return Member(path, "symlink", 0o777, 1_700_000_000.0, target=target)


def tar_of(members: list[Member], data: dict[str, bytes]) -> bytes:
    """A PAX tar holding ``members``, file contents from ``data`` (by path, default b"x")."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.path)
            info.mode = member.mode
            info.mtime = int(member.mtime)
            if member.type == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif member.type == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = member.target or ""
                tar.addfile(info)
            else:
                content = data.get(member.path, b"x")
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _put(storage: Storage, key: str, data: bytes, role: str) -> StoredObject:
    return store_stream(
        storage, key, io.BytesIO(data), ZstdCodec(threads=0), role=role, keyring=KEYRING
    )


def store(
    storage: Storage,
    layout: str,
    members: list[Member],
    *,
    data: dict[str, bytes] | None = None,
    tar_bytes: bytes | None = None,
    listing: bytes | None = None,
) -> Manifest:
    """Store a backup of ``members`` in ``layout`` ("tar": config, "content": uploads).

    ``data`` gives file contents by path (default ``b"x"``); ``tar_bytes`` and ``listing``
    replace the archive and the member list as stored, to make them disagree.
    """
    data = data or {}
    name, category = SETS[layout]
    started = datetime.now(UTC)
    backup_id = new_backup_id(BackupKind.FULL, started)
    prefix = f"{category.value}/{name}/{started:%Y-%m-%d}/{backup_id}"
    if listing is None:
        listing = b"".join((m.to_json() + "\n").encode() for m in members)
    objects = [_put(storage, f"{prefix}.members.zst", listing, "members")]
    if layout == "tar":
        archive = tar_bytes if tar_bytes is not None else tar_of(members, data)
        objects.append(_put(storage, f"{prefix}.data.zst", archive, "data"))
    else:
        for member in members:
            if member.type == "file" and member.sha256:
                role = f"content:{member.sha256}"
                if any(o.role == role for o in objects):
                    continue
                key = content_key(category, name, member.sha256, ".zst")
                objects.append(_put(storage, key, data.get(member.path, b"x"), role))
    manifest = Manifest(
        id=backup_id,
        category=category,
        kind=BackupKind.FULL,
        engine="files",
        database=name,
        started_at=started,
        finished_at=started,
        restore_point=started,
        position={"layout": layout},
        objects=tuple(objects),
    )
    Catalog(storage, KEYRING).write(manifest)
    return manifest


def restore(
    tmp_path: Path,
    storage: MemoryStorage,
    layout: str,
    target: Path,
    *,
    in_place: bool = False,
    staging: Path | None = None,
) -> RestoreOutcome:
    """Restore the latest backup of the layout's set into ``target`` (``in_place``: over it)."""
    name, category = SETS[layout]
    engine = FileSetEngine(
        name,
        FileSetSettings(root=target if in_place else tmp_path / "live", include=["**"]),
        staging_dir=staging or tmp_path / "staging",
    )
    tier = Tier("primary", storage, KEYRING)
    loaded = load_plan([tier], engine, name, None, datetime.now(UTC), category)
    return execute_restore(engine, loaded, target, replace=in_place, chunk_bytes=1 << 16)


def snapshot(root: Path, *, skip: tuple[Path, ...] = ()) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root`` (links not followed): type, mode, content or link target."""
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in [*dirnames, *filenames]:
            path = here / name
            if path in skip:
                continue
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                found[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return found
