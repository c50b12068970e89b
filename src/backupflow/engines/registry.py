"""The one registry of engines: each engine's :class:`~backupflow.engines.spec.EngineSpec`
(settings, factory, restore root, object roles, verify and retention hooks), and
:func:`open_engine`, where one is chosen.

A new engine is one package with a ``spec.py`` (and a ``settings.py`` that
:class:`~backupflow.config.DatabaseSettings` composes), listed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backupflow.engines.mssql.spec import SPEC as SQLSERVER
from backupflow.engines.postgres.spec import SPEC as POSTGRES
from backupflow.engines.spec import EngineSpec
from backupflow.engines.sqlite_spec import SPEC as SQLITE
from backupflow.errors import ConfigError

if TYPE_CHECKING:
    from backupflow.config import Settings
    from backupflow.engines.base import Engine

__all__ = ["ENGINES", "database_password", "engine_spec", "open_engine"]

#: Every engine by name, in the order their hooks run.
ENGINES: dict[str, EngineSpec] = {spec.name: spec for spec in (SQLITE, SQLSERVER, POSTGRES)}


def engine_spec(name: str) -> EngineSpec:
    """The spec of the engine ``name``; :class:`ConfigError` for an unknown one."""
    spec = ENGINES.get(name)
    if spec is None:
        raise ConfigError(f"database engine {name!r} is not available.")
    return spec


def open_engine(settings: Settings) -> Engine:
    """The engine the settings name."""
    return engine_spec(settings.database.engine).open(settings)


def database_password(settings: Settings) -> str:
    """The password: a Prefect Secret block when one is named, else the settings (env-file or
    environment).  Never a flow parameter or a command-line argument."""
    block = settings.database.password_block
    if block:
        from backupflow.prefect_adapter import load_secret

        return load_secret(block, "BACKUPFLOW_DATABASE__PASSWORD_BLOCK")
    return settings.database.password.get_secret_value()
