"""The SQLite engine's settings: the live database file.

Pydantic only (imports nothing from backupflow), so :mod:`backupflow.config` composes
:class:`~backupflow.config.DatabaseSettings` from it without importing the engine.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

__all__ = ["SqliteFields"]


class SqliteFields(BaseModel):
    """The SQLite engine's fields of the database settings (``BACKUPFLOW_DATABASE__SQLITE_*``)."""

    sqlite_path: Path = Field(
        default=Path("/var/lib/workload-optimization/gantt_workload.db"),
        description="SQLite engine: the live database file.",
    )
