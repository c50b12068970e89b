"""T-SQL text for backups and restores: quoting, and every statement the engine runs.

Pure functions: a dry run prints exactly what a real run executes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath, PureWindowsPath
from zoneinfo import ZoneInfo

__all__ = [
    "DbFile",
    "backup_statement",
    "checkdb",
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


@dataclass(frozen=True)
class DbFile:
    """A database file listed by RESTORE FILELISTONLY."""

    logical: str
    physical: str
    type: str  # D data, L log

    def moved_for(self, target: str) -> str:
        """The same folder, a file name of the target database's own."""
        windows = "\\" in self.physical
        pure = PureWindowsPath(self.physical) if windows else PurePosixPath(self.physical)
        suffix = pure.suffix or (".ldf" if self.type == "L" else ".mdf")
        return str(pure.with_name(f"{target}_{self.logical}{suffix}"))


def restore_statement(
    target: str,
    path: str,
    kind: str,
    *,
    files: Sequence[DbFile] = (),
    move: bool = False,
    replace: bool = False,
    stop_at: datetime | None = None,
    server_timezone: str = "UTC",
) -> str:
    """RESTORE DATABASE/LOG ... WITH NORECOVERY (MOVE, REPLACE and STOPAT as needed)."""
    options = ["FILE = 1", "NORECOVERY", "CHECKSUM"]
    if move:
        options += [f"MOVE {literal(f.logical)} TO {literal(f.moved_for(target))}" for f in files]
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
