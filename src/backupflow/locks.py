"""Exclusive, non-blocking locks between runs on one host: one writer per restore target, one
CLI backup at a time.

A lock is an ``fcntl.flock`` on a private (``0600``) file under ``<staging_dir>/locks``,
named from a hash of what it guards, so any name (a path, a SQL Server database) gives a
safe file name.  The kernel drops the lock when its holder exits, however it exits, so a
killed run never leaves a stale lock behind.  Whoever holds it writes who they are into the
file (the run, its process id), and a second taker is refused with that, in one sentence:
"another restore is writing <target> (run ...); wait for it or choose another target".
Backups wait for their lock instead, saying who they wait for.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from backupflow.errors import RestoreTargetError, StorageError
from backupflow.fsutil import make_dirs

__all__ = ["LockHeldError", "backup_lock", "exclusive", "lock_path", "target_lock"]


class LockHeldError(RestoreTargetError):
    """Another run holds the lock."""


def lock_path(staging_dir: Path, kind: str, name: str) -> Path:
    """The lock file guarding ``name`` (of ``kind``: restore, backup) under ``staging_dir``."""
    digest = hashlib.sha256(f"{kind}\0{name}".encode()).hexdigest()[:24]
    return staging_dir / "locks" / f"{kind}-{digest}.lock"


def _holder(run: str | None) -> str:
    return f"run {run}, process {os.getpid()}" if run else f"process {os.getpid()}"


@contextmanager
def exclusive(
    path: Path,
    busy: str,
    *,
    run: str | None = None,
    wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the lock file ``path``.  When another process holds it: with ``wait``, call it
    with ``busy`` formatted with ``holder`` (who holds it) and wait for the lock; without,
    raise :class:`LockHeldError` with that sentence."""
    make_dirs(path.parent)
    fd = _take(path, busy, wait)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder(run).encode(), 0)
        yield
    finally:
        # Removed while still held, so the lock folder does not fill up; a taker that
        # opened it meanwhile notices (the path is no longer its file) and opens it again.
        with suppress(OSError):
            os.unlink(path)
        os.close(fd)  # closing drops the lock


def _take(path: Path, busy: str, wait: Callable[[str], None] | None) -> int:
    """An open descriptor of ``path`` holding its lock (see :func:`exclusive`)."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    told = False
    while True:
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open the lock file {path} ({exc.strerror}).") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise StorageError(f"cannot lock {path} ({exc.strerror}).") from exc
                held = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown"
                if wait is None:
                    raise LockHeldError(busy.format(holder=held)) from None
                if not told:
                    wait(busy.format(holder=held))
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)  # the holder removed it as we waited: take the new one


def _target_name(target: Path | str) -> str:
    """What a restore target's lock is named from: an absolute path by its real folder and
    its own name, so two spellings of one path (through a linked folder) share one lock."""
    if isinstance(target, Path) and target.is_absolute():
        return str(Path(os.path.realpath(target.parent)) / target.name)
    return str(target)


@contextmanager
def target_lock(staging_dir: Path, target: Path | str, *, run: str | None = None) -> Iterator[None]:
    """Hold the restore lock of ``target``: two restores, drills or failovers never write
    the same target at once.  A restore holds it from before its scratch copy exists until
    that copy is gone, which is how :mod:`backupflow.leftovers` tells a killed restore's
    scratch from a running one's."""
    with exclusive(
        lock_path(staging_dir, "restore", _target_name(target)),
        f"another restore is writing {target} ({{holder}}); wait for it or choose another target.",
        run=run,
    ):
        yield


@contextmanager
def backup_lock(
    staging_dir: Path, *, run: str | None = None, wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the host's database-backup lock (``wait`` is told when another backup holds it
    and this one waits): backups on one host never overlap."""
    with exclusive(
        lock_path(staging_dir, "backup", "database"),
        "waiting for the database-backup slot held by another run ({holder})",
        run=run,
        wait=wait,
    ):
        yield
