"""A storage tier in a local folder (the seed's ``/var/backups``)."""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from backupflow.errors import (
    IntegrityError,
    InvalidKeyError,
    ObjectNotFoundError,
    StorageError,
    TransientStorageError,
)
from backupflow.fsutil import PRIVATE_DIR, PRIVATE_FILE, create_private_file, fsync_dir, make_dirs
from backupflow.storage.base import (
    TMP_PREFIX,
    ObjectInfo,
    Storage,
    StorageCapabilities,
    validate_key,
    validate_prefix,
)

__all__ = ["LocalStorage"]

#: Errors that may pass with time (reported as retryable, so a restore moves on to the next
#: tier).  Not EINTR: Python restarts a call a signal interrupts (PEP 475).
_TRANSIENT = {errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT}


def _translate(exc: OSError, action: str, key: str) -> StorageError:
    if exc.errno in _TRANSIENT:
        return TransientStorageError(
            f"could not {action} {key}: {exc.strerror}; retrying may help."
        )
    if exc.errno == errno.ENOSPC:
        return StorageError(f"could not {action} {key}: the backup disk is full.")
    return StorageError(f"could not {action} {key}: {exc.strerror or exc}.")


def _check_landed(path: Path, ours: os.stat_result, written: int, key: str, name: str) -> None:
    """The file at ``path`` must be the one just written (same inode) and hold every byte
    written: another writer of the same key, or a file system that lost the rename or part
    of the data, fails the put instead of leaving a manifest that names the wrong bytes."""
    try:
        landed = path.lstat()
    except FileNotFoundError:
        landed = None
    if landed is None or (landed.st_dev, landed.st_ino) != (ours.st_dev, ours.st_ino):
        raise IntegrityError(
            f"{key} in {name} was replaced by another writer while it was being written; "
            "run the backup again."
        )
    if ours.st_size != written or landed.st_size != written:
        raise IntegrityError(
            f"{key} in {name} holds {landed.st_size} bytes after writing {written}; "
            "the write was not complete."
        )


class LocalStorage(Storage):
    """Objects are files under ``root``; writes go to ``.tmp-*`` names, fsync, then rename.

    Whatever the umask, objects (manifests included) are ``0600``, set through the
    descriptor before the rename, and the folders this tier creates are ``0700``.  An object
    that is a link is not an object: it is neither listed nor read.
    """

    def __init__(self, root: Path, *, name: str | None = None) -> None:
        self.root = Path(root)
        self.name = name or f"local:{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    @property
    def capabilities(self) -> StorageCapabilities:
        # A completed put proves what can be proved here: every byte was accepted by write()
        # and fsync() (EIO and ENOSPC surface there), and the file now at the key is the very
        # file written, of the size written (checked below).  Reading it back at once would
        # only read the page cache, our own bytes, and prove nothing about the disk; the
        # pages are dropped instead, so the scheduled verify and every restore read the disk.
        return StorageCapabilities(verified_writes=True)

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        path = self._path(key)
        tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}")
        try:
            make_dirs(path.parent, PRIVATE_DIR)
            with os.fdopen(create_private_file(tmp, PRIVATE_FILE), "wb") as handle:
                written = 0
                for chunk in chunks:
                    written += handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
                ours = os.fstat(handle.fileno())
                # Written and durable: leave the host's page cache to the application.
                if hasattr(os, "posix_fadvise"):  # not on every platform
                    os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                os.replace(tmp, path)
                fsync_dir(path.parent)
                _check_landed(path, ours, written, key, self.name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise _translate(exc, "write", key) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return self.stat(key)

    def create(self, key: str, data: bytes) -> bool:
        # Written and synced under a private temporary name, then hard-linked to the key:
        # link() never replaces an existing name, so exactly one of two racing writers wins.
        path = self._path(key)
        tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}")
        try:
            make_dirs(path.parent, PRIVATE_DIR)
            with os.fdopen(create_private_file(tmp, PRIVATE_FILE), "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path, follow_symlinks=False)
            except FileExistsError:
                return False
            fsync_dir(path.parent)
            return True
        except OSError as exc:
            raise _translate(exc, "write", key) from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    @contextlib.contextmanager
    def _opened(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectNotFoundError(f"{key} does not exist in {self.name}.") from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ObjectNotFoundError(
                    f"{key} is a link, not an object, in {self.name}."
                ) from exc
            raise _translate(exc, "read", key) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ObjectNotFoundError(
                f"{key} is a folder or special file, not an object, in {self.name}."
            )
        with os.fdopen(fd, "rb") as handle:
            yield handle

    def open(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return self._opened(key)

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.lstat()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"{key} does not exist in {self.name}.") from exc
        except OSError as exc:
            raise _translate(exc, "inspect", key) from exc
        if stat.S_ISLNK(st.st_mode):
            raise ObjectNotFoundError(f"{key} is a link, not an object, in {self.name}.")
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFoundError(f"{key} is a folder, not an object, in {self.name}.")
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        folder = prefix.rpartition("/")[0]
        base = self.root / folder if folder else self.root
        if not base.is_dir():
            return
        found: builtins.list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for filename in filenames:
                if filename.startswith("."):
                    continue
                key = filename if rel_dir == "." else f"{rel_dir}/{filename}"
                if not key.startswith(prefix):
                    continue
                try:
                    validate_key(key)
                except InvalidKeyError:
                    continue  # not ours (e.g. a stray "notes (copy).txt"): not an object
                try:
                    found.append(self.stat(key))
                except ObjectNotFoundError:
                    continue  # deleted while listing
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            return  # a folder is not an object
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _translate(exc, "delete", key) from exc
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()  # only removes empty folders
            except OSError:
                break
            parent = parent.parent

    def cleanup_incomplete(self, older_than: datetime) -> builtins.list[str]:
        removed: builtins.list[str] = []
        if not self.root.is_dir():
            return removed
        cutoff = older_than.timestamp()
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for filename in filenames:
                if not filename.startswith(TMP_PREFIX):
                    continue
                path = Path(dirpath) / filename
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed.append(path.relative_to(self.root).as_posix())
                except FileNotFoundError:
                    continue
        return removed
