"""The SQL Server engine: native BACKUP/RESTORE through pyodbc, LSN-chained, CHECKDB.

SQL Server writes and reads backup files on its own host: ``server_backup_dir`` is that
folder as the server sees it, ``worker_backup_dir`` the same folder as the worker sees it
(same host or a shared mount).  The worker streams those files through the pipeline to the
tiers, and back for a restore.

Every name is checked where it enters (see :mod:`backupflow.engines.mssql.paths`): the
database name in the constructor, a restore target in :meth:`SqlServerEngine.check_target`,
and every manifest before a restore uses it.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any
from zoneinfo import ZoneInfo

from backupflow.config import DatabaseSettings
from backupflow.engines.base import (
    BackupSource,
    Capabilities,
    ChainCatalog,
    Dump,
    DumpFile,
    Engine,
    Installed,
    Restored,
)
from backupflow.engines.mssql import paths, tsql
from backupflow.engines.mssql.chain import select_chain
from backupflow.engines.mssql.connection import SqlSession
from backupflow.errors import (
    CatalogError,
    ConfigError,
    EngineError,
    IntegrityError,
    NoBackupError,
    RestoreTargetError,
    SourceNotFoundError,
)
from backupflow.models import BackupKind, Manifest, utc
from backupflow.names import check_database_name, is_database_name
from backupflow.planning import PlanStep, RestorePlan

__all__ = ["SqlServerEngine"]

_TYPES = {"D": BackupKind.FULL, "I": BackupKind.DIFF, "L": BackupKind.LOG}
_HEADER_TYPES = {1: "D", 5: "I", 2: "L"}
_EXT = {BackupKind.FULL: ".bak", BackupKind.DIFF: ".bak", BackupKind.LOG: ".trn"}
_SYSTEM_DATABASES = {"master", "model", "msdb", "tempdb", "mssqlsystemresource", "distribution"}
_SETTING = {
    "data": "server_data_dir (BACKUPFLOW_DATABASE__SERVER_DATA_DIR)",
    "log": "server_log_dir (BACKUPFLOW_DATABASE__SERVER_LOG_DIR)",
}


def _same_name(a: str, b: str) -> bool:
    """Database names compared as a default (case-insensitive) collation does."""
    return a.casefold() == b.casefold()


class SqlServerEngine(Engine):
    """Backs up and restores one SQL Server database."""

    name = "sqlserver"
    capabilities = Capabilities(
        differential=True, log=True, point_in_time="exact", chain="positions", target="server"
    )

    def __init__(
        self,
        settings: DatabaseSettings,
        database: str,
        session: SqlSession,
        *,
        chunk_bytes: int = 1 << 20,
        where: str = "BACKUPFLOW_DATABASE__NAME, a databases entry or --database",
    ) -> None:
        self.settings = settings
        self.database = check_database_name(database, where)
        self.session = session
        self.chunk_bytes = chunk_bytes
        self._backup_dir = self._folder(
            settings.server_backup_dir,
            "server_backup_dir (BACKUPFLOW_DATABASE__SERVER_BACKUP_DIR)",
            allow_share=True,
        )
        self._configured = {
            "data": self._folder(settings.server_data_dir, _SETTING["data"]),
            "log": self._folder(settings.server_log_dir, _SETTING["log"]),
        }
        self._defaults: dict[str, PurePath] | None = None
        self.last_script: list[str] = []

    # -- paths -------------------------------------------------------------------------

    @staticmethod
    def _folder(value: str | None, where: str, *, allow_share: bool = False) -> PurePath | None:
        if value is None:
            return None
        try:
            return paths.check_server_folder(value, where, allow_share=allow_share)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _server_path(self, file_name: str) -> str:
        assert self._backup_dir is not None
        return paths.server_file(self._backup_dir, file_name)

    def _worker_path(self, file_name: str) -> Path:
        return paths.worker_file(self.settings.worker_backup_dir, file_name)

    def _move_folders(self) -> tuple[PurePath, PurePath]:
        """Where files of a database restored under a new name go: the configured folders,
        else the server's default data and log folders (asked once)."""
        found = dict(self._configured)
        if found["data"] is None or found["log"] is None:
            if self._defaults is None:
                self._defaults = self._server_defaults()
            for role in ("data", "log"):
                found[role] = found[role] or self._defaults[role]
        data, log = found["data"], found["log"]
        assert data is not None and log is not None
        return data, log

    def _server_defaults(self) -> dict[str, PurePath]:
        records = self.session.run(tsql.default_paths_query()).records()
        row = records[0] if records else {}
        defaults = {}
        for role, column in (("data", "data_path"), ("log", "log_path")):
            value = row.get(column)
            if not value:
                raise EngineError(
                    f"SQL Server does not report its default {role} folder; set "
                    f"{_SETTING[role]} to the folder for restored {role} files."
                )
            try:
                defaults[role] = paths.check_server_folder(
                    value, f"default {role} folder SQL Server reports"
                )
            except ValueError as exc:
                raise EngineError(f"{str(exc)[:-1]}; set {_SETTING[role]} instead.") from None
        return defaults

    def _target_name(self, target: Path) -> str:
        """A restore target is a database name, never a path; system databases are refused."""
        text = str(target)
        try:
            name = check_database_name(text, "the restore target (into)")
        except ConfigError as exc:
            raise RestoreTargetError(str(exc)) from None
        if name.casefold() in _SYSTEM_DATABASES:
            raise RestoreTargetError(
                f"{name} is a system database; restore into a user database name with --into."
            )
        return name

    def _checked(self, manifest: Manifest) -> list[paths.ManifestFile]:
        """A manifest's names, checked before anything uses them."""
        if not is_database_name(manifest.database):
            raise CatalogError(
                f"backup {manifest.id} names a database that breaks the name rule; its "
                "manifest is damaged or was altered, so restore from another tier."
            )
        if manifest.database != self.database:
            raise CatalogError(
                f"backup {manifest.id} belongs to another database than {self.database}; its "
                "manifest was moved or altered, so restore from another tier."
            )
        if manifest.engine != self.name:
            raise CatalogError(
                f"backup {manifest.id} is not a SQL Server backup; restore it with its own engine."
            )
        server_name = manifest.position.get("server_file")
        if server_name is not None:
            try:
                paths.check_file_name(server_name)
            except EngineError:
                raise CatalogError(
                    f"backup {manifest.id} records a server file name that is not a plain file "
                    "name; its manifest is damaged or was altered, so restore from another tier."
                ) from None
        return paths.manifest_files(manifest.position.get("files"), manifest.id)

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
        file_name = paths.check_file_name(
            f"{self.database}_{kind.value}_{stamp}_{secrets.token_hex(3)}{_EXT[kind]}"
        )
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
            {
                "logical": f.get("LogicalName"),
                "physical": f.get("PhysicalName"),
                "type": f.get("Type"),
            }
            for f in files
        ]
        try:  # never write a manifest a restore would refuse to read
            paths.manifest_files(position["files"], "being taken")
        except CatalogError:
            raise EngineError(
                f"SQL Server lists a file of {self.database} that a restore could not move "
                "(an unknown type or a logical name with control characters); rename it with "
                "ALTER DATABASE ... MODIFY FILE, then back up again."
            ) from None
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
        """Online user databases, as the server spells them: the caller applies the name
        rule (:func:`backupflow.engines.databases_to_back_up`)."""
        rows = self.session.run(
            "SELECT name FROM sys.databases WHERE database_id > 4 AND state_desc = 'ONLINE' "
            "ORDER BY name;"
        ).rows
        return [row[0] if isinstance(row[0], str) else "" for row in rows]

    def smoke(self, target: Path) -> dict[str, int]:
        name = tsql.name(self._target_name(target))
        rows = self.session.run(
            f"SELECT t.name, SUM(p.rows) FROM {name}.sys.tables AS t "
            f"JOIN {name}.sys.partitions AS p ON p.object_id = t.object_id "
            "AND p.index_id IN (0, 1) GROUP BY t.name ORDER BY t.name;"
        ).rows
        return {str(r[0]): int(r[1]) for r in rows}

    def drop(self, target: Path) -> None:
        name = self._target_name(target)
        if _same_name(name, self.database):
            raise RestoreTargetError(f"refusing to drop the live database {self.database}.")
        self.session.run(f"DROP DATABASE {tsql.name(name)};")

    def cleanup(self, dump: Dump) -> None:
        """Delete the backup files this run made, only directly inside the worker's folder."""
        for item in dump.files:
            paths.remove_inside(self.settings.worker_backup_dir, item.path)

    # -- restore -----------------------------------------------------------------------

    def script(
        self, chain: Sequence[Manifest], target: str, *, replace: bool, until: datetime | None
    ) -> list[str]:
        """The exact T-SQL of a restore of ``chain`` into ``target`` (printed by a dry run).

        Under its own name the database keeps its files where the server has them; under a
        new name its files go to the configured or the server's default folders, named
        ``<target>_<logical name, safely spelt>`` with a checked suffix.
        """
        target = self._target_name(Path(target))
        files = [self._checked(manifest) for manifest in chain]
        live = _same_name(target, self.database)
        statements = []
        if chain and replace and live and self.settings.tail_log_before_replace:
            tail = self._server_path(f"{self.database}_tail_{chain[-1].id}.trn")
            statements.append(tsql.tail_log_statement(self.database, tail))
        moves: list[tuple[str, str]] = []
        if chain and not live:
            if not files[0]:
                raise CatalogError(
                    f"backup {chain[0].id} has no file list, so it cannot be restored under a "
                    "new name; restore it under its own name or from another backup."
                )
            data, log = self._move_folders()
            moves = paths.move_targets(files[0], target, data, log)
        for index, manifest in enumerate(chain):
            statements.append(
                tsql.restore_statement(
                    target,
                    self._server_path(self._restore_name(manifest)),
                    manifest.kind.value,
                    moves=moves if index == 0 else (),
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
        return self.script(chain, self._target_name(target), replace=replace, until=until)

    @staticmethod
    def _restore_name(manifest: Manifest) -> str:
        return f"restore_{manifest.id}{_EXT[manifest.kind]}"

    def plan_restore(
        self, catalog: ChainCatalog, database: str, target: datetime | None, now: datetime
    ) -> RestorePlan[Manifest]:
        """Choose the chain by LSN from every manifest (never by timestamp)."""
        manifests = []
        for entry in catalog.sorted_entries():
            try:
                manifests.append(catalog.manifest(entry.id))
            except CatalogError as exc:
                catalog.problems.append(f"{exc}; planning without it")
        if not manifests:
            raise NoBackupError(f"there are no backups of {database} in these tiers.")
        chain, reached = select_chain(manifests, database, target)
        steps = tuple(
            PlanStep(
                m, f"{m.kind.value}: LSN {m.position['first_lsn']} to {m.position['last_lsn']}"
            )
            for m in chain
        )
        notes: tuple[str, ...] = ()
        if target is not None and reached < utc(target):
            notes = (
                f"the backups reach {reached:%Y-%m-%dT%H:%M:%SZ}, earlier than the requested "
                f"{utc(target):%Y-%m-%dT%H:%M:%SZ}",
            )
        return RestorePlan(database, target, steps, reached, utc(now), notes)

    def restore(
        self, chain: Sequence[BackupSource], scratch: Path, *, until: datetime | None = None
    ) -> Restored:
        """Bring the chain's files to the server's backup folder, verified on the way."""
        for source in chain:
            self._checked(source.manifest)
        manifests = tuple(source.manifest for source in chain)
        folder = self.settings.worker_backup_dir
        for source in chain:
            path = self._worker_path(self._restore_name(source.manifest))
            with source.open_object("data") as src, paths.create_private(folder, path) as out:
                shutil.copyfileobj(src, out, self.chunk_bytes)
        return Restored(scratch, manifests, detail=until)

    def install(self, restored: Restored, target: Path, *, replace: bool, stamp: str) -> Installed:
        """Run the restore script into the target database, then DBCC CHECKDB."""
        del stamp
        chain = restored.manifests
        name = self._target_name(target)
        self.last_script = self.script(chain, name, replace=replace, until=restored.detail)
        try:
            for statement in self.last_script[:-1]:
                self.session.run(statement)
            check = self.session.run(self.last_script[-1])
            if check.messages or any(check.sets):
                raise IntegrityError(
                    f"DBCC CHECKDB reported problems in {name}: {'; '.join(check.messages[:3])}"
                )
        finally:
            folder = self.settings.worker_backup_dir
            for manifest in chain:
                paths.remove_inside(folder, self._worker_path(self._restore_name(manifest)))
        return Installed(target=target)

    def check_target(self, target: Path, replace: bool) -> None:
        name = self._target_name(target)
        rows = self.session.run("SELECT 1 FROM sys.databases WHERE name = ?;", name).rows
        if rows and not replace:
            raise RestoreTargetError(
                f"database {name} already exists; pass --replace to restore over it "
                "(a tail-log backup is taken first) or choose another name with --into."
            )

    def scratch_path(self, target: Path) -> Path:
        # Never created by this engine (the server restores in place); a name inside the
        # worker's folder so that the generic clean-up can only touch that folder.
        return self._worker_path(f"restore-{self._target_name(target)}.scratch")

    def default_target(self, restore_point: datetime) -> Path:
        stamp = f"{restore_point.astimezone(UTC):%Y%m%d_%H%M%S}"
        name = f"{self.database[:88]}_restored_{stamp}"  # room for a drill's suffix
        return Path(check_database_name(name, "the default restore target"))

    def live_target(self) -> Path:
        return Path(self.database)
