"""Where a file-set restore may write: one path validator, and files made through descriptors.

Every file-set restore (tar and content-addressed sets, ``--into``, ``--in-place``,
``--dry-run`` and ``--undo``) checks its paths here first:

* a path is accepted only in its one canonical spelling: relative, ``/``-separated, no
  empty, ``.`` or ``..`` segment, no backslash or NUL, bounded length and depth;
* a path may appear once, and nothing may sit below a link or a file, whether that link is
  in the member list or already on disk in the target;
* a link's target must stay inside the target, resolved from the link's folder the way the
  operating system would resolve it, following the other links of the list.

Then the files are made relative to folder descriptors, one segment at a time, never
following a link (``O_NOFOLLOW``, ``dir_fd=``): :class:`TreeBuilder` writes a scratch tree,
bounded by the recorded sizes and verified while written, with each file's mode and time set
through its open descriptor.  :func:`private_dir` is the check for folders that must be ours.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import BinaryIO

from backupflow.errors import IntegrityError, RestoreTargetError

__all__ = [
    "MAX_DEPTH",
    "MAX_PATH_BYTES",
    "DiskView",
    "TreeBuilder",
    "check_path",
    "check_tree",
    "open_dir_at",
    "path_problem",
]

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
MAX_DEPTH = 64
#: How many links one link target may pass through before it counts as a loop.
MAX_LINK_HOPS = 40
_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: The type of each path a restore writes: "file", "dir" or "symlink".
Kinds = Mapping[str, str]


def _short(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 120 else shown[:117] + "..."


def path_problem(path: object) -> str | None:
    """Why ``path`` is not a canonical relative path, or None when it is."""
    if not isinstance(path, str):
        return "it is not a string"
    if not path:
        return "it is empty"
    try:
        size = len(path.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return "it is not valid text"
    if size > MAX_PATH_BYTES:
        return f"it is longer than {MAX_PATH_BYTES} bytes"
    if "\0" in path or "\\" in path:
        return "it holds a NUL or a backslash"
    if path.startswith("/"):
        return "it is absolute"
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        return f"it is deeper than {MAX_DEPTH} folders"
    for part in parts:
        if part in ("", ".", ".."):
            return "it is not in canonical form (an empty, '.' or '..' segment)"
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            return f"a name in it is longer than {MAX_NAME_BYTES} bytes"
    return None


def check_path(path: object, where: str) -> str:
    """``path`` if it is canonical, else an :class:`IntegrityError` naming ``where``."""
    problem = path_problem(path)
    if problem is not None:
        raise IntegrityError(
            f"{where} lists the unsafe path {_short(str(path))} ({problem}); nothing was restored."
        )
    assert isinstance(path, str)
    return path


def _ancestors(path: str) -> Iterable[str]:
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def _resolves_inside(
    link: str,
    target: str,
    links: Mapping[str, str],
    kinds: Kinds,
    on_disk_link: Callable[[str], bool] | None,
) -> bool:
    """Whether ``target``, read from ``link``'s folder, stays inside the root (the way the
    kernel resolves it: every listed link followed, ``..`` taken physically)."""
    hops = 0
    stack = link.split("/")[:-1]
    pending = target.split("/")
    if not target or target.startswith("/") or "\0" in target:
        return False
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return False
            stack.pop()
            continue
        stack.append(part)
        here = "/".join(stack)
        if here in links:
            hops += 1
            next_target = links[here]
            if hops > MAX_LINK_HOPS or not next_target or next_target.startswith("/"):
                return False
            stack.pop()
            pending = next_target.split("/") + pending
        elif here not in kinds and on_disk_link is not None and on_disk_link(here):
            return False
    return True


def check_tree(
    entries: Sequence[tuple[str, str, str | None]],
    where: str,
    *,
    on_disk_link: Callable[[str], bool] | None = None,
) -> None:
    """Refuse a list of ``(path, type, link target)`` that would write outside its root.

    ``on_disk_link(path)`` says whether ``path`` is a link already in the target (for a
    restore over existing files); a path of the list is replaced, so it is not asked about.
    """
    kinds: dict[str, str] = {}
    links: dict[str, str] = {}
    for path, kind, target in entries:
        check_path(path, where)
        if kind not in ("file", "dir", "symlink"):
            raise IntegrityError(
                f"{where} lists {_short(path)} of unknown type; nothing was restored."
            )
        if path in kinds:
            raise IntegrityError(f"{where} lists {_short(path)} twice; nothing was restored.")
        kinds[path] = kind
        if kind == "symlink":
            links[path] = target if isinstance(target, str) else ""
    for path in kinds:
        for parent in _ancestors(path):
            above = kinds.get(parent)
            if above == "symlink" or (
                above is None and on_disk_link is not None and on_disk_link(parent)
            ):
                raise IntegrityError(
                    f"{where} lists {_short(path)} below the link {_short(parent)}; nothing was "
                    "restored."
                )
            if above == "file":
                raise IntegrityError(
                    f"{where} lists {_short(path)} below the file {_short(parent)}; nothing was "
                    "restored."
                )
    for path, target in links.items():
        if len(target.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES or not _resolves_inside(
            path, target, links, kinds, on_disk_link
        ):
            raise IntegrityError(
                f"{where} has a link {_short(path)} -> {_short(target)} that points outside "
                "the restore target; nothing was restored."
            )


def open_dir_at(base_fd: int, parts: Sequence[str], *, create: int | None = None) -> int:
    """Open the folder ``parts`` below ``base_fd``, one segment at a time, never following
    a link; missing folders are made with mode ``create`` when given.  Raises
    :class:`RestoreTargetError` when a segment is a link or not a folder."""
    fd = os.dup(base_fd)
    try:
        for i, part in enumerate(parts):
            if part in ("", ".", ".."):
                raise RestoreTargetError(f"{'/'.join(parts)!r} is not a canonical path.")
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create is None:
                    raise
                os.mkdir(part, create, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                shown = "/".join(parts[: i + 1])
                raise RestoreTargetError(
                    f"{shown} is a link or not a folder, and nothing is written through it; "
                    "move it away and try again."
                ) from exc
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


class DiskView:
    """Looks at what is already in a target folder without following any link."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd

    def lstat(self, path: str) -> os.stat_result | None:
        """The entry at ``path``, or None when it (or a folder above it) is missing; raises
        :class:`RestoreTargetError` when a folder above it is a link."""
        parts = path.split("/")
        try:
            parent = open_dir_at(self.root_fd, parts[:-1])
        except (FileNotFoundError, RestoreTargetError):
            return None  # a folder above is missing, a link or a file: nothing is here
        try:
            return os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        finally:
            os.close(parent)

    def is_link(self, path: str) -> bool:
        st = self.lstat(path)
        return st is not None and stat.S_ISLNK(st.st_mode)


class TreeBuilder:
    """Writes a tree below a folder descriptor: folders, verified files, then links.

    Each entry is made relative to its parent folder's descriptor with ``O_NOFOLLOW`` and
    ``O_EXCL``, so nothing is ever written through a link, even one made by the same restore.
    Folders it makes on the way are 0700; :meth:`finish_dirs` gives listed folders their
    recorded modes at the end.
    """

    def __init__(self, root_fd: int, where: str) -> None:
        self.root_fd = root_fd
        self.where = where
        self._parent: tuple[str, int] | None = None

    def close(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None

    def __enter__(self) -> TreeBuilder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _parent_of(self, path: str) -> tuple[int, str]:
        folder, _, name = path.rpartition("/")
        if self._parent is None or self._parent[0] != folder:
            self.close()
            parts = folder.split("/") if folder else []
            self._parent = (folder, open_dir_at(self.root_fd, parts, create=0o700))
        return self._parent[1], name

    def make_dir(self, path: str) -> None:
        parent, name = self._parent_of(path)
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise IntegrityError(
                    f"{self.where} holds {_short(path)} twice; nothing was restored."
                ) from None

    def write_file(
        self,
        path: str,
        stream: BinaryIO,
        *,
        size: int,
        sha256: str | None,
        mode: int,
        mtime: float,
    ) -> None:
        """Copy ``stream`` into a new file at ``path``: at most ``size`` bytes (one more is an
        :class:`IntegrityError`), checked against ``sha256``, then given ``mode & 0o777`` and
        ``mtime`` through its descriptor."""
        parent, name = self._parent_of(path)
        try:
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=parent,
            )
        except FileExistsError:
            raise IntegrityError(
                f"{self.where} holds {_short(path)} twice; nothing was restored."
            ) from None
        try:
            digest = hashlib.sha256()
            left = size
            while block := stream.read(min(_CHUNK, left + 1)):
                if len(block) > left:
                    raise IntegrityError(
                        f"{_short(path)} of {self.where} is longer than its recorded {size} "
                        "bytes; nothing was restored."
                    )
                digest.update(block)
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
                left -= len(block)
            if left or (sha256 is not None and digest.hexdigest() != sha256):
                raise IntegrityError(
                    f"{_short(path)} of {self.where} does not match its recorded size and "
                    "SHA-256; nothing was restored."
                )
            os.fchmod(fd, mode & 0o777)  # never setuid, setgid or sticky
            os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)

    def make_link(self, path: str, target: str) -> None:
        parent, name = self._parent_of(path)
        try:
            os.symlink(target, name, dir_fd=parent)
        except FileExistsError:
            raise IntegrityError(
                f"{self.where} holds {_short(path)} twice; nothing was restored."
            ) from None

    def finish_dirs(self, dirs: Iterable[tuple[str, int, float]]) -> None:
        """Give folders their mode (``& 0o777``) and time through their descriptors, deepest
        first (a folder's time changes while entries are made in it)."""
        self.close()
        for path, mode, mtime in sorted(dirs, key=lambda d: d[0].count("/"), reverse=True):
            fd = open_dir_at(self.root_fd, path.split("/"))
            try:
                os.fchmod(fd, mode & 0o777)
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
