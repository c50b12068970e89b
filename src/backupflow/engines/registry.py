"""Where an engine is chosen: :func:`open_engine` builds the one the settings name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backupflow.config import Settings
from backupflow.engines.base import Engine
from backupflow.engines.sqlite import SqliteEngine
from backupflow.errors import ConfigError
from backupflow.models import TIER_NAMES

if TYPE_CHECKING:
    from backupflow.storage import Tier

__all__ = ["database_password", "open_engine"]


def open_engine(settings: Settings) -> Engine:
    """The engine the settings name."""
    db = settings.database
    if db.engine == "sqlite":
        return SqliteEngine(db.sqlite_path, chunk_bytes=settings.pipeline.chunk_bytes)
    if db.engine == "sqlserver":
        from backupflow.engines.mssql import SqlServerEngine
        from backupflow.engines.mssql.connection import SqlSession, odbc_connect

        return SqlServerEngine(
            db,
            db.name,  # checked again by the engine: flows copy settings with a new name
            SqlSession(lambda: odbc_connect(db, database_password(settings))),
            chunk_bytes=settings.pipeline.chunk_bytes,
        )
    if db.engine == "postgres":
        from backupflow.engines.postgres.engine import PostgresEngine
        from backupflow.storage import open_tiers

        names = [n for n in TIER_NAMES if getattr(settings.repository, n).enabled]

        def first_tier() -> Tier:
            tiers = open_tiers(settings)
            if not tiers:
                raise ConfigError("no storage tier is enabled; enable the primary tier.")
            return tiers[0]

        return PostgresEngine(
            db,
            lambda: database_password(settings),
            first_tier=first_tier,
            tier_names=names,
            tiers=lambda: open_tiers(settings),
            chunk_bytes=settings.pipeline.chunk_bytes,
        )
    raise ConfigError(f"database engine {db.engine!r} is not available.")


def database_password(settings: Settings) -> str:
    """The password: a Prefect Secret block when one is named, else the settings (env-file or
    environment).  Never a flow parameter or a command-line argument."""
    block = settings.database.password_block
    if block:
        from backupflow.prefect_adapter import load_secret

        return load_secret(block, "BACKUPFLOW_DATABASE__PASSWORD_BLOCK")
    return settings.database.password.get_secret_value()
