"""Small filesystem helpers shared by the local storage, the engines and the flows.

What backupflow writes stays private whatever the umask: files are created ``0600`` through
``O_CREAT | O_EXCL | O_NOFOLLOW`` and their mode is fixed through the descriptor, folders are
created ``0700``, and a folder that already exists is used only when it is a real folder, is
ours and nobody else can write to it.  Nothing here follows a link it did not make.

A file backupflow rewrites (an env-file after ``key rotate``) is replaced by
:func:`replace_file`: the new version is written to a private temporary file in the same
folder, given the old file's owner, group and mode through its descriptor, made durable and
renamed over the old one, so whoever could read it before (PostgreSQL's OS user reading the
env-file from ``archive_command``) still can.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

from backupflow.errors import ConfigError

__all__ = [
    "JOB_MARKER",
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "create_private_file",
    "ensure_private_dir",
    "free_bytes",
    "fresh_private_dir",
    "fsync_dir",
    "hold_job_marker",
    "keep_owner_and_mode",
    "make_dirs",
    "matching_entries",
    "privatize_files",
    "readable_size",
    "remove_dead_job_dirs",
    "remove_private_dir",
    "replace_file",
]

#: The file in a job's private folder that says whose it is; its ``flock`` is held for as
#: long as the job runs.
JOB_MARKER = ".job.lock"

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private_file(path: Path, mode: int = PRIVATE_FILE) -> int:
    """Create ``path`` exclusively (never through a link) with exactly ``mode``; returns the
    open read-write descriptor.  The mode is set through the descriptor, so the umask and anyone
    racing for the name change nothing."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def keep_owner_and_mode(fd: int, old: os.stat_result, path: Path) -> None:
    """Give the open new version ``fd`` of ``path`` the owner, group and mode the old
    version ``old`` had.  The owner and group can be given when we are root, or when the
    file is ours and we are a member of its group; otherwise a ConfigError says so (a new
    version its readers cannot read is worse than none)."""
    new = os.fstat(fd)
    if (new.st_uid, new.st_gid) != (old.st_uid, old.st_gid):
        if os.geteuid() != 0 and old.st_uid != os.geteuid():
            raise ConfigError(
                f"{path} belongs to user id {old.st_uid}; rewrite it as that user or as root, "
                "so that its new version keeps its owner."
            )
        try:
            os.fchown(fd, old.st_uid, old.st_gid)
        except PermissionError:
            raise ConfigError(
                f"{path} belongs to group id {old.st_gid}, which this user cannot give its new "
                "version; rewrite it as root or as a member of that group."
            ) from None
    os.fchmod(fd, stat.S_IMODE(old.st_mode))  # after fchown, which clears set-id bits


def replace_file(path: Path, data: bytes) -> bool:
    """Make ``data`` the content of the file ``path``, atomically; returns whether a file
    was there before.

    The new version is written to a private temporary file in the same folder, given the
    old file's owner, group and mode (:func:`keep_owner_and_mode`; a new file is ``0600``
    and ours), fsynced, renamed over ``path``, and the folder is fsynced.  A link or
    anything but a regular file at ``path`` is refused (ConfigError), never written
    through; on any failure the old version is left as it was.
    """
    try:
        old: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        old = None
    except OSError as exc:
        raise ConfigError(f"cannot check {path} ({exc.strerror}).") from None
    if old is not None and stat.S_ISLNK(old.st_mode):
        raise ConfigError(
            f"{path} is a link; give the real file, backupflow never writes through a link."
        )
    if old is not None and not stat.S_ISREG(old.st_mode):
        raise ConfigError(f"{path} is not a regular file; it was left as it is.")
    temporary = path.with_name(f".{path.name}.backupflow-{secrets.token_hex(6)}.tmp")
    try:
        fd = create_private_file(temporary)
    except OSError as exc:
        raise ConfigError(
            f"cannot write a new version of {path} in its folder ({exc.strerror})."
        ) from None
    try:
        with os.fdopen(fd, "wb", closefd=False) as handle:
            handle.write(data)
        if old is not None:
            keep_owner_and_mode(fd, old, path)
        os.fsync(fd)
        os.replace(temporary, path)  # replaces a link put there meanwhile, never follows it
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    return old is not None


def make_dirs(path: Path, mode: int = PRIVATE_DIR) -> None:
    """Create ``path`` and its missing parents with exactly ``mode`` (umask ignored).

    Folders that already exist are left as they are.
    """
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            continue  # made meanwhile by someone else: judged by the caller, not widened here
        _fix_mode(folder, mode)
        # A new folder is an entry in its parent: durable only once the parent is synced,
        # or a power cut loses it (and whatever was acknowledged inside it).
        fsync_dir(folder.parent)


def _fix_mode(folder: Path, mode: int) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _problem(path: Path) -> str | None:
    """Why ``path`` is not a private folder of ours, or None when it is one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "does not exist"
    if stat.S_ISLNK(st.st_mode):
        return "is a link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if st.st_uid != os.geteuid():
        return f"belongs to user id {st.st_uid}, not to us ({os.geteuid()})"
    if st.st_mode & _OTHERS_WRITE:
        return f"is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) ``0700``, or accept it when it already exists as a
    real folder of ours that no other user can write to; anything else is a ConfigError.

    ``path`` must be absolute; a link at ``path`` is never followed.
    """
    try:
        make_dirs(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the folder {path} ({exc.strerror}); choose a writable path."
        ) from exc
    problem = _problem(path)
    if problem is not None:
        raise ConfigError(
            f"the folder {path} {problem}; remove it or choose another path, backupflow only "
            "works in a private folder of its own."
        )
    return path


def fresh_private_dir(path: Path) -> Path:
    """Create the new folder ``path`` ``0700`` inside a private parent (checked with
    :func:`ensure_private_dir`).  A private folder of ours left there by an interrupted run
    is removed first; anything else at ``path`` is refused."""
    ensure_private_dir(path.parent)
    if os.path.lexists(path):
        problem = _problem(path)
        if problem is not None:
            raise ConfigError(
                f"{path} already exists and {problem}; remove it, backupflow only works in "
                "a private folder of its own."
            )
        shutil.rmtree(path)
    try:
        os.mkdir(path, PRIVATE_DIR)  # fails on anything at path, a dangling link included
        _fix_mode(path, PRIVATE_DIR)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder {path} ({exc.strerror}).") from exc
    return path


def remove_private_dir(path: Path) -> None:
    """Remove ``path`` if it is a private folder of ours in a private parent; otherwise leave
    it (it was never ours to remove).  Never follows a link."""
    if _problem(path.parent) is None and _problem(path) is None:
        shutil.rmtree(path, ignore_errors=True)


def hold_job_marker(folder: Path) -> int:
    """Mark the private ``folder`` as a running job's: a new ``0600`` marker holding this
    process's id and start time, locked (``flock``) through the returned descriptor.  The
    lock lives as long as the descriptor: closing it, or the process dying, releases it,
    which is how :func:`remove_dead_job_dirs` tells a dead job's folder from a live one's."""
    fd = create_private_file(folder / JOB_MARKER)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        record = {"pid": os.getpid(), "started": time.time()}
        os.write(fd, json.dumps(record).encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_dead_job_dirs(
    parent: Path, *, older_than: float, unmarked: Callable[[str], bool]
) -> list[Path]:
    """Remove the folders that dead jobs left in the private ``parent``; returns them.

    Only direct children that are private folders of ours are judged, and no link is ever
    followed.  A folder with a marker (:func:`hold_job_marker`) is removed when nobody holds
    the marker's lock (its job is gone) and the marker is older than ``older_than`` (a time
    stamp); the lock is held while it is removed, so two cleaners never race.  A folder
    without a marker (left by a version that wrote none, or killed before its marker) is
    removed only when ``unmarked(name)`` says it is a job folder and it is that old.
    """
    if _problem(parent) is not None:
        return []
    removed: list[Path] = []
    with os.scandir(parent) as entries:
        children = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    for folder in sorted(children):
        if _problem(folder) is not None:
            continue
        try:
            fd = os.open(folder / JOB_MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            if unmarked(folder.name) and os.lstat(folder).st_mtime < older_than:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
            continue
        except OSError:
            continue  # a link or something else where the marker should be: not ours
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode) or os.fstat(fd).st_mtime >= older_than:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its job is running
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed


def matching_entries(folder: Path, pattern: re.Pattern[str]) -> list[Path]:
    """The entries of ``folder`` whose whole name matches ``pattern`` (links included, none
    followed), sorted; none when ``folder`` cannot be listed."""
    try:
        with os.scandir(folder) as entries:
            return sorted(Path(e.path) for e in entries if pattern.fullmatch(e.name))
    except OSError:
        return []


def privatize_files(folder: Path) -> None:
    """Make every regular file under the private ``folder`` ``0600`` through its descriptor.

    For files a library created with its own mode (a tar file, an SQLite database) inside a
    folder that is already private: nobody else could reach them meanwhile.
    """
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            with contextlib.suppress(OSError):
                _fix_mode(Path(dirpath) / name, PRIVATE_DIR)
        for name in filenames:
            try:
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                fd = os.open(Path(dirpath) / name, flags)
            except OSError:
                continue  # a link, or gone
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    os.fchmod(fd, PRIVATE_FILE)
            finally:
                os.close(fd)


def free_bytes(path: Path) -> tuple[Path, int]:
    """Bytes an unprivileged writer may still use on the filesystem that holds ``path`` (or,
    when it does not exist yet, its nearest existing parent), and that folder."""
    current = path
    while not os.path.lexists(current) and current.parent != current:
        current = current.parent
    return current, shutil.disk_usage(current).free


def readable_size(size: int) -> str:
    """``size`` bytes for a message: ``512 bytes``, ``3.2 GiB``."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def read_regular_file(path: Path, limit: int) -> bytes | None:
    """At most ``limit + 1`` bytes of the regular file at ``path`` (more than ``limit``: it
    is too large), or None when it is not a regular file (a FIFO planted at the path never
    hangs the reader: it is opened without blocking).  OSError when it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(limit + 1)
    finally:
        os.close(fd)
