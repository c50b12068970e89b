"""The folders a SQL Server restore uses on the server: the backup folder (as the server
sees it) and the data and log folders restored files are moved to (configured, else the
server's defaults, asked once).  Every folder is checked by
:func:`backupflow.engines.mssql.paths.check_server_folder`.  The backup folder as the worker
sees it (``worker_backup_dir``) must hold the chain's copies during a restore."""

from __future__ import annotations

from pathlib import Path, PurePath

from backupflow.config import DatabaseSettings
from backupflow.engines.mssql import paths, tsql
from backupflow.engines.mssql.connection import SqlSession
from backupflow.errors import ConfigError, EngineError, RestoreTargetError
from backupflow.fsutil import free_bytes, readable_size

__all__ = ["ServerFolders"]

_SETTING = {
    "data": "server_data_dir (BACKUPFLOW_DATABASE__SERVER_DATA_DIR)",
    "log": "server_log_dir (BACKUPFLOW_DATABASE__SERVER_LOG_DIR)",
}


def _folder(value: str | None, where: str, *, allow_share: bool = False) -> PurePath | None:
    if value is None:
        return None
    try:
        return paths.check_server_folder(value, where, allow_share=allow_share)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class ServerFolders:
    """The server's folders for one engine (settings checked when it is built)."""

    def __init__(self, settings: DatabaseSettings, session: SqlSession) -> None:
        self.session = session
        self.worker_backup_dir: Path = settings.worker_backup_dir
        self._backup_dir = _folder(
            settings.server_backup_dir,
            "server_backup_dir (BACKUPFLOW_DATABASE__SERVER_BACKUP_DIR)",
            allow_share=True,
        )
        self._configured = {
            "data": _folder(settings.server_data_dir, _SETTING["data"]),
            "log": _folder(settings.server_log_dir, _SETTING["log"]),
        }
        self._defaults: dict[str, PurePath] | None = None

    def server_path(self, file_name: str) -> str:
        """``file_name`` in the backup folder, as the server sees it."""
        assert self._backup_dir is not None
        return paths.server_file(self._backup_dir, file_name)

    def check_backup_space(self, needed: int) -> None:
        """Refuse a restore whose copies (``needed`` bytes) do not fit in the backup folder."""
        try:
            folder, free = free_bytes(self.worker_backup_dir)
        except OSError as exc:
            raise RestoreTargetError(
                f"cannot read the free space of {self.worker_backup_dir} "
                f"({exc.strerror}); check worker_backup_dir."
            ) from exc
        if needed > free:
            raise RestoreTargetError(
                f"the restore copies {readable_size(needed)} of backups to {folder}, which has "
                f"only {readable_size(free)} free; free some space there."
            )

    def move_folders(self) -> tuple[PurePath, PurePath]:
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
