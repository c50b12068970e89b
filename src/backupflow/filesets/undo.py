"""Kept aside: replacing a live folder in place, and undoing it.

An in-place restore moves each staged entry over the live one; whatever it replaces is moved
into a private folder (``.backupflow-aside-<stamp>/entries``) beside an ``undo.json`` that
lists what was created and what was replaced.  :func:`undo_in_place` trusts that folder
only when it is ours, private, and directly under the root, and checks every path in the
record like a member path before a single entry is changed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from backupflow.engines.base import Installed
from backupflow.errors import IntegrityError, RestoreTargetError
from backupflow.filesets.members import Member, tree_entries
from backupflow.safepaths import DiskView, TreeBuilder, check_tree, open_dir_at, path_problem

__all__ = [
    "ASIDE_ENTRIES",
    "ASIDE_PREFIX",
    "DIR_FLAGS",
    "MAX_UNDO_BYTES",
    "UNDO_FILE",
    "dir_modes",
    "install_in_place",
    "open_root",
    "undo_in_place",
]

UNDO_FILE = "undo.json"
ASIDE_PREFIX = ".backupflow-aside-"
#: Where a version-2 aside folder keeps the replaced entries (``undo.json`` sits beside it).
ASIDE_ENTRIES = "entries"
MAX_UNDO_BYTES = 64 * 1024 * 1024
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_ASIDE_NAME = re.compile(re.escape(ASIDE_PREFIX) + r"[0-9A-Za-z-]{1,64}")


def open_root(root: Path) -> int | None:
    """A descriptor of the target folder (the configured root may itself be a link), or None
    when it does not exist."""
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise RestoreTargetError(f"{root} is a file; give a folder to restore into.") from None


def dir_modes(
    members: Sequence[Member], only: set[str] | None = None
) -> list[tuple[str, int, float]]:
    """(path, mode, mtime) of the folders among ``members`` (or only those in ``only``), to be
    set once everything below them is in place."""
    return [
        (m.path, m.mode, m.mtime)
        for m in members
        if m.type == "dir" and (only is None or m.path in only)
    ]


# -- in place ----------------------------------------------------------------------------


def install_in_place(scratch: Path, root: Path, stamp: str, members: Sequence[Member]) -> Installed:
    """Move the checked scratch tree over the live folder ``root``; whatever it replaces is
    kept aside in a private folder named with ``stamp``, with the undo record beside it."""
    root.mkdir(parents=True, exist_ok=True)
    root_fd = open_root(root)
    assert root_fd is not None
    try:
        check_tree(
            tree_entries(members),
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
        aside_fd = os.open(name, DIR_FLAGS, dir_fd=root_fd)
        try:
            _move_in_place(scratch, root, root_fd, aside, aside_fd, members)
        finally:
            os.close(aside_fd)
        shutil.rmtree(scratch)  # fd-based: never follows a link inside
    finally:
        os.close(root_fd)
    return Installed(target=root, kept_aside=(aside,))


def _move_in_place(
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
    kept_fd = os.open(ASIDE_ENTRIES, DIR_FLAGS, dir_fd=aside_fd)
    scratch_fd = os.open(scratch, DIR_FLAGS)  # in the root, or beside a new one
    try:
        for path in sorted(kinds, key=lambda p: (p.count("/"), p)):
            if _move_one(path, kinds[path], root_fd, scratch_fd, kept_fd, replaced, created):
                made.add(path)
        with TreeBuilder(root_fd, str(root)) as builder:
            builder.finish_dirs(dir_modes(members, made))
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


# -- undo --------------------------------------------------------------------------------


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
    root_fd = open_root(root)
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
            aside_fd = os.open(aside.name, DIR_FLAGS, dir_fd=root_fd)
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
            kept_fd = os.open(ASIDE_ENTRIES, DIR_FLAGS, dir_fd=aside_fd)
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
