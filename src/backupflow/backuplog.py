"""The backup log: one JSON line per backup, restore or clean-up (the seed's backup.log).

The log is ``0640`` whatever the umask (set through the descriptor when it is created), a
folder made for it is ``0750``, and a log file that is a link, is not a regular file or is
not ours is refused rather than written through.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupflow.errors import ConfigError
from backupflow.fsutil import make_dirs

__all__ = ["LOG_DIR_MODE", "LOG_MODE", "BackupLog"]

LOG_MODE = 0o640
LOG_DIR_MODE = 0o750
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class BackupLog:
    """Appends JSON lines to a file; each line is written with one ``write`` call."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _refuse(self, why: str) -> ConfigError:
        return ConfigError(
            f"the backup log {self.path} {why}; set BACKUPFLOW_BACKUP_LOG to a file of "
            "backupflow's own."
        )

    def _open(self) -> int:
        """An append descriptor on the log, created ``0640`` when missing; never a link."""
        try:
            make_dirs(self.path.parent, LOG_DIR_MODE)
            try:
                fd = os.open(self.path, _APPEND | os.O_CREAT | os.O_EXCL, LOG_MODE)
                created = True
            except FileExistsError:
                fd = os.open(self.path, _APPEND)
                created = False
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._refuse("is a link") from exc
            if exc.errno == errno.ENXIO:  # a FIFO or socket with nobody at the other end
                raise self._refuse("is not a regular file") from exc
            raise ConfigError(
                f"cannot write the backup log {self.path} ({exc.strerror}); "
                "set BACKUPFLOW_BACKUP_LOG to a writable file."
            ) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._refuse("is not a regular file")
            if st.st_uid != os.geteuid():
                raise self._refuse(f"belongs to user id {st.st_uid}, not to us ({os.geteuid()})")
            if created or stat.S_IMODE(st.st_mode) & ~LOG_MODE:
                os.fchmod(fd, LOG_MODE)  # exact mode whatever the umask; never wider
        except BaseException:
            os.close(fd)
            raise
        return fd

    def check_writable(self) -> None:
        """Fail before any work when the log cannot be written (or is not ours)."""
        os.close(self._open())

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event; returns the record written."""
        record = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "event": event, **fields}
        line = json.dumps(record, sort_keys=False, default=str) + "\n"
        fd = self._open()
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
        return record

    def read(self) -> list[dict[str, Any]]:
        """Every record (for reports and tests)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigError(
                f"cannot read the backup log {self.path} ({exc.strerror}); "
                "set BACKUPFLOW_BACKUP_LOG to a file of backupflow's own."
            ) from exc
        with open(fd, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
