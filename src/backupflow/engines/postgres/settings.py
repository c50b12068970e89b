"""The PostgreSQL engine's settings: the cluster's programs, data directory and OS user, the
superuser a restored copy is checked as, the wal-push command, and how long to wait.

Pydantic only (imports nothing from backupflow), so :mod:`backupflow.config` composes
:class:`~backupflow.config.DatabaseSettings` from it without importing the engine.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

__all__ = ["PostgresFields"]


class PostgresFields(BaseModel):
    """The PostgreSQL engine's fields of the database settings (``BACKUPFLOW_DATABASE__PG_*``,
    ``..._SECONDS``)."""

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

    @field_validator("pg_data_dir")
    @classmethod
    def _absolute_pg_data_dir(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"{value} must be an absolute path")
        return value

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
