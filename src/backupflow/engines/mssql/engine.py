"""The SQL Server engine: native BACKUP/RESTORE through pyodbc, LSN-chained, CHECKDB.

SQL Server writes and reads backup files on its own host: ``server_backup_dir`` is that
folder as the server sees it, ``worker_backup_dir`` the same folder as the worker sees it
(same host or a shared mount).  The worker streams those files through the pipeline to the
tiers, and back for a restore.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from zoneinfo import ZoneInfo

from backupflow.config import DatabaseSettings
from backupflow.engines.base import BackupSource, Capabilities, Dump, DumpFile, Engine, Installed
from backupflow.engines.mssql import tsql
from backupflow.engines.mssql.connection import SqlSession
from backupflow.errors import EngineError, IntegrityError, RestoreTargetError, SourceNotFoundError
from backupflow.models import BackupKind, Manifest

__all__ = ["SqlServerEngine"]

_TYPES = {"D": BackupKind.FULL, "I": BackupKind.DIFF, "L": BackupKind.LOG}
_HEADER_TYPES = {1: "D", 5: "I", 2: "L"}
_EXT = {BackupKind.FULL: ".bak", BackupKind.DIFF: ".bak", BackupKind.LOG: ".trn"}


class SqlServerEngine(Engine):
    """Backs up and restores one SQL Server database."""

    name = "sqlserver"
    capabilities = Capabilities(differential=True, log=True, point_in_time="exact")

    def __init__(
        self,
        settings: DatabaseSettings,
        database: str,
        session: SqlSession,
        *,
        chunk_bytes: int = 1 << 20,
    ) -> None:
        self.settings = settings
        self.database = database
        self.session = session
        self.chunk_bytes = chunk_bytes
        self._chain: list[Manifest] = []
        self._until: datetime | None = None
        self.last_script: list[str] = []

    # -- paths -------------------------------------------------------------------------

    def _server_path(self, file_name: str) -> str:
        folder = self.settings.server_backup_dir
        pure = PureWindowsPath(folder) if "\\" in folder else PurePosixPath(folder)
        return str(pure / file_name)

    def _worker_path(self, file_name: str) -> Path:
        return self.settings.worker_backup_dir / file_name

    def _local(self, moment: Any) -> datetime:
        if not isinstance(moment, datetime):
            raise EngineError(f"SQL Server returned {moment!r} where a time was expected.")
        local: datetime = moment
        if local.tzinfo is None:
            local = local.replace(tzinfo=ZoneInfo(self.settings.server_timezone))
        return local.astimezone(UTC)

    # -- backup ------------------------------------------------------------------------

    def check_source(self) -> None:
        rows = self.session.run(
            "SELECT state_desc FROM sys.databases WHERE name = ?;", self.database
        ).rows
        if not rows:
            raise SourceNotFoundError(
                f"SQL Server {self.settings.server} has no database {self.database}; check "
                "BACKUPFLOW_DATABASE__NAME (DB_NAME)."
            )
        if str(rows[0][0]) != "ONLINE":
            raise EngineError(f"database {self.database} is {rows[0][0]}, not ONLINE.")

    def dump(self, kind: BackupKind, parent: BackupSource | None, staging: Path) -> Dump:
        del parent  # SQL Server keeps its own chain (LSNs)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        file_name = f"{self.database}_{kind.value}_{stamp}_{secrets.token_hex(3)}{_EXT[kind]}"
        server_path = self._server_path(file_name)
        self.session.run(
            tsql.backup_statement(
                self.database, server_path, kind.value, compression=self.settings.native_compression
            )
        )
        if self.settings.verify_backup:
            self.session.run(tsql.verifyonly(server_path))
        position = self._position(server_path)
        if _TYPES.get(str(position["type"])) is not kind:
            raise EngineError(
                f"SQL Server recorded a {position['type']} backup where a {kind.value} backup "
                "was taken; refusing to catalog it."
            )
        files = self.session.run(tsql.filelistonly(server_path)).records()
        position["files"] = [
            {"logical": f["LogicalName"], "physical": f["PhysicalName"], "type": f["Type"]}
            for f in files
        ]
        position["server_file"] = file_name
        return Dump(
            kind=kind,
            restore_point=self._local(position.pop("backup_finish")),
            files=(DumpFile("data", self._worker_path(file_name), measure=True),),
            position=position,
        )

    def _position(self, server_path: str) -> dict[str, Any]:
        """The backup's LSNs from msdb; RESTORE HEADERONLY when msdb cannot answer."""
        try:
            rows = self.session.run(tsql.msdb_query(), self.database, server_path).rows
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
                "backup_start": self._local(row[7]).isoformat(),
                "backup_finish": row[8],
                "recovery_fork": str(row[9]).lower(),
                "database_guid": str(row[10]).lower(),
                "source": "msdb",
            }
        header = self.session.run(tsql.headeronly(server_path)).records()
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
            "backup_start": self._local(h["BackupStartDate"]).isoformat(),
            "backup_finish": h["BackupFinishDate"],
            "recovery_fork": str(h.get("RecoveryForkID", "")).lower(),
            "database_guid": str(h.get("BindingID", "")).lower(),
            "source": "headeronly",
        }

    def list_databases(self) -> list[str]:
        rows = self.session.run(
            "SELECT name FROM sys.databases WHERE database_id > 4 AND state_desc = 'ONLINE' "
            "ORDER BY name;"
        ).rows
        return [str(row[0]) for row in rows]

    def smoke(self, target: Path) -> dict[str, int]:
        rows = self.session.run(
            f"SELECT t.name, SUM(p.rows) FROM {tsql.name(target.name)}.sys.tables AS t "
            f"JOIN {tsql.name(target.name)}.sys.partitions AS p ON p.object_id = t.object_id "
            "AND p.index_id IN (0, 1) GROUP BY t.name ORDER BY t.name;"
        ).rows
        return {str(r[0]): int(r[1]) for r in rows}

    def drop(self, target: Path) -> None:
        self.session.run(f"DROP DATABASE {tsql.name(target.name)};")

    def cleanup(self, dump: Dump) -> None:
        for item in dump.files:
            item.path.unlink(missing_ok=True)

    # -- restore -----------------------------------------------------------------------

    def script(
        self, chain: Sequence[Manifest], target: str, *, replace: bool, until: datetime | None
    ) -> list[str]:
        """The exact T-SQL of a restore of ``chain`` into ``target`` (printed by a dry run)."""
        move = target != self.database
        statements = []
        if replace and target == self.database and self.settings.tail_log_before_replace:
            tail = self._server_path(f"{target}_tail_{chain[-1].id}.trn")
            statements.append(tsql.tail_log_statement(target, tail))
        for index, manifest in enumerate(chain):
            files = [
                tsql.DbFile(f["logical"], f["physical"], f["type"])
                for f in manifest.position.get("files", [])
            ]
            statements.append(
                tsql.restore_statement(
                    target,
                    self._server_path(self._restore_name(manifest)),
                    manifest.kind.value,
                    files=files,
                    move=move and index == 0,
                    replace=replace and index == 0,
                    stop_at=until if manifest.kind is BackupKind.LOG else None,
                    server_timezone=self.settings.server_timezone,
                )
            )
        statements += [tsql.recover(target), tsql.checkdb(target)]
        return statements

    def restore_script(
        self, chain: Sequence[Manifest], target: Path, *, replace: bool, until: datetime | None
    ) -> list[str]:
        return self.script(chain, target.name, replace=replace, until=until)

    @staticmethod
    def _restore_name(manifest: Manifest) -> str:
        return f"restore_{manifest.id}{_EXT[manifest.kind]}"

    def restore(
        self, chain: Sequence[BackupSource], scratch: Path, *, until: datetime | None = None
    ) -> None:
        """Bring the chain's files to the server's backup folder, verified on the way."""
        del scratch  # the files go where the server can read them
        self._until = until
        self._chain = [source.manifest for source in chain]
        for source in chain:
            path = self._worker_path(self._restore_name(source.manifest))
            with source.open_object("data") as src, open(path, "wb") as out:
                shutil.copyfileobj(src, out, self.chunk_bytes)

    def install(self, scratch: Path, target: Path, *, replace: bool, stamp: str) -> Installed:
        """Run the restore script into the target database, then DBCC CHECKDB."""
        del scratch, stamp
        name = target.name
        self.last_script = self.script(self._chain, name, replace=replace, until=self._until)
        try:
            for statement in self.last_script[:-1]:
                self.session.run(statement)
            check = self.session.run(self.last_script[-1])
            if check.messages or any(check.sets):
                raise IntegrityError(
                    f"DBCC CHECKDB reported problems in {name}: {'; '.join(check.messages[:3])}"
                )
        finally:
            for manifest in self._chain:
                self._worker_path(self._restore_name(manifest)).unlink(missing_ok=True)
        return Installed(target=target)

    def check_target(self, target: Path, replace: bool) -> None:
        rows = self.session.run("SELECT 1 FROM sys.databases WHERE name = ?;", target.name).rows
        if rows and not replace:
            raise RestoreTargetError(
                f"database {target.name} already exists; pass --replace to restore over it "
                "(a tail-log backup is taken first) or choose another name with --into."
            )

    def scratch_path(self, target: Path) -> Path:
        return self.settings.worker_backup_dir / f".restore-{target.name}"

    def default_target(self, restore_point: datetime) -> Path:
        return Path(f"{self.database}_restored_{restore_point.astimezone(UTC):%Y%m%d_%H%M%S}")

    def live_target(self) -> Path:
        return Path(self.database)
