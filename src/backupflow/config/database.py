"""The database that is backed up (the seed's DB_* keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from backupflow.config.checks import check_timezone
from backupflow.names import DATABASE_NAME_PATTERN, is_database_name

__all__ = ["DatabaseSettings"]


class DatabaseSettings(BaseModel):
    """The database that is backed up (the seed's DB_* keys)."""

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
    sqlite_path: Path = Field(
        default=Path("/var/lib/workload-optimization/gantt_workload.db"),
        description="SQLite engine: the live database file.",
    )
    port: int = Field(
        default=1433,
        ge=1,
        le=65535,
        description="Server TCP port (SQL Server: 1433; PostgreSQL: 5432 unless set).",
    )
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
    pg_bin_dir: Path | None = Field(
        default=None,
        description="PostgreSQL: folder of the server's programs (pg_basebackup, pg_ctl, "
        "pg_verifybackup, pg_amcheck); default: the one `pg_config --bindir` names, else "
        "/usr/lib/postgresql/<newest>/bin.",
    )
    pg_data_dir: Path = Field(
        default=Path("/var/lib/postgresql/15/main"),
        description="PostgreSQL: the live cluster's data folder (what --replace replaces).",
    )
    pg_os_user: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        description="PostgreSQL: the OS user that owns the cluster; when the worker runs as "
        "root, the server's programs run as this user (default: postgres).",
    )
    pg_superuser: str = Field(
        default="postgres",
        max_length=63,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        description="PostgreSQL: the superuser a restored copy is checked as (pg_amcheck, "
        "over the copy's private socket; never a network login).",
    )
    pg_backupflow_command: str = Field(
        default="backupflow",
        max_length=512,
        pattern=r"^[^\n\r%'\"]+$",
        description="PostgreSQL: the backupflow command as the cluster's own processes run it "
        "(a restore's restore_command is `<this> wal-fetch ...`; archive_command should be "
        "`<this> wal-push %p`); it must be runnable by the cluster's OS user.",
    )
    archive_wait_seconds: int = Field(
        default=120,
        ge=1,
        le=3600,
        description="PostgreSQL: how long the log job waits for the server to archive the "
        "segment it just switched (archive_command = backupflow wal-push).",
    )
    archiver_idle_seconds: int = Field(
        default=600,
        ge=1,
        le=86400,
        description="PostgreSQL: the resident WAL archiver exits after this long with no "
        "segment to push or copy (the next wal-push starts it again).",
    )
    recovery_wait_seconds: int = Field(
        default=4 * 3600,
        ge=10,
        le=7 * 86400,
        description="PostgreSQL: how long a restore waits for the copy to replay WAL to its "
        "target before it gives up (the copy is discarded; nothing live is touched).",
    )
    missing_full: Literal["promote", "fail"] = Field(
        default="promote",
        description="When a differential or log backup finds no full backup: take a full "
        "backup instead (promote) or fail.",
    )

    @field_validator("worker_backup_dir", "pg_data_dir")
    @classmethod
    def _absolute_dirs(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"{value} must be an absolute path")
        return value

    @model_validator(mode="after")
    def _postgres_port(self) -> DatabaseSettings:
        if self.engine == "postgres" and "port" not in self.model_fields_set:
            self.port = 5432
        return self

    @field_validator("pg_backupflow_command")
    @classmethod
    def _command_splits(cls, value: str) -> str:
        import shlex

        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"the command cannot be split into words ({exc})") from None
        if not parts:
            raise ValueError("the command is empty")
        return value

    @field_validator("server_timezone")
    @classmethod
    def _server_timezone(cls, value: str) -> str:
        return check_timezone(value)

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
