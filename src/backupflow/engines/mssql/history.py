"""What SQL Server recorded about a backup it just wrote: msdb first, the file's header
when msdb cannot answer.

``backupset.type`` is decided by the statement that ran (D: BACKUP DATABASE, I: WITH
DIFFERENTIAL, L: BACKUP LOG); the engine compares it with the kind it asked for, so a row
that belongs to another backup to the same file is never catalogued under the wrong kind.
https://learn.microsoft.com/en-us/sql/relational-databases/system-tables/backupset-transact-sql
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from backupflow.engines.mssql import tsql
from backupflow.engines.mssql.connection import SqlSession
from backupflow.errors import EngineError

__all__ = ["backup_position"]

_HEADER_TYPES = {1: "D", 5: "I", 2: "L"}


def backup_position(
    session: SqlSession, database: str, server_path: str, local: Callable[[Any], datetime]
) -> dict[str, Any]:
    """The backup's LSNs from msdb; RESTORE HEADERONLY when msdb cannot answer."""
    try:
        rows = session.run(tsql.msdb_query(), database, server_path).rows
    except EngineError:
        rows = []
    if rows:
        row = rows[0]
        return {
            "first_lsn": int(row[0]),
            "last_lsn": int(row[1]),
            "checkpoint_lsn": int(row[2]),
            "database_backup_lsn": int(row[3] or 0),
            "differential_base_lsn": int(row[4] or 0),
            "type": str(row[5]),
            "is_copy_only": bool(row[6]),
            "backup_start": local(row[7]).isoformat(),
            "backup_finish": row[8],
            "recovery_fork": str(row[9]).lower(),
            "database_guid": str(row[10]).lower(),
            "source": "msdb",
        }
    header = session.run(tsql.headeronly(server_path)).records()
    if not header:
        raise EngineError(f"neither msdb nor RESTORE HEADERONLY describe {server_path}.")
    h = header[0]
    return {
        "first_lsn": int(h["FirstLSN"]),
        "last_lsn": int(h["LastLSN"]),
        "checkpoint_lsn": int(h["CheckpointLSN"]),
        "database_backup_lsn": int(h.get("DatabaseBackupLSN") or 0),
        "differential_base_lsn": int(h.get("DifferentialBaseLSN") or 0),
        "type": _HEADER_TYPES.get(int(h["BackupType"]), "?"),
        "is_copy_only": bool(h.get("IsCopyOnly")),
        "backup_start": local(h["BackupStartDate"]).isoformat(),
        "backup_finish": h["BackupFinishDate"],
        "recovery_fork": str(h.get("RecoveryForkID", "")).lower(),
        "database_guid": str(h.get("BindingID", "")).lower(),
        "source": "headeronly",
    }
