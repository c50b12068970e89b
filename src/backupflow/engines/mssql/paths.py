"""Where SQL Server files go, and which names from a server or a manifest may be used.

* Backup file names are built only from validated parts and are one path component: they
  are joined to ``server_backup_dir`` / ``worker_backup_dir`` and must still sit directly
  inside it afterwards.
* Folders used for ``MOVE`` (configured, or the server's own defaults) must be absolute
  folders on the server: no share (``\\\\host\\share``, ``//host/share``), no relative path,
  no ``..``.
* A manifest's file list contributes only a logical name (quoted in T-SQL, and spelled
  safely when it becomes part of a file name) and a suffix from ``.mdf``, ``.ndf``, ``.ldf``;
  its physical paths are never used as paths.
* The worker creates its files with ``O_NOFOLLOW | O_EXCL`` and deletes only names directly
  inside its backup folder.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from backupflow.errors import CatalogError, EngineError
from backupflow.models import Manifest
from backupflow.names import is_database_name

__all__ = [
    "COPY_MODE",
    "FILE_NAME_PATTERN",
    "ManifestFile",
    "check_file_name",
    "check_manifest",
    "check_server_folder",
    "create_private",
    "manifest_files",
    "move_targets",
    "remove_inside",
    "server_file",
    "worker_file",
]

#: One file name in a backup folder: no separator and no leading dot, so never ``.`` or
#: ``..`` (a database may be called ``a..b``: that is one component, not a way up).
FILE_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$"
_FILE_NAME = re.compile(FILE_NAME_PATTERN)
#: Restore copies: the worker's user reads and writes them; the SQL Server's group (when the
#: folder is shared with it through a group) may read them; nobody else.
COPY_MODE = 0o640
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_SUFFIXES = {"D": (".mdf", ".ndf"), "L": (".ldf",)}
_FOLDER_TYPES = {"S", "F"}  # FILESTREAM and full-text folders: no suffix
_MAX_LOGICAL = 128  # sysname
_MAX_PHYSICAL = 1024
_MAX_FILES = 32767  # SQL Server's own limit per database
_SAFE_STEM = 64


def check_file_name(name: object, *, what: str = "a backup file name") -> str:
    """``name`` if it is one safe path component, else :class:`EngineError` (our own parts
    were wrong; the name is not shown)."""
    if isinstance(name, str) and _FILE_NAME.fullmatch(name):
        return name
    raise EngineError(
        f"{what} would not be a plain file name inside the backup folder; refusing to use it."
    )


def _shown(value: object) -> str:
    ok = isinstance(value, str) and len(value) <= 128 and value.isprintable()
    return f"{value!r} " if ok else ""


def check_server_folder(folder: object, where: str, *, allow_share: bool = False) -> PurePath:
    """A folder on the database server: absolute (``/var/opt/mssql/data`` or ``D:\\Data``),
    without ``..``; a share only with ``allow_share``.  Raises :class:`ValueError` with the
    reason (the caller turns it into its own error class)."""
    if not isinstance(folder, str) or not folder or len(folder) > 260:
        raise ValueError(f"the {where} must be a folder path of 1 to 260 characters.")
    bad = (
        "is not allowed: give an absolute folder on the database server (not a share such as "
        "\\\\host\\share, not a relative path, no '..')."
    )
    if not folder.isprintable():
        raise ValueError(f"the {where} {bad}")
    share = folder.startswith(("\\\\", "//", "\\/", "/\\"))
    pure: PurePath
    if share and allow_share:
        pure = PureWindowsPath(folder)
    elif share:
        raise ValueError(f"the {where} {_shown(folder)}{bad}")
    elif _DRIVE.match(folder) and ":" not in folder[2:]:
        pure = PureWindowsPath(folder)
    elif folder.startswith("/") and "\\" not in folder and ":" not in folder:
        pure = PurePosixPath(folder)
    else:
        raise ValueError(f"the {where} {_shown(folder)}{bad}")
    if ".." in re.split(r"[\\/]", folder):
        raise ValueError(f"the {where} {_shown(folder)}{bad}")
    return pure


def server_file(folder: PurePath, name: str) -> str:
    """``name`` joined to a server folder; it must stay directly inside it."""
    joined = folder / check_file_name(name)
    if joined.parent != folder or joined.name != name:
        raise EngineError("a backup file name would leave the backup folder; refusing to use it.")
    return str(joined)


def worker_file(folder: Path, name: str) -> Path:
    """``name`` inside the worker's backup folder; it must stay directly inside it."""
    joined = folder / check_file_name(name)
    if joined.parent != folder or joined.name != name:
        raise EngineError("a backup file name would leave the backup folder; refusing to use it.")
    return joined


def _inside(folder: Path, path: Path) -> bool:
    return path.parent == folder and _FILE_NAME.fullmatch(path.name) is not None


def remove_inside(folder: Path, path: Path) -> None:
    """Delete ``path`` (a link itself, never what it points to) if it sits directly inside
    ``folder``; anything else is refused."""
    if not _inside(folder, path):
        raise EngineError(
            f"refusing to delete {path.name!r}: it is not a file directly inside the worker's "
            "backup folder."
        )
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError as exc:
        raise EngineError(f"{path.name!r} in the backup folder is a folder; remove it.") from exc


def create_private(folder: Path, path: Path) -> BinaryIO:
    """Create ``path`` directly inside ``folder`` for writing: never through a link, never
    over an existing file (a stale one of ours is removed first), mode :data:`COPY_MODE`."""
    remove_inside(folder, path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, COPY_MODE)
    except FileExistsError as exc:
        raise EngineError(
            f"{path.name} appeared in the backup folder while the restore was preparing it; "
            "another process is writing there, check who can write to that folder."
        ) from exc
    return os.fdopen(fd, "wb")


@dataclass(frozen=True)
class ManifestFile:
    """A database file of a backup, as far as a restore may use it."""

    logical: str
    type: str  # D data, L log, S FILESTREAM, F full-text
    suffix: str  # "" for folders


def _damaged(backup_id: str, what: str) -> CatalogError:
    return CatalogError(
        f"backup {backup_id} has {what} in its file list; its manifest is damaged or was "
        "altered, so restore from another tier or another backup."
    )


def _logical(value: object, backup_id: str) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= _MAX_LOGICAL
        or any(unicodedata.category(c) in ("Cc", "Cs") for c in value)
    ):
        raise _damaged(backup_id, "a logical file name that SQL Server cannot have")
    return value


def _suffix(physical: object, kind: str, backup_id: str) -> str:
    if not isinstance(physical, str) or len(physical) > _MAX_PHYSICAL:
        raise _damaged(backup_id, "a physical file name that is not a short text")
    if kind in _FOLDER_TYPES:
        return ""
    last = re.split(r"[\\/]", physical)[-1]
    suffix = ("." + last.rsplit(".", 1)[1].lower()) if "." in last else ""
    allowed = _SUFFIXES[kind]
    return suffix if suffix in allowed else allowed[0]


def manifest_files(raw: object, backup_id: str) -> list[ManifestFile]:
    """The file list of a manifest's position, checked; only the logical name, the type and
    a known suffix survive.  Anything else is a :class:`CatalogError`."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > _MAX_FILES:
        raise _damaged(backup_id, "something other than a list of files")
    files = []
    for item in raw:
        if not isinstance(item, dict):
            raise _damaged(backup_id, "an entry that is not a file")
        kind = item.get("type")
        if kind not in _SUFFIXES and kind not in _FOLDER_TYPES:
            raise _damaged(backup_id, "a file of an unknown type")
        assert isinstance(kind, str)
        logical = _logical(item.get("logical"), backup_id)
        files.append(ManifestFile(logical, kind, _suffix(item.get("physical"), kind, backup_id)))
    if len({f.logical.casefold() for f in files}) != len(files):
        raise _damaged(backup_id, "the same logical name twice")
    return files


def _safe_stem(logical: str) -> str:
    stem = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in logical)
    return stem[:_SAFE_STEM]


def move_targets(
    files: Sequence[ManifestFile], target: str, data: PurePath, log: PurePath
) -> list[tuple[str, str]]:
    """(logical name, new physical path) for each file: ``<folder>/<target>_<safe>.<suffix>``,
    data files in ``data``, log files in ``log``; safe spellings made unique."""
    taken: set[str] = set()
    moves = []
    for item in files:
        base = f"{target}_{_safe_stem(item.logical)}"
        name, serial = base, 1
        while name.casefold() in taken:  # one stem per file, whatever its suffix
            serial += 1
            name = f"{base}_{serial}"
        taken.add(name.casefold())
        folder = log if item.type == "L" else data
        moves.append((item.logical, server_file(folder, name + item.suffix)))
    return moves


def check_manifest(manifest: Manifest, database: str, engine: str) -> list[ManifestFile]:
    """A manifest's names, checked before anything uses them: its database must be
    ``database`` (and follow the name rule), its engine ``engine``, its server file name one
    plain component; its file list is returned checked."""
    if not is_database_name(manifest.database):
        raise CatalogError(
            f"backup {manifest.id} names a database that breaks the name rule; its "
            "manifest is damaged or was altered, so restore from another tier."
        )
    if manifest.database != database:
        raise CatalogError(
            f"backup {manifest.id} belongs to another database than {database}; its "
            "manifest was moved or altered, so restore from another tier."
        )
    if manifest.engine != engine:
        raise CatalogError(
            f"backup {manifest.id} is not a SQL Server backup; restore it with its own engine."
        )
    server_name = manifest.position.get("server_file")
    if server_name is not None:
        try:
            check_file_name(server_name)
        except EngineError:
            raise CatalogError(
                f"backup {manifest.id} records a server file name that is not a plain file "
                "name; its manifest is damaged or was altered, so restore from another tier."
            ) from None
    return manifest_files(manifest.position.get("files"), manifest.id)
