"""Database engines behind one interface; :func:`open_engine` is where one is chosen."""

from __future__ import annotations

from backupflow.config import Settings
from backupflow.engines.base import BackupSource, Capabilities, Dump, DumpFile, Engine, Installed
from backupflow.engines.sqlite import SqliteEngine
from backupflow.errors import ConfigError

__all__ = [
    "BackupSource",
    "Capabilities",
    "Dump",
    "DumpFile",
    "Engine",
    "Installed",
    "SqliteEngine",
    "open_engine",
]


def open_engine(settings: Settings) -> Engine:
    """The engine the settings name."""
    if settings.database.engine == "sqlite":
        return SqliteEngine(
            settings.database.sqlite_path, chunk_bytes=settings.pipeline.chunk_bytes
        )
    raise ConfigError(f"database engine {settings.database.engine!r} is not available.")
