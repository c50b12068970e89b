"""The SQL Server engine's settings: the ODBC connection, the backup folder as the server and
this worker see it, restore folders, and BACKUP/RESTORE options.

Pydantic only (imports nothing from backupflow), so :mod:`backupflow.config` composes
:class:`~backupflow.config.DatabaseSettings` from it without importing the engine.
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator

__all__ = ["SqlServerFields"]


class SqlServerFields(BaseModel):
    """The SQL Server engine's fields of the database settings (``BACKUPFLOW_DATABASE__*``)."""

    odbc_driver: str = Field(
        default="ODBC Driver 18 for SQL Server",
        description="SQL Server: the ODBC driver (or FreeTDS's).",
    )
    encrypt: bool = Field(default=True, description="SQL Server: encrypt the connection.")
    trust_server_certificate: bool = Field(
        default=False, description="SQL Server: accept a self-signed server certificate."
    )
    password_block: str | None = Field(
        default=None,
        description="SQL Server: name of a Prefect Secret block holding the password "
        "(else DB_PASSWORD / BACKUPFLOW_DATABASE__PASSWORD).",
    )
    server_backup_dir: str = Field(
        default="/var/opt/mssql/backup",
        description="SQL Server: folder, as the server sees it, where BACKUP writes files.",
    )
    worker_backup_dir: Path = Field(
        default=Path("/var/opt/mssql/backup"),
        description="SQL Server: the same folder as this worker sees it (same host or a "
        "shared mount).",
    )
    server_timezone: str = Field(
        default="UTC", description="SQL Server: the server's timezone (STOPAT is local time)."
    )
    server_data_dir: str | None = Field(
        default=None,
        max_length=260,
        description="SQL Server: folder, as the server sees it, for the data files of a "
        "database restored under a new name (MOVE); default: the server's own default data "
        "folder. Must be absolute, with no share; never taken from a backup's file list.",
    )
    server_log_dir: str | None = Field(
        default=None,
        max_length=260,
        description="SQL Server: the same for log files; default: the server's default log folder.",
    )
    native_compression: bool = Field(
        default=True, description="SQL Server: BACKUP ... WITH COMPRESSION (edition permitting)."
    )
    verify_backup: bool = Field(
        default=True, description="SQL Server: RESTORE VERIFYONLY ... WITH CHECKSUM afterwards."
    )
    tail_log_before_replace: bool = Field(
        default=True,
        description="SQL Server: before restoring over a database with --replace, back up "
        "the tail of its log (COPY_ONLY, to <server_backup_dir>/<name>_tail_<stamp>.trn; "
        "not in the SIMPLE recovery model); the database itself stays as it is, and is kept "
        "aside offline when the restored copy is put in place.",
    )

    @field_validator("worker_backup_dir")
    @classmethod
    def _absolute_worker_backup_dir(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"{value} must be an absolute path")
        return value

    @field_validator("server_timezone")
    @classmethod
    def _server_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value
