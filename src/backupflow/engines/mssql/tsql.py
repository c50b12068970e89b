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
    "drop_database",
    "filelistonly",
    "headeronly",
    "literal",
    "msdb_query",
    "name",
    "recover",
    "rename_database",
    "restore_statement",
    "set_option",
    "state_query",
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
    """The tail of the log of a database about to be replaced, taken ``COPY_ONLY`` before
    the restore is built.

    Not ``NORECOVERY``: that would leave the database RESTORING (unusable) for the whole
    restore, and still so if the restored copy then fails its check; it stays online, and
    is later kept aside as it was.  Not a plain log backup: that would move the log archive
    point, and backupflow's next log backup could no longer follow its own chain.  "A
    copy-only log backup preserves the existing log archive point and, therefore, does not
    affect the sequencing of regular log backups."  (https://learn.microsoft.com/en-us/sql/relational-databases/backup-restore/copy-only-backups-sql-server)
    Not ``NO_TRUNCATE`` (COPY_ONLY plus CONTINUE_AFTER_ERROR, for a damaged database, "might
    have incomplete metadata"): the database is ONLINE here, and a tail that fails stops the
    restore before anything is built instead of producing a doubtful file
    (https://learn.microsoft.com/en-us/sql/t-sql/statements/backup-transact-sql).
    """
    return (
        f"BACKUP LOG {name(database)} TO DISK = {literal(path)} "
        "WITH COPY_ONLY, CHECKSUM, INIT, FORMAT;"
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
    """Every consistency error is raised at severity 16 (so the driver raises), none is cut
    short (``ALL_ERRORMSGS``), and a clean database prints nothing (``NO_INFOMSGS``).
    https://learn.microsoft.com/en-us/sql/t-sql/database-console-commands/dbcc-checkdb-transact-sql
    """
    return f"DBCC CHECKDB ({name(target)}) WITH NO_INFOMSGS, ALL_ERRORMSGS;"


def state_query() -> str:
    """A database's state and recovery model (no row: it does not exist)."""
    return "SELECT state_desc, recovery_model_desc FROM sys.databases WHERE name = ?;"


def set_option(database: str, option: str) -> str:
    """``ALTER DATABASE ... SET`` one of SINGLE_USER, MULTI_USER, OFFLINE, ONLINE; the first
    and OFFLINE roll back other sessions' transactions instead of waiting for them."""
    assert option in ("SINGLE_USER", "MULTI_USER", "OFFLINE", "ONLINE")
    rollback = " WITH ROLLBACK IMMEDIATE" if option in ("SINGLE_USER", "OFFLINE") else ""
    return f"ALTER DATABASE {name(database)} SET {option}{rollback};"


def rename_database(old: str, new: str) -> str:
    """https://learn.microsoft.com/en-us/sql/relational-databases/databases/rename-a-database"""
    return f"ALTER DATABASE {name(old)} MODIFY NAME = {name(new)};"


def drop_database(database: str) -> str:
    return f"DROP DATABASE {name(database)};"
