"""The database that is backed up (the seed's DB_* keys).

One flat model, so every variable is ``BACKUPFLOW_DATABASE__<FIELD>``, composed of the fields
every engine shares (which database, its login) and each engine's own, defined in its engine
package (pydantic only): :class:`~backupflow.engines.sqlite_settings.SqliteFields`,
:class:`~backupflow.engines.mssql.settings.SqlServerFields`,
:class:`~backupflow.engines.postgres.settings.PostgresFields`.  The bases are listed last
first: the fields keep the order of the configuration reference.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from backupflow.engines.mssql.settings import SqlServerFields
from backupflow.engines.postgres.settings import PostgresFields
from backupflow.engines.sqlite_settings import SqliteFields
from backupflow.names import DATABASE_NAME_PATTERN, is_database_name

__all__ = ["DatabaseSettings"]


class _DatabaseFields(BaseModel):
    """Which engine, which database or databases, and the login."""

    engine: Literal["sqlite", "sqlserver", "postgres"] = Field(
        default="sqlite",
        description="Database engine: sqlite (embedded, the demo's), sqlserver (the seed's) "
        "or postgres (a PostgreSQL 15+ cluster: base backups and archived WAL).",
    )
    name: str = Field(
        default="gantt_workload",
        min_length=1,
        max_length=128,
        pattern=DATABASE_NAME_PATTERN,
        description="Database name; also its folder in the repository.",
    )
    databases: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="Databases a backup run covers: empty = just `name`; a list of names; or "
        '["*"] = every online user database (SQL Server).',
    )
    server: str = Field(default="localhost", description="Database server.")
    user: str = Field(default="", description="Database login.")
    password: SecretStr = Field(
        default=SecretStr(""),
        description="Database password: from the environment or the env-file only, never a "
        "flag or a flow parameter; never printed.",
    )


class _ServerFields(BaseModel):
    """Where an engine with a server listens."""

    port: int = Field(
        default=1433,
        ge=1,
        le=65535,
        description="Server TCP port (SQL Server: 1433; PostgreSQL: 5432 unless set).",
    )


class DatabaseSettings(
    PostgresFields, SqlServerFields, _ServerFields, SqliteFields, _DatabaseFields
):
    """The database that is backed up (the seed's DB_* keys)."""

    missing_full: Literal["promote", "fail"] = Field(
        default="promote",
        description="When a differential or log backup finds no full backup: take a full "
        "backup instead (promote) or fail.",
    )

    @model_validator(mode="after")
    def _postgres_port(self) -> DatabaseSettings:
        if self.engine == "postgres" and "port" not in self.model_fields_set:
            self.port = 5432
        return self

    @field_validator("databases")
    @classmethod
    def _database_names(cls, value: list[str]) -> list[str]:
        if value == ["*"]:
            return value
        for item in value:
            if not is_database_name(item):
                raise ValueError(
                    "each database must be a name of 1 to 128 letters, digits, '_', '.' or '-' "
                    "starting with a letter, digit or '_' (or the list must be exactly [\"*\"])"
                )
        return value
