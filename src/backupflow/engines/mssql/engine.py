"""The SQL Server engine: native BACKUP/RESTORE through pyodbc, LSN-chained, CHECKDB.

SQL Server writes and reads backup files on its own host: ``server_backup_dir`` is that
folder as the server sees it, ``worker_backup_dir`` the same folder as the worker sees it
(same host or a shared mount).  The worker streams those files through the pipeline to the
tiers, and back for a restore.

Every name is checked where it enters (see :mod:`backupflow.engines.mssql.paths`): the
database name in the constructor, a restore target in :meth:`SqlServerEngine.check_target`,
and every manifest before a restore uses it.

Tail, check, then install: ``before_restore`` backs up the log tail of a database about
to be replaced (``COPY_ONLY``: it leaves that database as it is); ``restore`` builds the
chain under a scratch database name and runs DBCC CHECKDB there; only ``install`` touches
the target, after that check (the old database renamed aside and taken offline, the
scratch renamed in).
The statements and their order are in :mod:`backupflow.engines.mssql.restoring`, what a
failure says in :mod:`backupflow.engines.mssql.failures`, and the whole procedure for
operators in ``docs/sqlserver-restore.md``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
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
from backupflow.engines.mssql import failures, paths, restoring, tsql
from backupflow.engines.mssql.chain import plan_by_lsn
from backupflow.engines.mssql.connection import ServerFailed, SqlSession
from backupflow.engines.mssql.folders import ServerFolders
from backupflow.engines.mssql.history import backup_position
from backupflow.errors import (
    CatalogError,
    ConfigError,
    EngineError,
    RestoreTargetError,
    SourceNotFoundError,
)
from backupflow.models import BackupKind, Manifest
from backupflow.names import check_database_name
from backupflow.planning import RestorePlan
from backupflow.vocabulary import flag

__all__ = ["SqlServerEngine"]

_TYPES = {"D": BackupKind.FULL, "I": BackupKind.DIFF, "L": BackupKind.LOG}
_EXT = {BackupKind.FULL: ".bak", BackupKind.DIFF: ".bak", BackupKind.LOG: ".trn"}
_SYSTEM_DATABASES = {"master", "model", "msdb", "tempdb", "mssqlsystemresource", "distribution"}


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
        self.folders = ServerFolders(settings, session)

    # -- names -----------------------------------------------------------------------

    def _server_path(self, file_name: str) -> str:
        return self.folders.server_path(file_name)

    def _worker_path(self, file_name: str) -> Path:
        return paths.worker_file(self.settings.worker_backup_dir, file_name)

    def _target_name(self, target: Path) -> str:
        """A restore target is a database name, never a path; system databases are refused."""
        text = str(target)
        try:
            name = check_database_name(text, "the restore target (into)")
        except ConfigError as exc:
            raise RestoreTargetError(str(exc)) from None
        if name.casefold() in _SYSTEM_DATABASES:
            raise RestoreTargetError(
                f"{name} is a system database; restore into a user database with {flag('into')}."
            )
        return self.database if _same_name(name, self.database) else name

    def _checked(self, manifest: Manifest) -> list[paths.ManifestFile]:
        """A manifest's names, checked before anything uses them."""
        return paths.check_manifest(manifest, self.database, self.name)

    def _local(self, moment: Any) -> datetime:
        if not isinstance(moment, datetime):
            raise EngineError(f"SQL Server returned {moment!r} where a time was expected.")
        local: datetime = moment
        if local.tzinfo is None:
            local = local.replace(tzinfo=ZoneInfo(self.settings.server_timezone))
        return local.astimezone(UTC)

    # -- backup ------------------------------------------------------------------------

    def check_source(self) -> None:
        state = self._state(self.database)
        if state is None:
            raise SourceNotFoundError(
                f"SQL Server {self.settings.server} has no database {self.database}; check "
                "BACKUPFLOW_DATABASE__NAME (DB_NAME)."
            )
        if state[0] != "ONLINE":
            raise EngineError(f"database {self.database} is {state[0]}, not ONLINE.")

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
        position = backup_position(self.session, self.database, server_path, self._local)
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

    def list_databases(self) -> list[str]:
        """Online user databases, as the server spells them: the caller applies the name
        rule (:func:`backupflow.series.databases`)."""
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

    def plan_restore(
        self, catalog: ChainCatalog, database: str, target: datetime | None, now: datetime
    ) -> RestorePlan[Manifest]:
        """Choose the chain by LSN from every manifest (never by timestamp)."""
        return plan_by_lsn(catalog, database, target, now)

    def _state(self, name: str) -> tuple[str, str] | None:
        """(state_desc, recovery_model_desc) of a database, None if the server has none."""
        rows = self.session.run(tsql.state_query(), name).rows
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def _scratch(self, scratch: Path) -> str:
        """A scratch database name this engine made: never the live database."""
        name = self._target_name(scratch)
        if not restoring.is_scratch_name(name) or _same_name(name, self.database):
            raise EngineError(
                f"{name} is not a scratch name of this engine; refusing to restore into it."
            )
        return name

    def restore_script(
        self, chain: Sequence[Manifest], target: Path, *, replace: bool, until: datetime | None
    ) -> list[str]:
        """The T-SQL a restore of ``chain`` into ``target`` runs (printed by a dry run): the
        tail, the scratch restore and its check, then the swap (see :mod:`.restoring`)."""
        name = self._target_name(target)
        scratch = self._scratch(self.scratch_path(target))
        statements = self._restore_statements(chain, scratch, until)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        tail = self._tail(name, replace=replace, stamp=stamp)
        swap, _aside = self._swap(scratch, name, replace=replace, stamp=stamp)
        first = [tsql.tail_log_statement(name, tail)] if tail else []
        return first + statements + [step.statement for step in swap]

    def _restore_statements(
        self, chain: Sequence[Manifest], scratch: str, until: datetime | None
    ) -> list[str]:
        files = [self._checked(manifest) for manifest in chain]
        if chain and not files[0]:
            raise CatalogError(
                f"backup {chain[0].id} has no file list, so SQL Server cannot be told where to "
                "put its files; restore from another backup."
            )
        data, log = self.folders.move_folders()
        moves = paths.move_targets(files[0], scratch, data, log) if chain else []
        steps = [
            (m.kind, self._server_path(restoring.copy_name(scratch, i, m.kind)))
            for i, m in enumerate(chain)
        ]
        return restoring.restore_statements(
            scratch, steps, moves, until=until, server_timezone=self.settings.server_timezone
        )

    def restore(
        self, chain: Sequence[BackupSource], scratch: Path, *, until: datetime | None = None
    ) -> Restored:
        """Copy the chain's files to the server's backup folder (verified on the way), restore
        them under the scratch name and run DBCC CHECKDB there; the live database is not
        touched.  The copies are removed whatever happens; a scratch database left by a
        failure is dropped by :meth:`discard`."""
        name = self._scratch(scratch)
        manifests = tuple(source.manifest for source in chain)
        statements = self._restore_statements(manifests, name, until)
        if self._state(name) is not None:
            raise EngineError(f"the scratch database {name} already exists; restore again.")
        folder = self.settings.worker_backup_dir
        copies = [
            self._worker_path(restoring.copy_name(name, i, m.kind)) for i, m in enumerate(manifests)
        ]
        try:
            for source, path in zip(chain, copies, strict=True):
                with source.open_object("data") as src, paths.create_private(folder, path) as out:
                    shutil.copyfileobj(src, out, self.chunk_bytes)
            for index, statement in enumerate(statements):
                try:
                    self.session.run(statement)
                except ServerFailed as exc:
                    step = manifests[index] if index < len(manifests) else None
                    raise failures.restore_failed(exc, step, name, statement) from None
        finally:
            for path in copies:
                paths.remove_inside(folder, path)
        return Restored(Path(name), manifests, checks=(f"DBCC CHECKDB ({name})",))

    def _aside(self, target: str, state: str, *, replace: bool, stamp: str) -> str:
        """The name an existing ``target`` is kept under; refused when it cannot be."""
        failures.refuse_replace(target, state, replace=replace)
        aside = check_database_name(restoring.aside_name(target, stamp), "the kept-aside name")
        if self._state(aside) is not None:
            raise RestoreTargetError(
                f"database {aside} already exists; drop it or restore again a second later."
            )
        return aside

    def _tail(self, target: str, *, replace: bool, stamp: str) -> str | None:
        """The server path of the tail-log backup taken before ``target`` is replaced; None
        when it does not exist, is in the SIMPLE model, or the setting is off."""
        existing = self._state(target)
        if existing is None:
            return None
        self._aside(target, existing[0], replace=replace, stamp=stamp)  # refuse before a tail
        if not self.settings.tail_log_before_replace or existing[1] == "SIMPLE":
            return None
        return self._server_path(restoring.tail_name(target, stamp))

    def before_restore(self, target: Path, *, replace: bool, stamp: str) -> tuple[str, ...]:
        """Back up the log tail of a database about to be replaced, ``COPY_ONLY``, before
        anything is built: it reads the log and changes neither the database's state nor
        its log chain, so a restore that then fails its check leaves it as it was."""
        name = self._target_name(target)
        tail = self._tail(name, replace=replace, stamp=stamp)
        if tail is None:
            return ()
        try:
            self.session.run(tsql.tail_log_statement(name, tail))
        except ServerFailed as exc:
            raise failures.tail_failed(exc, name) from None
        return (f"tail-log backup of {name} (COPY_ONLY) written to {tail} on the server",)

    def _swap(
        self, scratch: str, target: str, *, replace: bool, stamp: str
    ) -> tuple[list[restoring.SwapStep], str | None]:
        """The swap's steps, and the name the replaced target is kept under (if any)."""
        existing = self._state(target)
        if existing is None:
            return restoring.swap_steps(scratch, target, aside=None), None
        aside = self._aside(target, existing[0], replace=replace, stamp=stamp)
        return restoring.swap_steps(scratch, target, aside=aside), aside

    def install(self, restored: Restored, target: Path, *, replace: bool, stamp: str) -> Installed:
        """Put the checked scratch in place as ``target``: an existing target is kept aside
        offline as ``<target>_before_restore_<stamp>`` (its tail was backed up first, by
        :meth:`before_restore`)."""
        scratch = self._scratch(restored.scratch)
        name = self._target_name(target)
        state = self._state(scratch)
        if state is None or state[0] != "ONLINE":
            raise EngineError(
                f"the checked copy {scratch} is not online on the server; restore again."
            )
        steps, aside = self._swap(scratch, name, replace=replace, stamp=stamp)
        failures.run_swap(self.session, steps)
        return Installed(target=Path(name), kept_aside=(Path(aside),) if aside else ())

    def discard(self, scratch: Path) -> None:
        """Drop the scratch database if it is still there (a failed restore or check) and
        remove the copies a restore left in the backup folder; never the live database."""
        name = self._scratch(scratch)
        folder = self.settings.worker_backup_dir
        copies = re.compile(re.escape(name) + r"_\d{3}\.(bak|trn)")
        for entry in os.scandir(folder):
            if copies.fullmatch(entry.name):
                paths.remove_inside(folder, folder / entry.name)
        state = self._state(name)
        if state is None:
            return
        if state[0] == "ONLINE":
            self.session.run(tsql.set_option(name, "SINGLE_USER"))
        self.session.run(tsql.drop_database(name))

    def check_space(self, chain: Sequence[Manifest], scratch: Path) -> None:
        """The chain's files are copied to the worker's backup folder first: refuse a restore
        whose recorded sizes do not fit there.  (The server needs room for a second copy of
        the database in its data and log folders; see docs/sqlserver-restore.md.)"""
        self.folders.check_backup_space(self.space_needed(chain))

    def check_target(self, target: Path, replace: bool) -> None:
        name = self._target_name(target)
        existing = self._state(name)
        if existing is not None:
            failures.refuse_replace(name, existing[0], replace=replace)

    def scratch_path(self, target: Path) -> Path:
        """A scratch database name on the server: ``<target>_restore_<8 hex>``."""
        return Path(restoring.scratch_name(self._target_name(target)))

    def default_target(self, restore_point: datetime) -> Path:
        stamp = f"{restore_point.astimezone(UTC):%Y%m%d_%H%M%S}"
        name = f"{self.database[:88]}_restored_{stamp}"  # room for a drill's suffix
        return Path(check_database_name(name, "the default restore target"))

    def live_target(self) -> Path:
        return Path(self.database)
