"""File sets: select files, back them up as a tar stream or content-addressed, list members.

Config and log files go into one tar stream per backup (modes, mtimes and symlinks kept),
through the same compress + checksum + store pipeline as database backups.  Uploads are
content-addressed: each distinct file content is stored once under its content id (keyed:
an HMAC of its SHA-256 under a key derived from the signing key, so that nobody who lists
the bucket can tell whether a file they know is stored), and every backup lists which
content each path had, so thirty daily restore points of a large uploads folder cost little
more than one.  Every backup stores a member list (path, type, size, mode, mtime, SHA-256,
link target, content id) so that a restore is verified file by file and finds each file's
content without the signing key.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from backupflow.config import FileSetSettings
from backupflow.errors import IntegrityError
from backupflow.models import Category

__all__ = [
    "FILE_SETS",
    "MAX_MEMBERS",
    "MAX_MEMBER_LINE",
    "Member",
    "ScanReport",
    "content_key",
    "decode_members",
    "encode_members",
    "hash_file",
    "is_content_addressed",
    "open_private",
    "open_source",
    "scan",
    "select",
    "tree_entries",
    "write_tar",
]

FileSetName = Literal["config", "logs", "uploads"]
FILE_SETS: dict[str, Category] = {
    "config": Category.CONFIG,
    "logs": Category.LOGS,
    "uploads": Category.UPLOADS,
}
_CHUNK = 1 << 20


def open_private(path: Path) -> BinaryIO:
    """A new file only this user can read (``0600`` whatever the umask; never through a
    link): staged tars hold the ``.env``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def is_content_addressed(name: str) -> bool:
    """Uploads are stored content-addressed; config and logs as tar streams."""
    return name == "uploads"


@dataclass(frozen=True)
class Member:
    """One entry of a file set as it was backed up."""

    path: str  # relative, '/'-separated
    type: Literal["file", "dir", "symlink"]
    mode: int
    mtime: float
    size: int = 0
    sha256: str | None = None
    target: str | None = None  # symlinks
    #: Where a content-addressed file's content is stored (``content:<id>``); None in member
    #: lists written before content ids were keyed (the content is then at its SHA-256).
    content: str | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})


def tree_entries(members: Iterable[Member]) -> list[tuple[str, str, str | None]]:
    """``members`` as the (path, type, link target) entries that
    :func:`~backupflow.safepaths.check_tree` checks."""
    return [(m.path, m.type, m.target) for m in members]


def encode_members(members: Iterable[Member]) -> Iterator[bytes]:
    """JSON lines, one member a line."""
    for member in members:
        yield (member.to_json() + "\n").encode()


#: Bounds on a member list read back from a backup (it is not trusted).
MAX_MEMBERS = 2_000_000
MAX_MEMBER_LINE = 64 * 1024
MAX_MEMBER_SIZE = 1 << 56
_FIELDS = {"path", "type", "mode", "mtime", "size", "sha256", "target", "content"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _member(data: object) -> Member:
    """One member from its decoded JSON, every field checked for type and range."""
    if not isinstance(data, dict):
        raise ValueError("a line is not a JSON object")
    unknown = set(data) - _FIELDS
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0]!r}")
    path, kind, mode, mtime = (data.get(k) for k in ("path", "type", "mode", "mtime"))
    size, sha256, target = data.get("size", 0), data.get("sha256"), data.get("target")
    content = data.get("content")
    if not isinstance(path, str) or kind not in ("file", "dir", "symlink"):
        raise ValueError("a member has no path or an unknown type")
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ValueError(f"{path!r} has an invalid mode")
    if (
        isinstance(mtime, bool)
        or not isinstance(mtime, int | float)
        or not math.isfinite(mtime)
        or abs(mtime) > 1 << 40
    ):
        raise ValueError(f"{path!r} has an invalid time")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_MEMBER_SIZE:
        raise ValueError(f"{path!r} has an invalid size")
    if kind == "file" and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
        raise ValueError(f"{path!r} has no valid SHA-256")
    if kind != "file" and (sha256 is not None or size):
        raise ValueError(f"{path!r} is not a file but has a size or SHA-256")
    if (kind == "symlink") != isinstance(target, str):
        raise ValueError(f"{path!r} has a link target but is no link, or the reverse")
    if content is not None and not (
        kind == "file" and isinstance(content, str) and _SHA256.fullmatch(content)
    ):
        raise ValueError(f"{path!r} has an invalid content id")
    return Member(path, kind, mode, float(mtime), size, sha256, target, content)


def decode_members(lines: Iterable[bytes], where: str = "the member list") -> list[Member]:
    """Parse JSON lines (at most :data:`MAX_MEMBERS`, each at most :data:`MAX_MEMBER_LINE`
    bytes); a malformed list is an :class:`IntegrityError` naming ``where``."""
    members = []
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_MEMBER_LINE or number > MAX_MEMBERS:
            raise IntegrityError(
                f"{where} is damaged (more than {MAX_MEMBERS} lines, or line {number} is longer "
                f"than {MAX_MEMBER_LINE} bytes); nothing was restored."
            )
        if not line.strip():
            continue
        try:
            members.append(_member(json.loads(line)))
        except (ValueError, RecursionError) as exc:
            raise IntegrityError(
                f"{where} is damaged at line {number} ({str(exc)[:200]}); nothing was restored."
            ) from None
    return members


def content_key(category: Category, name: str, content_id: str, extension: str) -> str:
    """Where one distinct content of a content-addressed set is stored: ``content_id`` is
    its keyed id (its SHA-256 in backups written before content ids were keyed)."""
    return f"{category.value}/{name}/content/{content_id[:2]}/{content_id}{extension}"


def _glob(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def select(file_set: FileSetSettings) -> list[str]:
    """Relative paths under the set's root that match an include and no exclude pattern,
    sorted; folders are not followed through symlinks."""
    includes = [_glob(p) for p in file_set.include]
    excludes = [_glob(p) for p in file_set.exclude]
    root = file_set.root
    found: list[str] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".backupflow-"))
        for name in [*dirnames, *sorted(filenames)]:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if any(p.fullmatch(rel) for p in includes) and not any(
                p.fullmatch(rel) for p in excludes
            ):
                found.append(rel)
    return sorted(found)


@dataclass
class ScanReport:
    """What happened to files while they were read."""

    changed: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # devices, sockets, fifos

    def notes(self) -> tuple[str, ...]:
        notes = []
        for label, paths in (
            ("changed while being read", self.changed),
            ("vanished before being read", self.vanished),
            ("unreadable (not backed up)", self.unreadable),
            ("not a file, folder or link (skipped)", self.skipped),
        ):
            if paths:
                notes.append(
                    f"{label}: {', '.join(paths[:20])}" + (" ..." if len(paths) > 20 else "")
                )
        return tuple(notes)


def open_source(path: Path, expected: os.stat_result | None = None) -> BinaryIO:
    """Open a file that is being backed up, never through a link at its own name, and only
    while it is still a regular file (the one ``expected`` describes, when given: same device
    and inode).  A file replaced meanwhile raises FileNotFoundError: it is reported as
    vanished, and whatever took its place is not read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileNotFoundError(errno.ENOENT, "replaced by a link", str(path)) from exc
        raise
    st = os.fstat(fd)
    same = expected is None or (st.st_dev, st.st_ino) == (expected.st_dev, expected.st_ino)
    if not stat.S_ISREG(st.st_mode) or not same:
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "replaced while being read", str(path))
    return os.fdopen(fd, "rb")


def hash_file(path: Path, expected: os.stat_result | None = None) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open_source(path, expected) as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def scan(
    file_set: FileSetSettings,
    report: ScanReport,
    *,
    known: dict[str, Member] | None = None,
) -> list[Member]:
    """Describe every selected entry; file contents are hashed unless ``known`` has the
    same path with the same size and mtime (the previous backup's member list)."""
    members = []
    for rel in select(file_set):
        path = file_set.root / rel
        try:
            st = path.lstat()
        except FileNotFoundError:
            report.vanished.append(rel)
            continue
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            members.append(Member(rel, "dir", mode, st.st_mtime))
        elif stat.S_ISLNK(st.st_mode):
            members.append(Member(rel, "symlink", mode, st.st_mtime, target=os.readlink(path)))
        elif stat.S_ISREG(st.st_mode):
            previous = (known or {}).get(rel)
            if (
                previous is not None
                and previous.type == "file"
                and previous.size == st.st_size
                and previous.mtime == st.st_mtime
                and previous.mode == mode
            ):
                members.append(previous)
                continue
            try:
                sha, size = hash_file(path, st)
            except FileNotFoundError:
                report.vanished.append(rel)
                continue
            except PermissionError:
                report.unreadable.append(rel)
                continue
            if size != st.st_size or path.stat().st_mtime != st.st_mtime:
                report.changed.append(rel)
            members.append(Member(rel, "file", mode, st.st_mtime, size=size, sha256=sha))
        else:
            report.skipped.append(rel)
    return members


class _ExactReader:
    """Reads exactly ``size`` bytes of a file that may change while it is read, hashing them;
    a file that shrank is padded with zeros, one that grew is cut (both are reported)."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self._left = size
        self.sha256 = hashlib.sha256()
        self.changed = False

    def read(self, size: int = -1) -> bytes:
        want = self._left if size < 0 else min(size, self._left)
        data = self._handle.read(want) if want else b""
        if len(data) < want:
            self.changed = True
            data += b"\0" * (want - len(data))
        self._left -= len(data)
        if self._left == 0 and not self.changed and self._handle.read(1):
            self.changed = True
        self.sha256.update(data)
        return data


def write_tar(file_set: FileSetSettings, tar_path: Path, report: ScanReport) -> list[Member]:
    """Write the set as one tar file (PAX) and return its members; each file is read once."""
    members: list[Member] = []
    with (
        open_private(tar_path) as out,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel in select(file_set):
            path = file_set.root / rel
            try:
                st = path.lstat()
            except FileNotFoundError:
                report.vanished.append(rel)
                continue
            info = tarfile.TarInfo(rel)
            info.mode = stat.S_IMODE(st.st_mode)
            info.mtime = int(st.st_mtime)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                members.append(Member(rel, "dir", mode, st.st_mtime))
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                tar.addfile(info)
                members.append(Member(rel, "symlink", mode, st.st_mtime, target=info.linkname))
            elif stat.S_ISREG(st.st_mode):
                try:
                    handle = open_source(path, st)
                except FileNotFoundError:
                    report.vanished.append(rel)
                    continue
                except PermissionError:
                    report.unreadable.append(rel)
                    continue
                with handle:
                    size = os.fstat(handle.fileno()).st_size
                    info.size = size
                    reader = _ExactReader(handle, size)
                    tar.addfile(info, reader)
                if reader.changed or path.stat().st_mtime != st.st_mtime:
                    report.changed.append(rel)
                members.append(
                    Member(
                        rel, "file", mode, st.st_mtime, size=size, sha256=reader.sha256.hexdigest()
                    )
                )
            else:
                report.skipped.append(rel)
    return members
