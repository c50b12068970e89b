"""T-SQL text for backups and restores: quoting, and every statement the engine runs.

Pure functions: a dry run prints exactly what a real run executes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

__all__ = [
    "DEFAULT_PATHS_QUERY",
    "backup_statement",
    "checkdb",
    "default_paths_query",
    "filelistonly",
    "headeronly",
    "literal",
    "msdb_query",
    "name",
    "recover",
    "restore_statement",
    "tail_log_statement",
    "verifyonly",
]


def name(identifier: str) -> str:
    """A bracket-quoted identifier (``QUOTENAME``)."""
    return "[" + identifier.replace("]", "]]") + "]"


def literal(text: str) -> str:
    """A Unicode string literal."""
    return "N'" + text.replace("'", "''") + "'"


def backup_statement(
    database: str, path: str, kind: str, *, compression: bool, copy_only: bool = False
) -> str:
    """BACKUP DATABASE / LOG with CHECKSUM and INIT (and COMPRESSION where supported)."""
    options = ["CHECKSUM", "INIT", "FORMAT"]
    if compression:
        options.append("COMPRESSION")
    if copy_only:
        options.append("COPY_ONLY")
    if kind == "log":
        return f"BACKUP LOG {name(database)} TO DISK = {literal(path)} WITH {', '.join(options)};"
    if kind == "diff":
        options.insert(0, "DIFFERENTIAL")
    return f"BACKUP DATABASE {name(database)} TO DISK = {literal(path)} WITH {', '.join(options)};"


def tail_log_statement(database: str, path: str) -> str:
    """A tail-log backup that leaves the database restoring, so nothing committed is lost."""
    return (
        f"BACKUP LOG {name(database)} TO DISK = {literal(path)} "
        "WITH NORECOVERY, CHECKSUM, INIT, FORMAT;"
    )


def verifyonly(path: str) -> str:
    return f"RESTORE VERIFYONLY FROM DISK = {literal(path)} WITH CHECKSUM;"


def headeronly(path: str) -> str:
    return f"RESTORE HEADERONLY FROM DISK = {literal(path)};"


def filelistonly(path: str) -> str:
    return f"RESTORE FILELISTONLY FROM DISK = {literal(path)};"


#: The backup just written, as msdb recorded it (the newest row for that file).
MSDB_QUERY = """SELECT TOP (1) bs.first_lsn, bs.last_lsn, bs.checkpoint_lsn, bs.database_backup_lsn,
       bs.differential_base_lsn, bs.type, bs.is_copy_only, bs.backup_start_date,
       bs.backup_finish_date, CONVERT(nvarchar(36), bs.last_recovery_fork_guid),
       CONVERT(nvarchar(36), bs.database_guid), bs.compressed_backup_size, bs.backup_size
FROM msdb.dbo.backupset AS bs
JOIN msdb.dbo.backupmediafamily AS mf ON mf.media_set_id = bs.media_set_id
WHERE bs.database_name = ? AND mf.physical_device_name = ?
ORDER BY bs.backup_set_id DESC;"""


def msdb_query() -> str:
    return MSDB_QUERY


#: The server's default folders for new data and log files (SQL Server 2012 and later; NULL
#: before).  Aliased, because an expression column has no name.
DEFAULT_PATHS_QUERY = (
    "SELECT CONVERT(nvarchar(260), SERVERPROPERTY('InstanceDefaultDataPath')) AS data_path, "
    "CONVERT(nvarchar(260), SERVERPROPERTY('InstanceDefaultLogPath')) AS log_path;"
)


def default_paths_query() -> str:
    return DEFAULT_PATHS_QUERY


def restore_statement(
    target: str,
    path: str,
    kind: str,
    *,
    moves: Sequence[tuple[str, str]] = (),
    replace: bool = False,
    stop_at: datetime | None = None,
    server_timezone: str = "UTC",
) -> str:
    """RESTORE DATABASE/LOG ... WITH NORECOVERY (MOVE, REPLACE and STOPAT as needed).

    ``moves`` are (logical name, new physical path) pairs, both quoted as literals: the
    paths are built by :func:`backupflow.engines.mssql.paths.move_targets`, never taken from
    a manifest.
    """
    options = ["FILE = 1", "NORECOVERY", "CHECKSUM"]
    options += [f"MOVE {literal(logical)} TO {literal(physical)}" for logical, physical in moves]
    if replace:
        options.append("REPLACE")
    if stop_at is not None:
        local = stop_at.astimezone(ZoneInfo(server_timezone)).replace(tzinfo=None)
        options.append(f"STOPAT = {literal(local.isoformat(timespec='milliseconds'))}")
    verb = "LOG" if kind == "log" else "DATABASE"
    return f"RESTORE {verb} {name(target)} FROM DISK = {literal(path)} WITH {', '.join(options)};"


def recover(target: str) -> str:
    return f"RESTORE DATABASE {name(target)} WITH RECOVERY;"


def checkdb(target: str) -> str:
    return f"DBCC CHECKDB({name(target)}) WITH NO_INFOMSGS;"
