"""The SQLite engine's :class:`~backupflow.engines.spec.EngineSpec`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from backupflow.engines.spec import EngineSpec
from backupflow.engines.sqlite_settings import SqliteFields

if TYPE_CHECKING:
    from backupflow.config import Settings
    from backupflow.engines.base import Engine

__all__ = ["SPEC"]


def _open(settings: Settings) -> Engine:
    from backupflow.engines.sqlite import SqliteEngine

    return SqliteEngine(settings.database.sqlite_path, chunk_bytes=settings.pipeline.chunk_bytes)


def _restore_root(settings: Settings) -> Path:
    return settings.database.sqlite_path.parent


SPEC = EngineSpec(name="sqlite", fields=SqliteFields, open=_open, restore_root=_restore_root)
