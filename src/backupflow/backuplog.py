"""The backup log: one JSON line per backup, restore or clean-up (the seed's backup.log)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupflow.errors import ConfigError

__all__ = ["BackupLog"]


class BackupLog:
    """Appends JSON lines to a file; each line is written with one ``write`` call."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def check_writable(self) -> None:
        """Fail before any work when the log cannot be written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"cannot write the backup log {self.path} ({exc.strerror}); "
                "set BACKUPFLOW_BACKUP_LOG to a writable file."
            ) from exc

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event; returns the record written."""
        record = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "event": event, **fields}
        line = json.dumps(record, sort_keys=False, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
        return record

    def read(self) -> list[dict[str, Any]]:
        """Every record (for reports and tests)."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
