"""The SQL Server engine's :class:`~backupflow.engines.spec.EngineSpec`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from backupflow.engines.mssql.settings import SqlServerFields
from backupflow.engines.spec import EngineSpec

if TYPE_CHECKING:
    from backupflow.config import Settings
    from backupflow.engines.base import Engine
    from backupflow.models import Manifest

__all__ = ["SPEC"]


def _open(settings: Settings) -> Engine:
    from backupflow.engines.mssql.connection import SqlSession, odbc_connect
    from backupflow.engines.mssql.engine import SqlServerEngine
    from backupflow.engines.registry import database_password

    db = settings.database
    return SqlServerEngine(
        db,
        db.name,  # checked again by the engine: flows copy settings with a new name
        SqlSession(lambda: odbc_connect(db, database_password(settings))),
        chunk_bytes=settings.pipeline.chunk_bytes,
    )


def _restore_root(settings: Settings) -> Path:
    # A restore target is a database name on the server; a path given anyway is held to the
    # same folders as with the default (SQLite) engine.
    return settings.database.sqlite_path.parent


def _check_chains(manifests: Sequence[Manifest], series: str) -> list[str]:
    """SQL Server's own rules (LSNs, recovery fork) for the newest chain."""
    from backupflow.engines.mssql.chain import select_chain
    from backupflow.errors import BackupflowError

    try:
        select_chain(sorted(manifests, key=lambda m: m.restore_point), series, None)
    except BackupflowError as exc:
        return [str(exc).rstrip(".")]
    return []


SPEC = EngineSpec(
    name="sqlserver",
    fields=SqlServerFields,
    open=_open,
    restore_root=_restore_root,
    check_chains=_check_chains,
)
