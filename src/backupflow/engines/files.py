"""The file-set "engine": dumps a file set and restores it safely, verified file by file.

A restore is staged in a scratch folder first: absolute paths, ``..`` components, links that
point outside the target and device files are refused; every file's SHA-256 is checked.
Only then are the files moved into place.  In place, the current files are first kept aside
(with an ``undo.json``), so the restore can be undone.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tarfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from backupflow.config import FileSetSettings
from backupflow.engines.base import BackupSource, Capabilities, Dump, DumpFile, Engine, Installed
from backupflow.errors import EngineError, IntegrityError, RestoreTargetError, SourceNotFoundError
from backupflow.filesets import (
    Member,
    ScanReport,
    decode_members,
    encode_members,
    is_content_addressed,
    link_stays_inside,
    safe_relative,
    scan,
    write_tar,
)
from backupflow.models import BackupKind

__all__ = ["Change", "FileSetEngine", "plan_changes", "read_members", "undo_in_place"]

UNDO_FILE = "undo.json"
_CHUNK = 1 << 20


def read_members(source: BackupSource) -> list[Member]:
    """The verified member list of a file-set backup."""
    with source.open_object("members") as handle:
        return decode_members(_lines(handle))


def _lines(handle: BinaryIO) -> Iterator[bytes]:
    rest = b""
    while block := handle.read(1 << 16):
        *lines, rest = (rest + block).split(b"\n")
        yield from lines
    if rest:
        yield rest


def _check_members(members: Sequence[Member], backup_id: str) -> None:
    """Refuse a member list that would write outside the target.

    Besides absolute paths, ``..`` and links pointing outside, nothing may sit below a link:
    the operating system would follow the link when the entry is written.
    """
    links = {m.path for m in members if m.type == "symlink"}
    for member in members:
        parents = PurePosixPath(member.path).parents
        if any(str(parent) in links for parent in parents):
            raise IntegrityError(
                f"backup {backup_id} lists {member.path!r} below a link; nothing was restored."
            )
        if safe_relative(member.path) is None:
            raise IntegrityError(
                f"backup {backup_id} lists the unsafe path {member.path!r} (absolute or with "
                "'..'); nothing was restored."
            )
        if member.type == "symlink" and not link_stays_inside(member.path, member.target or ""):
            raise IntegrityError(
                f"backup {backup_id} has a link {member.path!r} -> {member.target!r} that points "
                "outside the restore target; nothing was restored."
            )
        if member.type not in ("file", "dir", "symlink"):
            raise IntegrityError(f"backup {backup_id} lists {member.path!r} of unknown type.")


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


Change = tuple[str, Literal["create", "replace", "unchanged"]]


def plan_changes(members: Sequence[Member], root: Path) -> list[Change]:
    """What restoring ``members`` into ``root`` would change (for ``--dry-run``)."""
    changes: list[Change] = []
    for member in members:
        path = root / member.path
        if not os.path.lexists(path):
            changes.append((member.path, "create"))
        elif member.type == "file":
            same = path.is_file() and not path.is_symlink() and _sha(path) == member.sha256
            changes.append((member.path, "unchanged" if same else "replace"))
        elif member.type == "symlink":
            same = path.is_symlink() and os.readlink(path) == member.target
            changes.append((member.path, "unchanged" if same else "replace"))
        else:
            changes.append((member.path, "unchanged" if path.is_dir() else "replace"))
    return changes


def undo_in_place(aside: Path, root: Path) -> int:
    """Undo an in-place restore from the folder it kept aside; returns entries put back."""
    record = json.loads((aside / UNDO_FILE).read_text())
    for rel in reversed(record["created"]):
        path = root / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for rel in record["replaced"]:
        current = root / rel
        if current.is_dir() and not current.is_symlink():
            shutil.rmtree(current)  # the restore put a folder where a file or link was
        elif os.path.lexists(current):
            current.unlink()
        current.parent.mkdir(parents=True, exist_ok=True)
        os.replace(aside / rel, current)
    shutil.rmtree(aside)
    return len(record["created"]) + len(record["replaced"])


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
        with open(members_path, "wb") as out:
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
        if target.exists() and not target.is_dir():
            raise RestoreTargetError(f"{target} is a file; give a folder to restore into.")
        if target.is_dir() and any(target.iterdir()) and not replace:
            raise RestoreTargetError(
                f"{target} is not empty; restore into an empty or new folder with --into, or "
                "use --in-place to replace the live files (they are kept aside)."
            )

    def restore(
        self, chain: Sequence[BackupSource], scratch: Path, *, until: datetime | None = None
    ) -> None:
        source = chain[-1]
        manifest = source.manifest
        members = read_members(source)
        _check_members(members, manifest.id)
        scratch.mkdir(parents=True)
        if manifest.position.get("layout") == "tar":
            self._extract_tar(source, members, scratch)
        else:
            self._fetch_contents(source, members, scratch)
        self._finish(members, scratch, manifest.id)

    def _extract_tar(self, source: BackupSource, members: Sequence[Member], scratch: Path) -> None:
        expected = {m.path: m for m in members}
        backup_id = source.manifest.id

        def only_listed(info: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
            member = expected.get(info.name)
            kinds = {"file": info.isfile(), "dir": info.isdir(), "symlink": info.issym()}
            if member is None or not kinds[member.type]:
                raise IntegrityError(
                    f"the archive of backup {backup_id} holds {info.name!r}, which its member "
                    "list does not; nothing was restored."
                )
            return tarfile.data_filter(info, path)

        with source.open_object("data") as stream:
            try:
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    tar.extractall(scratch, filter=only_listed)
            except tarfile.FilterError as exc:
                raise IntegrityError(
                    f"the archive of backup {backup_id} is unsafe ({exc}); nothing was restored."
                ) from exc
            except tarfile.TarError as exc:
                raise IntegrityError(
                    f"the archive of backup {backup_id} is damaged: {exc}."
                ) from exc

    def _fetch_contents(
        self, source: BackupSource, members: Sequence[Member], scratch: Path
    ) -> None:
        # Folders and files first, links last: nothing is ever written through a link.
        for member in sorted(members, key=lambda m: m.type == "symlink"):
            path = scratch / member.path
            if member.type == "dir":
                path.mkdir(parents=True, exist_ok=True)
            elif member.type == "symlink":
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(member.target or "", path)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                with source.open_object(f"content:{member.sha256}") as src, open(path, "xb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)

    def _finish(self, members: Sequence[Member], scratch: Path, backup_id: str) -> None:
        """Verify every member in the scratch folder, then set modes and times."""
        for member in members:
            path = scratch / member.path
            if member.type == "file":
                if not path.is_file() or path.is_symlink() or _sha(path) != member.sha256:
                    raise IntegrityError(
                        f"{member.path} of backup {backup_id} does not match its recorded "
                        "SHA-256; nothing was restored."
                    )
            elif member.type == "symlink":
                if not path.is_symlink() or os.readlink(path) != member.target:
                    raise IntegrityError(f"the link {member.path} of backup {backup_id} is wrong.")
            elif not path.is_dir():
                raise IntegrityError(f"the folder {member.path} of backup {backup_id} is missing.")
        for member in sorted(members, key=lambda m: m.path.count("/"), reverse=True):
            path = scratch / member.path
            if member.type == "symlink":
                continue
            os.chmod(path, member.mode & 0o777)  # never setuid, setgid or sticky
            os.utime(path, (member.mtime, member.mtime))

    def install(self, scratch: Path, target: Path, *, replace: bool, stamp: str) -> Installed:
        if not replace:
            target.mkdir(parents=True, exist_ok=True)
            for entry in scratch.iterdir():
                os.replace(entry, target / entry.name)
            scratch.rmdir()
            return Installed(target=target)
        return self._install_in_place(scratch, target, stamp)

    def _install_in_place(self, scratch: Path, root: Path, stamp: str) -> Installed:
        root.mkdir(parents=True, exist_ok=True)
        real_root = os.path.realpath(root)
        aside = root / f".backupflow-aside-{stamp}"
        created: list[str] = []
        replaced: list[str] = []
        entries = sorted(
            (p.relative_to(scratch).as_posix() for p in scratch.rglob("*")),
            key=lambda rel: (rel.count("/"), rel),
        )
        aside.mkdir(exist_ok=True)
        try:
            self._move_in(scratch, root, real_root, aside, entries, created, replaced)
        except OSError as exc:
            raise RestoreTargetError(
                f"the in-place restore stopped at {exc.filename or root} ({exc.strerror}); what "
                f"was replaced so far is recorded: undo with backupflow restore files --undo "
                f"{aside}"
            ) from exc
        finally:
            (aside / UNDO_FILE).write_text(json.dumps({"created": created, "replaced": replaced}))
        shutil.rmtree(scratch)
        return Installed(target=root, kept_aside=(aside,))

    def _move_in(
        self,
        scratch: Path,
        root: Path,
        real_root: str,
        aside: Path,
        entries: Sequence[str],
        created: list[str],
        replaced: list[str],
    ) -> None:
        for rel in entries:
            staged, dest = scratch / rel, root / rel
            parent = os.path.realpath(dest.parent)
            if parent != real_root and not parent.startswith(real_root + os.sep):
                raise RestoreTargetError(
                    f"{dest.parent} leads outside {root} through a link; nothing more was moved "
                    f"(undo with backupflow restore files --undo {aside})."
                )
            if staged.is_dir() and not staged.is_symlink():
                if dest.is_dir() and not dest.is_symlink():
                    continue
                if os.path.lexists(dest):
                    self._keep_aside(dest, aside / rel)
                    replaced.append(rel)
                else:
                    created.append(rel)
                dest.mkdir()
                continue
            if os.path.lexists(dest):
                self._keep_aside(dest, aside / rel)
                replaced.append(rel)
            else:
                created.append(rel)
            os.replace(staged, dest)

    @staticmethod
    def _keep_aside(current: Path, aside: Path) -> None:
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.replace(current, aside)

    def default_target(self, restore_point: datetime) -> Path:
        stamp = restore_point.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        return self.staging_dir / f"restored-{self.set_name}-{stamp}"

    def live_target(self) -> Path:
        return self.file_set.root


def open_file_engine(set_name: str, file_set: FileSetSettings, staging_dir: Path) -> FileSetEngine:
    if set_name not in ("config", "logs", "uploads"):
        raise EngineError(f"unknown file set {set_name!r}; expected config, logs or uploads.")
    return FileSetEngine(set_name, file_set, staging_dir=staging_dir)
