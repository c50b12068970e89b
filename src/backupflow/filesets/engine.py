"""The file-set "engine": dumps a file set and restores it safely, verified file by file.

A restore is staged in a private scratch folder first.  The member list is checked by the
one path validator (:mod:`backupflow.safepaths`): canonical paths only, nothing below a link
or a file, links that stay inside.  Files are made relative to folder descriptors without
following links, bounded by their recorded sizes and verified while written, with their
recorded modes set through the open descriptor; links are made last.  A tar archive is read
as a stream, each entry checked against the member list and by ``tarfile.data_filter``.
Only then are the files moved into place.  In place, the current files are first kept aside
(with an ``undo.json``), so the restore can be undone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tarfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

from backupflow.config import FileSetSettings
from backupflow.engines.base import (
    BackupSource,
    Capabilities,
    Dump,
    DumpFile,
    Engine,
    Installed,
    Restored,
)
from backupflow.errors import (
    EngineError,
    IntegrityError,
    RestoreTargetError,
    SourceNotFoundError,
)
from backupflow.filesets import (
    MAX_MEMBER_LINE,
    Member,
    ScanReport,
    decode_members,
    encode_members,
    is_content_addressed,
    open_private,
    scan,
    write_tar,
)
from backupflow.fsutil import ensure_private_dir
from backupflow.models import BackupKind
from backupflow.safepaths import (
    DiskView,
    TreeBuilder,
    check_tree,
    open_dir_at,
    path_problem,
)

__all__ = [
    "ASIDE_PREFIX",
    "UNDO_FILE",
    "Change",
    "FileSetEngine",
    "plan_changes",
    "read_members",
    "undo_in_place",
]

UNDO_FILE = "undo.json"
ASIDE_PREFIX = ".backupflow-aside-"
#: Where a version-2 aside folder keeps the replaced entries (``undo.json`` sits beside it).
ASIDE_ENTRIES = "entries"
MAX_UNDO_BYTES = 64 * 1024 * 1024
_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ASIDE_NAME = re.compile(re.escape(ASIDE_PREFIX) + r"[0-9A-Za-z-]{1,64}")


def read_members(source: BackupSource) -> list[Member]:
    """The verified member list of a file-set backup (bounded, every field checked)."""
    with source.open_object("members") as handle:
        return decode_members(_lines(handle), f"the member list of backup {source.manifest.id}")


def _lines(handle: BinaryIO) -> Iterator[bytes]:
    """Lines of ``handle``; a line longer than the member-list bound is yielded as soon as
    it is too long (the decoder refuses it), never accumulated."""
    rest = b""
    while block := handle.read(1 << 16):
        *lines, rest = (rest + block).split(b"\n")
        yield from lines
        if len(rest) > MAX_MEMBER_LINE:
            yield rest
            return
    if rest:
        yield rest


def _entries(members: Sequence[Member]) -> list[tuple[str, str, str | None]]:
    return [(m.path, m.type, m.target) for m in members]


def _open_root(root: Path) -> int | None:
    """A descriptor of the target folder (the configured root may itself be a link), or None
    when it does not exist."""
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise RestoreTargetError(f"{root} is a file; give a folder to restore into.") from None


Change = tuple[str, Literal["create", "replace", "unchanged"]]


def _same_file(view: DiskView, member: Member, st: os.stat_result) -> bool:
    if not stat.S_ISREG(st.st_mode) or st.st_size != member.size:
        return False
    parts = member.path.split("/")
    try:
        parent = open_dir_at(view.root_fd, parts[:-1])
    except (OSError, RestoreTargetError):
        return False
    try:
        fd = os.open(
            parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent
        )
    except OSError:
        return False
    finally:
        os.close(parent)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        digest = hashlib.sha256()
        left = member.size
        while left and (block := os.read(fd, min(_CHUNK, left))):
            digest.update(block)
            left -= len(block)
        return not left and digest.hexdigest() == member.sha256
    finally:
        os.close(fd)


def plan_changes(
    members: Sequence[Member], root: Path, *, where: str = "the backup"
) -> list[Change]:
    """What restoring ``members`` into ``root`` would change (for ``--dry-run``).

    The member list is validated first, against what is on disk too, and nothing outside
    ``root`` is read or looked at: no link is followed.
    """
    check_tree(_entries(members), where)
    root_fd = _open_root(root)
    if root_fd is None:
        return [(m.path, "create") for m in members]
    try:
        view = DiskView(root_fd)
        check_tree(_entries(members), where, on_disk_link=view.is_link)
        changes: list[Change] = []
        for member in members:
            st = view.lstat(member.path)
            if st is None:
                changes.append((member.path, "create"))
                continue
            if member.type == "file":
                same = _same_file(view, member, st)
            elif member.type == "symlink":
                same = stat.S_ISLNK(st.st_mode) and _readlink(view, member.path) == member.target
            else:
                same = stat.S_ISDIR(st.st_mode)
            changes.append((member.path, "unchanged" if same else "replace"))
        return changes
    finally:
        os.close(root_fd)


def _readlink(view: DiskView, path: str) -> str | None:
    parts = path.split("/")
    try:
        parent = open_dir_at(view.root_fd, parts[:-1])
    except (OSError, RestoreTargetError):
        return None
    try:
        return os.readlink(parts[-1], dir_fd=parent)
    except OSError:
        return None
    finally:
        os.close(parent)


# -- undo ----------------------------------------------------------------------------------


def _refuse_undo(aside: Path, why: str) -> RestoreTargetError:
    return RestoreTargetError(f"{aside} cannot be undone: {why}; nothing was changed.")


def _check_ours(st: os.stat_result, aside: Path, what: str) -> None:
    if st.st_uid != os.getuid():
        raise _refuse_undo(aside, f"its {what} belongs to another user")
    if st.st_mode & 0o022:
        raise _refuse_undo(aside, f"its {what} can be written by other users")


def _read_undo(aside_fd: int, aside: Path) -> tuple[int, list[str], list[str]]:
    """The validated undo record: (version, created, replaced)."""
    try:
        fd = os.open(
            UNDO_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=aside_fd
        )
    except OSError:
        raise _refuse_undo(aside, f"it has no readable {UNDO_FILE}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_UNDO_BYTES:
            raise _refuse_undo(aside, f"its {UNDO_FILE} is not a file of at most 64 MiB")
        _check_ours(st, aside, UNDO_FILE)
        raw = bytearray()  # grown in place: no copy of what was read per block
        while len(raw) <= MAX_UNDO_BYTES and (block := os.read(fd, _CHUNK)):
            raw += block
    finally:
        os.close(fd)
    damaged = f"its {UNDO_FILE} is damaged"
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        raise IntegrityError(
            f"{aside} cannot be undone: {damaged} (not JSON); nothing was changed."
        ) from None
    if (
        not isinstance(record, dict)
        or set(record) - {"version", "created", "replaced"}
        or not isinstance(record.get("created"), list)
        or not isinstance(record.get("replaced"), list)
        or record.get("version", 1) not in (1, 2)
    ):
        raise IntegrityError(
            f"{aside} cannot be undone: {damaged} (it must hold the lists 'created' and "
            "'replaced'); nothing was changed."
        )
    created, replaced = record["created"], record["replaced"]
    seen: set[str] = set()
    for path in [*created, *replaced]:
        problem = path_problem(path)
        if problem is not None or path in seen:
            raise IntegrityError(
                f"{aside} cannot be undone: {damaged} (it lists {str(path)[:120]!r}, "
                f"{problem or 'twice'}); nothing was changed."
            )
        seen.add(path)
    return int(record.get("version", 1)), created, replaced


def _remove_at(root_fd: int, path: str) -> None:
    parts = path.split("/")
    try:
        parent = open_dir_at(root_fd, parts[:-1])
    except FileNotFoundError:
        return
    try:
        st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(parts[-1], dir_fd=parent)
        else:
            os.unlink(parts[-1], dir_fd=parent)
    except FileNotFoundError:
        pass
    finally:
        os.close(parent)


def undo_in_place(aside: Path, root: Path) -> int:
    """Undo an in-place restore from the folder it kept aside; returns entries put back.

    The aside folder is trusted only when it is a real folder directly under ``root``, named
    like one, owned by this user and writable by nobody else (and so is its ``undo.json``);
    every path in the record is checked like a member path, and nothing below a link is
    touched.  Anything else is refused before a single entry is changed.
    """
    root_fd = _open_root(root)
    if root_fd is None:
        raise _refuse_undo(aside, f"the folder {root} does not exist")
    try:
        if not _ASIDE_NAME.fullmatch(aside.name):
            raise _refuse_undo(aside, f"it is not named like a folder kept aside ({ASIDE_PREFIX}*)")
        try:
            parent = os.stat(aside.parent)
        except OSError:
            raise _refuse_undo(aside, f"it is not directly under {root}") from None
        here = os.fstat(root_fd)
        if (parent.st_dev, parent.st_ino) != (here.st_dev, here.st_ino):
            raise _refuse_undo(aside, f"it is not directly under {root}")
        try:
            aside_fd = os.open(aside.name, _DIR_FLAGS, dir_fd=root_fd)
        except OSError:
            raise _refuse_undo(aside, "it is a link, not a folder, or missing") from None
        try:
            _check_ours(os.fstat(aside_fd), aside, "folder")
            version, created, replaced = _read_undo(aside_fd, aside)
            try:
                return _replay_undo(root_fd, aside_fd, aside, version, created, replaced)
            except OSError as exc:
                raise RestoreTargetError(
                    f"the undo from {aside} stopped at {exc.filename or root} ({exc.strerror}); "
                    "fix that and run the undo again."
                ) from exc
        finally:
            os.close(aside_fd)
    finally:
        os.close(root_fd)


def _replay_undo(
    root_fd: int,
    aside_fd: int,
    aside: Path,
    version: int,
    created: list[str],
    replaced: list[str],
) -> int:
    if version == 2:
        try:
            kept_fd = os.open(ASIDE_ENTRIES, _DIR_FLAGS, dir_fd=aside_fd)
        except OSError:
            raise _refuse_undo(aside, f"its {ASIDE_ENTRIES} folder is missing or a link") from None
    else:
        kept_fd = os.dup(aside_fd)
    try:
        view, kept = DiskView(root_fd), DiskView(kept_fd)
        for path in [*created, *replaced]:
            parts = path.split("/")
            for i in range(1, len(parts)):
                if view.is_link("/".join(parts[:i])):
                    raise _refuse_undo(aside, f"{'/'.join(parts[:i])} in the folder is now a link")
        for path in replaced:
            if kept.lstat(path) is None:
                raise _refuse_undo(aside, f"the kept copy of {path} is missing")
        for path in reversed(created):
            _remove_at(root_fd, path)
        for path in replaced:
            _remove_at(root_fd, path)
            parts = path.split("/")
            target_parent = open_dir_at(root_fd, parts[:-1], create=0o700)
            try:
                kept_parent = open_dir_at(kept_fd, parts[:-1])
                try:
                    os.rename(
                        parts[-1], parts[-1], src_dir_fd=kept_parent, dst_dir_fd=target_parent
                    )
                finally:
                    os.close(kept_parent)
            finally:
                os.close(target_parent)
    finally:
        os.close(kept_fd)
    shutil.rmtree(aside.name, dir_fd=root_fd)
    return len(created) + len(replaced)


# -- restore helpers -----------------------------------------------------------------------


def _check_free_space(fd: int, members: Sequence[Member], where: Path) -> None:
    needed = sum(m.size for m in members if m.type == "file")
    info = os.fstatvfs(fd)
    free = info.f_bavail * info.f_frsize
    if needed > free:
        raise RestoreTargetError(
            f"the restore needs {needed:,} bytes but {where} has {free:,} free; free some space "
            "or restore elsewhere with --into."
        )


class _Bounded:
    """Reads at most ``limit`` bytes of ``stream``; one more is an :class:`IntegrityError`."""

    def __init__(self, stream: BinaryIO, limit: int, where: str) -> None:
        self._stream, self._left, self._where = stream, limit, where

    def read(self, size: int = -1) -> bytes:
        want = self._left + 1 if size < 0 else min(size, self._left + 1)
        data = self._stream.read(want)
        if len(data) > self._left:
            raise IntegrityError(
                f"the archive of {self._where} is larger than its member list allows; nothing "
                "was restored."
            )
        self._left -= len(data)
        return data


def _tar_bound(members: Sequence[Member]) -> int:
    """The most bytes a tar of ``members`` can take: data rounded to blocks, and headers
    (with a PAX header for long names) per member, plus the end-of-archive padding."""
    total = 1 << 16
    for m in members:
        names = len(m.path.encode("utf-8", "surrogateescape")) + len(
            (m.target or "").encode("utf-8", "surrogateescape")
        )
        total += -(-m.size // 512) * 512 + 4096 + 2 * names
    return total


def _check_tar_entry(
    info: tarfile.TarInfo, expected: dict[str, Member], seen: set[str], where: str
) -> Member:
    """The listed member a tar entry stands for: same path, type, size and link target,
    seen once; anything else is an :class:`IntegrityError`."""
    member = expected.get(info.name)
    kinds = {"file": info.isreg(), "dir": info.isdir(), "symlink": info.issym()}
    if member is None or not kinds[member.type] or info.name in seen:
        raise IntegrityError(
            f"the archive of {where} holds {info.name[:120]!r}, which its member list does not "
            "(or not of that type, or twice); nothing was restored."
        )
    if member.type == "file" and info.size != member.size:
        raise IntegrityError(
            f"{info.name[:120]!r} in the archive of {where} is {info.size} bytes but its member "
            f"list says {member.size}; nothing was restored."
        )
    if member.type == "symlink" and info.linkname != member.target:
        raise IntegrityError(
            f"the link {info.name[:120]!r} in the archive of {where} points elsewhere than its "
            "member list says; nothing was restored."
        )
    seen.add(info.name)
    return member


class FileSetEngine(Engine):
    """Backs up and restores one file set (config, logs or uploads)."""

    name = "files"
    capabilities = Capabilities(differential=False, log=False, point_in_time="backup")

    def __init__(self, set_name: str, file_set: FileSetSettings, *, staging_dir: Path) -> None:
        self.set_name = set_name
        self.file_set = file_set
        self.staging_dir = staging_dir
        self.report = ScanReport()

    def check_source(self) -> None:
        if not self.file_set.root.is_dir():
            raise SourceNotFoundError(
                f"the folder {self.file_set.root} of the {self.set_name} file set does not "
                f"exist; check BACKUPFLOW_FILES__{self.set_name.upper()}__ROOT."
            )

    def dump(self, kind: BackupKind, parent: BackupSource | None, staging: Path) -> Dump:
        self.check_source()
        staging.mkdir(parents=True, exist_ok=True)
        self.report = ScanReport()
        members_path = staging / "members.jsonl"
        if is_content_addressed(self.set_name):
            known = {m.path: m for m in read_members(parent)} if parent is not None else None
            members = scan(self.file_set, self.report, known=known)
            files: tuple[DumpFile, ...] = (DumpFile("members", members_path),)
            layout = "content"
        else:
            tar_path = staging / "files.tar"
            members = write_tar(self.file_set, tar_path, self.report)
            files = (DumpFile("data", tar_path), DumpFile("members", members_path))
            layout = "tar"
        taken = datetime.now(UTC)
        with open_private(members_path) as out:
            for line in encode_members(members):
                out.write(line)
        return Dump(
            kind=BackupKind.FULL,
            restore_point=taken,
            files=files,
            position={
                "layout": layout,
                "root": str(self.file_set.root),
                "members": len(members),
                "files": sum(1 for m in members if m.type == "file"),
                "bytes": sum(m.size for m in members),
                "unreadable": list(self.report.unreadable),
            },
        )

    # -- restore -----------------------------------------------------------------------

    def scratch_path(self, target: Path) -> Path:
        base = target if target.is_dir() else target.parent
        return base / f".backupflow-restore-{secrets.token_hex(4)}"

    def check_target(self, target: Path, replace: bool) -> None:
        self._check_target(target, replace)

    @staticmethod
    def _check_target(target: Path, replace: bool, scratch: str | None = None) -> None:
        """An in-place root must be a folder; any other target must be new, or an empty
        folder (but for our ``scratch``) that is no link, ours, and private."""
        if replace:  # the live root (which may be a configured link)
            if target.exists() and not target.is_dir():
                raise RestoreTargetError(f"{target} is a file; give a folder to restore into.")
            return
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise RestoreTargetError(
                f"{target} is a link; give the real folder to restore into, or a new one."
            )
        if not stat.S_ISDIR(st.st_mode):
            raise RestoreTargetError(f"{target} is a file; give a folder to restore into.")
        if any(entry.name != scratch for entry in target.iterdir()):
            raise RestoreTargetError(
                f"{target} is not empty; restore into an empty or new folder with --into, or "
                "use --in-place to replace the live files (they are kept aside)."
            )
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise RestoreTargetError(
                f"{target} belongs to another user or can be written by others; restore into a "
                "new folder, or make it yours and private (chmod 700)."
            )

    def restore(
        self, chain: Sequence[BackupSource], scratch: Path, *, until: datetime | None = None
    ) -> Restored:
        del until
        source = chain[-1]
        where = f"backup {source.manifest.id}"
        members = read_members(source)
        check_tree(_entries(members), where)
        os.mkdir(scratch, 0o700)
        fd = os.open(scratch, _DIR_FLAGS)
        try:
            _check_free_space(fd, members, scratch.parent)
            with TreeBuilder(fd, where) as builder:
                if source.manifest.position.get("layout") == "tar":
                    self._extract_tar(source, members, builder, scratch)
                else:
                    self._fetch_contents(source, members, builder)
        finally:
            os.close(fd)
        return Restored(
            scratch,
            tuple(step.manifest for step in chain),
            checks=("member list", "every file's SHA-256"),
            detail=tuple(members),
        )

    def _extract_tar(
        self, source: BackupSource, members: Sequence[Member], builder: TreeBuilder, scratch: Path
    ) -> None:
        """Stream the archive: each entry must be its listed member (our check) and pass
        ``tarfile.data_filter`` (the standard library's, a second layer); files are written
        through ``builder``, links made last, after the whole archive was verified."""
        where = f"backup {source.manifest.id}"
        expected = {m.path: m for m in members}
        seen: set[str] = set()
        links: list[tuple[str, str]] = []
        with source.open_object("data") as stream:
            bounded = _Bounded(stream, _tar_bound(members), where)
            try:
                with tarfile.open(fileobj=bounded, mode="r|") as tar:  # type: ignore[call-overload]
                    for info in tar:
                        member = _check_tar_entry(info, expected, seen, where)
                        info = tarfile.data_filter(info, str(scratch))
                        if info.issym():
                            links.append((info.name, info.linkname))
                        elif info.isdir():
                            builder.make_dir(info.name)
                        elif info.isreg() and (handle := tar.extractfile(info)) is not None:
                            builder.write_file(
                                info.name,
                                handle,
                                size=member.size,
                                sha256=member.sha256,
                                mode=member.mode,
                                mtime=member.mtime,
                            )
                        else:
                            raise IntegrityError(
                                f"the archive of {where} holds {info.name[:120]!r}, which is "
                                "not a file, folder or link; nothing was restored."
                            )
            except tarfile.FilterError as exc:
                raise IntegrityError(
                    f"the archive of {where} is unsafe ({exc}); nothing was restored."
                ) from exc
            except tarfile.TarError as exc:
                raise IntegrityError(f"the archive of {where} is damaged: {exc}.") from exc
        missing = sorted(set(expected) - seen)
        if missing:
            raise IntegrityError(
                f"the archive of {where} lacks {missing[0][:120]!r} from its member list; "
                "nothing was restored."
            )
        for path, target in links:
            builder.make_link(path, target)

    def _fetch_contents(
        self, source: BackupSource, members: Sequence[Member], builder: TreeBuilder
    ) -> None:
        # Folders and files first, links last: nothing is ever written through a link.
        for member in members:
            if member.type == "dir":
                builder.make_dir(member.path)
            elif member.type == "file":
                with source.open_object(f"content:{member.sha256}") as stream:
                    builder.write_file(
                        member.path,
                        stream,
                        size=member.size,
                        sha256=member.sha256,
                        mode=member.mode,
                        mtime=member.mtime,
                    )
        for member in members:
            if member.type == "symlink":
                builder.make_link(member.path, member.target or "")

    @staticmethod
    def _dir_modes(
        members: Sequence[Member], only: set[str] | None = None
    ) -> list[tuple[str, int, float]]:
        return [
            (m.path, m.mode, m.mtime)
            for m in members
            if m.type == "dir" and (only is None or m.path in only)
        ]

    def install(self, restored: Restored, target: Path, *, replace: bool, stamp: str) -> Installed:
        members: tuple[Member, ...] = restored.detail
        if not replace:
            return self._install_into(restored.scratch, target, members)
        return self._install_in_place(restored.scratch, target, stamp, members)

    def _install_into(self, scratch: Path, target: Path, members: Sequence[Member]) -> Installed:
        """Move the scratch tree into ``target``: a new folder made here (0700), or an empty
        folder of ours that nobody else can write to."""
        try:
            os.mkdir(target, 0o700)
        except FileExistsError:
            self._check_target(target, False, scratch.name)  # still empty, ours, no link?
        try:
            target_fd = os.open(target, _DIR_FLAGS)
        except OSError as exc:
            raise RestoreTargetError(
                f"{target} is a link or not a folder; give a new folder to restore into."
            ) from exc
        try:
            scratch_fd = os.open(scratch, _DIR_FLAGS)
            try:
                for name in os.listdir(scratch_fd):
                    try:
                        os.stat(name, dir_fd=target_fd, follow_symlinks=False)
                    except FileNotFoundError:
                        pass
                    else:
                        raise RestoreTargetError(
                            f"{target / name} appeared during the restore; nothing was replaced."
                        )
                    os.rename(name, name, src_dir_fd=scratch_fd, dst_dir_fd=target_fd)
            finally:
                os.close(scratch_fd)
            os.rmdir(scratch)
            with TreeBuilder(target_fd, str(target)) as builder:
                builder.finish_dirs(self._dir_modes(members))
        finally:
            os.close(target_fd)
        return Installed(target=target)

    def _install_in_place(
        self, scratch: Path, root: Path, stamp: str, members: Sequence[Member]
    ) -> Installed:
        root.mkdir(parents=True, exist_ok=True)
        root_fd = _open_root(root)
        assert root_fd is not None
        try:
            check_tree(
                _entries(members),
                f"the restore over {root}",
                on_disk_link=DiskView(root_fd).is_link,
            )
            name = f"{ASIDE_PREFIX}{stamp}"
            try:
                os.mkdir(name, 0o700, dir_fd=root_fd)
            except FileExistsError:
                name = f"{name}-{secrets.token_hex(3)}"
                os.mkdir(name, 0o700, dir_fd=root_fd)
            aside = root / name
            aside_fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
            try:
                self._move_in_place(scratch, root, root_fd, aside, aside_fd, members)
            finally:
                os.close(aside_fd)
            shutil.rmtree(scratch)  # fd-based: never follows a link inside
        finally:
            os.close(root_fd)
        return Installed(target=root, kept_aside=(aside,))

    def _move_in_place(
        self,
        scratch: Path,
        root: Path,
        root_fd: int,
        aside: Path,
        aside_fd: int,
        members: Sequence[Member],
    ) -> None:
        kinds = {m.path: m.type for m in members}
        for path in list(kinds):
            parts = path.split("/")
            for i in range(1, len(parts)):
                kinds.setdefault("/".join(parts[:i]), "dir")
        created: list[str] = []
        replaced: list[str] = []
        made: set[str] = set()
        os.mkdir(ASIDE_ENTRIES, 0o700, dir_fd=aside_fd)
        kept_fd = os.open(ASIDE_ENTRIES, _DIR_FLAGS, dir_fd=aside_fd)
        scratch_fd = os.open(scratch, _DIR_FLAGS)  # in the root, or beside a new one
        try:
            for path in sorted(kinds, key=lambda p: (p.count("/"), p)):
                if self._move_one(
                    path, kinds[path], root_fd, scratch_fd, kept_fd, replaced, created
                ):
                    made.add(path)
            with TreeBuilder(root_fd, str(root)) as builder:
                builder.finish_dirs(self._dir_modes(members, made))
        except (OSError, RestoreTargetError) as exc:
            where = getattr(exc, "filename", None) or root
            reason = getattr(exc, "strerror", None) or str(exc)
            raise RestoreTargetError(
                f"the in-place restore stopped at {where} ({reason}); what was replaced so far "
                f"is recorded: undo with backupflow restore files --undo {aside}"
            ) from exc
        finally:
            os.close(scratch_fd)
            os.close(kept_fd)
            record = json.dumps({"version": 2, "created": created, "replaced": replaced})
            fd = os.open(
                UNDO_FILE,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=aside_fd,
            )
            try:
                os.write(fd, record.encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    @staticmethod
    def _move_one(
        path: str,
        kind: str,
        root_fd: int,
        scratch_fd: int,
        kept_fd: int,
        replaced: list[str],
        created: list[str],
    ) -> bool:
        """Put one staged entry in place (a folder is made, not moved); what was there is
        kept aside.  True when a folder was made."""
        parts = path.split("/")
        name = parts[-1]
        dest = open_dir_at(root_fd, parts[:-1])
        try:
            try:
                current: os.stat_result | None = os.stat(name, dir_fd=dest, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            if kind == "dir" and current is not None and stat.S_ISDIR(current.st_mode):
                return False
            if current is not None:
                kept = open_dir_at(kept_fd, parts[:-1], create=0o700)
                try:
                    os.rename(name, name, src_dir_fd=dest, dst_dir_fd=kept)
                finally:
                    os.close(kept)
                replaced.append(path)
            else:
                created.append(path)
            if kind == "dir":
                os.mkdir(name, 0o700, dir_fd=dest)
                return True
            staged = open_dir_at(scratch_fd, parts[:-1])
            try:
                os.rename(name, name, src_dir_fd=staged, dst_dir_fd=dest)
            finally:
                os.close(staged)
            return False
        finally:
            os.close(dest)

    def default_target(self, restore_point: datetime) -> Path:
        """A new, unpredictable folder in the private staging folder (made at install)."""
        ensure_private_dir(self.staging_dir)
        stamp = restore_point.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        return self.staging_dir / f"restored-{self.set_name}-{stamp}-{secrets.token_hex(4)}"

    def live_target(self) -> Path:
        return self.file_set.root


def open_file_engine(set_name: str, file_set: FileSetSettings, staging_dir: Path) -> FileSetEngine:
    if set_name not in ("config", "logs", "uploads"):
        raise EngineError(f"unknown file set {set_name!r}; expected config, logs or uploads.")
    return FileSetEngine(set_name, file_set, staging_dir=staging_dir)
