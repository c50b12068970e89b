"""The file-set "engine": dumps a file set and restores it safely, verified file by file.

A restore is staged in a private scratch folder first.  The member list is checked by the
one path validator (:mod:`backupflow.safepaths`): canonical paths only, nothing below a link
or a file, links that stay inside.  The backup is unpacked into scratch and verified entry
by entry (:mod:`backupflow.filesets.unpack`).  Only then are the files moved into place.  In
place, the current files are first kept aside with an ``undo.json``, so the restore can be
undone (:mod:`backupflow.filesets.undo`).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
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
from backupflow.errors import EngineError, RestoreTargetError, SourceNotFoundError
from backupflow.filesets.members import (
    MAX_MEMBER_LINE,
    Member,
    ScanReport,
    decode_members,
    encode_members,
    is_content_addressed,
    open_private,
    scan,
    tree_entries,
    write_tar,
)
from backupflow.filesets.undo import DIR_FLAGS, dir_modes, install_in_place, open_root
from backupflow.filesets.unpack import extract_tar, fetch_contents
from backupflow.fsutil import ensure_private_dir, matching_entries
from backupflow.models import BackupKind
from backupflow.safepaths import DiskView, TreeBuilder, check_tree, open_dir_at
from backupflow.vocabulary import flag

__all__ = [
    "Change",
    "FileSetEngine",
    "plan_changes",
    "read_members",
]

_CHUNK = 1 << 20


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
    check_tree(tree_entries(members), where)
    root_fd = open_root(root)
    if root_fd is None:
        return [(m.path, "create") for m in members]
    try:
        view = DiskView(root_fd)
        check_tree(tree_entries(members), where, on_disk_link=view.is_link)
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


# -- restore helpers -----------------------------------------------------------------------


def _check_free_space(fd: int, members: Sequence[Member], where: Path) -> None:
    needed = sum(m.size for m in members if m.type == "file")
    info = os.fstatvfs(fd)
    free = info.f_bavail * info.f_frsize
    if needed > free:
        raise RestoreTargetError(
            f"the restore needs {needed:,} bytes but {where} has {free:,} free; free some space "
            f"or restore elsewhere with {flag('into')}."
        )


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
        """Inside an existing target folder, else beside it under a name that says which
        target it is for (so a restore into a new sub-folder of a root never looks like one
        into the root)."""
        token = secrets.token_hex(4)
        if target.is_dir():
            return target / f".backupflow-restore-{token}"
        return target.parent / f".{target.name}.backupflow-restore-{token}"

    def scratch_leftovers(self, target: Path) -> list[Path]:
        inside = re.compile(r"\.backupflow-restore-[0-9a-f]{8}")
        beside = re.compile(re.escape(f".{target.name}.backupflow-restore-") + "[0-9a-f]{8}")
        found = matching_entries(target, inside) if target.is_dir() else []
        return found + matching_entries(target.parent, beside)

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
                f"{target} is not empty; restore into an empty or new folder with "
                f"{flag('into')}, or use {flag('in_place')} to replace the live files (they are "
                "kept aside)."
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
        check_tree(tree_entries(members), where)
        os.mkdir(scratch, 0o700)
        fd = os.open(scratch, DIR_FLAGS)
        try:
            _check_free_space(fd, members, scratch.parent)
            with TreeBuilder(fd, where) as builder:
                if source.manifest.position.get("layout") == "tar":
                    extract_tar(source, members, builder, scratch)
                else:
                    fetch_contents(source, members, builder)
        finally:
            os.close(fd)
        return Restored(
            scratch,
            tuple(step.manifest for step in chain),
            checks=("member list", "every file's SHA-256"),
            detail=tuple(members),
        )

    def install(self, restored: Restored, target: Path, *, replace: bool, stamp: str) -> Installed:
        members: tuple[Member, ...] = restored.detail
        if not replace:
            return self._install_into(restored.scratch, target, members)
        return install_in_place(restored.scratch, target, stamp, members)

    def _install_into(self, scratch: Path, target: Path, members: Sequence[Member]) -> Installed:
        """Move the scratch tree into ``target``: a new folder made here (0700), or an empty
        folder of ours that nobody else can write to."""
        try:
            os.mkdir(target, 0o700)
        except FileExistsError:
            self._check_target(target, False, scratch.name)  # still empty, ours, no link?
        try:
            target_fd = os.open(target, DIR_FLAGS)
        except OSError as exc:
            raise RestoreTargetError(
                f"{target} is a link or not a folder; give a new folder to restore into."
            ) from exc
        try:
            scratch_fd = os.open(scratch, DIR_FLAGS)
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
                builder.finish_dirs(dir_modes(members))
        finally:
            os.close(target_fd)
        return Installed(target=target)

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
