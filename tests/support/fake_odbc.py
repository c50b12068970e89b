"""A stand-in for a pyodbc connection that plays back SQL Server behaviour as Microsoft
documents it.

Each statement is matched against responders (result sets with columns, rows and
informational messages, or an error raised when a given result set is reached), and every
statement is recorded, so a test can assert the exact T-SQL the engine ran.

:meth:`FakeOdbc.serve` adds a small model of one server: the databases it holds (name,
state, recovery model, user access), the files ``BACKUP`` writes, and the ``msdb`` history
rows it records.  What each statement does follows the pages cited next to it; nothing is
decided from the names the engine chose (an msdb row's type comes from the statement that
ran, never from a file name).

Size: one model of a server with its doc citations; splitting it would separate each
statement's behaviour from the page it follows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = [
    "FILELIST_COLUMNS",
    "FakeOdbc",
    "ProgrammingError",
    "ResultSet",
    "ServerError",
    "cannot_open_device",
    "checkdb_corruption",
    "log_too_early",
    "log_too_recent",
    "odbc_message",
]

MSDB_COLUMNS = (
    "first_lsn",
    "last_lsn",
    "checkpoint_lsn",
    "database_backup_lsn",
    "differential_base_lsn",
    "type",
    "is_copy_only",
    "backup_start_date",
    "backup_finish_date",
    "last_recovery_fork_guid",
    "database_guid",
    "compressed_backup_size",
    "backup_size",
)
FILELIST_COLUMNS = ("LogicalName", "PhysicalName", "Type", "FileGroupName", "FileId")
DRIVER = "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]"


class ProgrammingError(Exception):
    """What pyodbc raises for SQLSTATE class 42 (every severity-16 server error arrives with
    SQLSTATE 42000): ``args == (sqlstate, text)``.
    https://github.com/mkleehammer/pyodbc/wiki/Exceptions"""


ServerError = ProgrammingError  # the name older tests use


def odbc_message(records: Sequence[tuple[int, str]], sqlstate: str = "42000") -> str:
    """The text pyodbc puts in ``args[1]``: every diagnostic record of the statement, the
    first with the ODBC function name, the others joined with ``; ``."""
    parts = [f"[{sqlstate}] {DRIVER}{text} ({number})" for number, text in records]
    parts[0] += " (SQLExecDirectW)"
    return "; ".join(parts)


# -- recorded errors ------------------------------------------------------------------------
# Message texts and severities: the sys.messages tables Microsoft publishes,
# https://learn.microsoft.com/en-us/sql/relational-databases/errors-events/database-engine-events-and-errors-8000-to-8999
# (8928, 8939, 8976: severity 16; 8989, the CHECKDB summary: severity 10),
# https://learn.microsoft.com/en-us/sql/relational-databases/errors-events/database-engine-events-and-errors-4000-to-4999
# (4305, 4326: severity 16) and
# https://learn.microsoft.com/en-us/sql/relational-databases/errors-events/database-engine-events-and-errors-3000-to-3999
# (3013 "%hs is terminating abnormally.", 3201: severity 16).


def checkdb_corruption(database: str, numbers: Sequence[int] = (8928, 8939)) -> list[ResultSet]:
    """DBCC CHECKDB ... WITH NO_INFOMSGS on a damaged database: each finding is a severity-16
    error (so pyodbc raises), followed by the severity-10 summary 8989.
    https://learn.microsoft.com/en-us/sql/t-sql/database-console-commands/dbcc-checkdb-transact-sql
    """
    unit = (
        "Object ID 1977058079, index ID 1, partition ID 72057594043039744, alloc unit ID "
        "72057594047889408 (type In-row data)"
    )
    texts = {
        8928: f"{unit}: Page (1:296) could not be processed. See other errors for details.",
        8939: f"Table error: {unit}, page (1:296). Test (IS_OFF (BUF_IOERR, pBUF->bstat)) "
        "failed. Values are 2057 and -4.",
        8976: f"Table error: {unit}. Page (1:296) was not seen in the scan although its parent "
        "(1:152) and previous (1:295) refer to it. Check any previous errors.",
    }
    records = [(n, texts[n]) for n in numbers]
    records.append(
        (
            8989,
            f"CHECKDB found 0 allocation errors and {len(numbers)} consistency errors in "
            f"database '{database}'.",
        )
    )
    return [ResultSet(error=records)]


def log_too_recent(first_lsn: int, needed: int) -> list[ResultSet]:
    """RESTORE LOG of a log that starts after the point the database reached (a log is
    missing in between): 4305, then 3013."""
    return [
        ResultSet(
            error=[
                (
                    4305,
                    f"The log in this backup set begins at LSN {first_lsn}, which is too recent "
                    f"to apply to the database. An earlier log backup that includes LSN "
                    f"{needed} can be restored.",
                ),
                (3013, "RESTORE LOG is terminating abnormally."),
            ]
        )
    ]


def log_too_early(last_lsn: int, needed: int) -> list[ResultSet]:
    """RESTORE LOG of a log that ends before the point the database reached: 4326, 3013."""
    return [
        ResultSet(
            error=[
                (
                    4326,
                    f"The log in this backup set terminates at LSN {last_lsn}, which is too "
                    f"early to apply to the database. A more recent log backup that includes "
                    f"LSN {needed} can be restored.",
                ),
                (3013, "RESTORE LOG is terminating abnormally."),
            ]
        )
    ]


def cannot_open_device(path: str, verb: str = "RESTORE DATABASE") -> list[ResultSet]:
    """The server cannot open a backup file: 3201 (with the OS error), then 3013.
    https://learn.microsoft.com/en-us/sql/relational-databases/errors-events/mssqlserver-3201-database-engine-error
    """
    return [
        ResultSet(
            error=[
                (
                    3201,
                    f"Cannot open backup device '{path}'. Operating system error "
                    "2(The system cannot find the file specified.).",
                ),
                (3013, f"{verb} is terminating abnormally."),
            ]
        )
    ]


@dataclass
class ResultSet:
    columns: Sequence[str] = ()
    rows: Sequence[Sequence[Any]] = ()
    messages: Sequence[str] = ()
    #: Raised when this result set is reached: diagnostic records (number, text) as pyodbc
    #: formats them, or a ready text.
    error: Sequence[tuple[int, str]] | str | None = None


Responder = Callable[[str, tuple[Any, ...]], list[ResultSet]]


@dataclass
class Database:
    """One row of sys.databases as far as a restore looks at it."""

    name: str
    state: str = "ONLINE"  # ONLINE, RESTORING, OFFLINE, ...
    recovery: str = "FULL"
    access: str = "MULTI_USER"


_NAME = r"\[((?:[^\]]|\]\])*)\]"
_PATH = r"N'((?:[^']|'')*)'"


def _unquote(name: str) -> str:
    return name.replace("]]", "]")


@dataclass
class FakeOdbc:
    responders: list[tuple[re.Pattern[str], Responder]] = field(default_factory=list)
    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    drained: list[bool] = field(default_factory=list)
    #: The server model (see :meth:`serve`).
    catalog: dict[str, Database] = field(default_factory=dict)
    backupset: list[dict[str, Any]] = field(default_factory=list)
    clock: datetime = datetime(2026, 11, 26, 2, 0, 0)  # server local time, as msdb keeps it
    folder: Path | None = None
    lsn: int = 38000000028800037
    log_start: int = 38000000028000001
    full_checkpoint: int = 0

    def on(self, pattern: str, responder: Responder | list[ResultSet]) -> None:
        fn = responder if callable(responder) else (lambda _sql, _params, r=responder: r)
        self.responders.insert(0, (re.compile(pattern, re.S), fn))

    def databases(self, names: Sequence[Any]) -> None:
        """What ``SELECT name FROM sys.databases ...`` lists (hostile names included)."""
        self.on(r"^SELECT name FROM sys\.databases", [ResultSet(["name"], [(n,) for n in names])])

    def filelist(self, rows: Sequence[tuple[Any, Any, Any]]) -> None:
        """RESTORE FILELISTONLY rows: (logical, physical, type) for each file.
        https://learn.microsoft.com/en-us/sql/t-sql/statements/restore-statements-filelistonly-transact-sql
        """
        full = [(*row, "PRIMARY" if row[2] == "D" else None, i + 1) for i, row in enumerate(rows)]
        self.on(r"^RESTORE FILELISTONLY", [ResultSet(FILELIST_COLUMNS, full)])

    def default_paths(
        self, data: str | None = "/var/opt/mssql/data/", log: str | None = "/var/opt/mssql/data/"
    ) -> None:
        """``SERVERPROPERTY('InstanceDefaultDataPath')`` / ``'InstanceDefaultLogPath'``: a
        folder ending with a separator, NULL before SQL Server 2012.
        https://learn.microsoft.com/en-us/sql/t-sql/functions/serverproperty-transact-sql"""
        self.on(
            r"SERVERPROPERTY\('InstanceDefaultDataPath'\)",
            [ResultSet(["data_path", "log_path"], [(data, log)])],
        )

    def ran(self, pattern: str) -> list[str]:
        """The statements that match ``pattern``, in order."""
        found = re.compile(pattern, re.S)
        return [statement for statement in self.sql() if found.search(statement)]

    def connect(self) -> FakeOdbc:
        return self

    def cursor(self) -> _Cursor:
        return _Cursor(self)

    def close(self) -> None:
        pass

    def sql(self) -> list[str]:
        return [statement for statement, _ in self.statements]

    # -- the server model -----------------------------------------------------------------

    def state(self, name: str) -> Database | None:
        """A database by name, compared as the default case-insensitive collation does."""
        return self.catalog.get(name.casefold())

    def serve(self, folder: Path, databases: Sequence[str] = ("GanttDB",)) -> FakeOdbc:
        """Model a server whose backup folder the worker sees as ``folder``."""
        self.folder = folder
        for name in databases:
            self.catalog[name.casefold()] = Database(name)
        self.on(r"^SELECT state_desc, recovery_model_desc FROM sys\.databases", self._row)
        self.on(r"^SELECT name FROM sys\.databases", self._list)
        self.on(r"^BACKUP (DATABASE|LOG) ", self.backup)
        self.on(r"FROM msdb\.dbo\.backupset", self._history)
        self.on(r"^RESTORE VERIFYONLY", self._verify)
        self.on(r"^RESTORE FILELISTONLY", self._filelist)
        self.on(r"^RESTORE (DATABASE|LOG) \[.*\] FROM DISK", self._restore)
        self.on(rf"^RESTORE DATABASE {_NAME} WITH RECOVERY;$", self._recover)
        self.on(r"^DBCC CHECKDB", lambda _s, _p: [ResultSet()])  # NO_INFOMSGS: clean is silent
        self.on(rf"^ALTER DATABASE {_NAME} ", self._alter)
        self.on(rf"^DROP DATABASE {_NAME};$", self._drop)
        self.default_paths()
        return self

    def _row(self, _sql: str, params: tuple[Any, ...]) -> list[ResultSet]:
        # https://learn.microsoft.com/en-us/sql/relational-databases/system-catalog-views/sys-databases-transact-sql
        db = self.state(str(params[0]))
        rows = [(db.state, db.recovery)] if db else []
        return [ResultSet(["state_desc", "recovery_model_desc"], rows)]

    def _list(self, _sql: str, _params: tuple[Any, ...]) -> list[ResultSet]:
        names = sorted(db.name for db in self.catalog.values() if db.state == "ONLINE")
        return [ResultSet(["name"], [(n,) for n in names])]

    def _file(self, path: str) -> Path:
        assert self.folder is not None
        return self.folder / re.split(r"[\\/]", path)[-1]

    def _error(self, number: int, text: str, verb: str) -> list[ResultSet]:
        return [ResultSet(error=[(number, text), (3013, f"{verb} is terminating abnormally.")])]

    def backup(self, sql: str, _params: tuple[Any, ...]) -> list[ResultSet]:
        """BACKUP DATABASE / LOG: writes the file and records the msdb row the statement
        decides.  backupset.type: D database, I differential, L log; first/last/checkpoint/
        database_backup_lsn as numeric(25,0); dates in the server's local time.
        https://learn.microsoft.com/en-us/sql/relational-databases/system-tables/backupset-transact-sql
        Copy-only: no new differential base, the log archive point is kept.
        https://learn.microsoft.com/en-us/sql/relational-databases/backup-restore/copy-only-backups-sql-server
        """
        match = re.match(rf"^BACKUP (DATABASE|LOG) {_NAME} TO DISK = {_PATH} WITH (.*);$", sql)
        assert match, sql
        verb, name, path, options = match.groups()
        name, path = _unquote(name), path.replace("''", "'")
        db = self.state(name)
        if db is None or db.state != "ONLINE":
            return self._error(911, f"Database '{name}' does not exist.", f"BACKUP {verb}")
        copy_only = "COPY_ONLY" in options
        kind = "L" if verb == "LOG" else ("I" if "DIFFERENTIAL" in options else "D")
        if kind == "L" and db.recovery == "SIMPLE":
            return self._error(
                4208,
                "The statement BACKUP LOG is not allowed while the recovery model is SIMPLE. "
                "Use BACKUP DATABASE or change the recovery model using ALTER DATABASE.",
                "BACKUP LOG",
            )
        start = self.clock
        self.clock += timedelta(seconds=4)
        self.lsn += 1600000
        if kind == "L":
            first, last, checkpoint = self.log_start, self.lsn, self.full_checkpoint
            if not copy_only:
                self.log_start = last
        else:
            first, checkpoint, last = self.lsn - 800000, self.lsn - 800000, self.lsn
        base = self.full_checkpoint
        if kind == "D" and not copy_only:
            self.full_checkpoint = checkpoint
        self.backupset.append(
            {
                "database_name": db.name,
                "physical_device_name": path,
                "row": (
                    str(first),
                    str(last),
                    str(checkpoint),
                    str(base if kind != "D" else 0),
                    str(base) if kind == "I" else None,
                    kind,
                    copy_only,
                    start,
                    self.clock,
                    "6F9619FF-8B86-D011-B42D-00C04FC964FF",
                    "B0D6C5A2-3F1E-4C4B-9A77-2D1E0F5A6B7C",
                    4096,
                    16384,
                ),
            }
        )
        self.clock += timedelta(minutes=1)
        self._file(path).write_bytes(b"TAPE" + f"{kind}:{db.name}:{first}-{last}".encode())
        noun = "DATABASE" if kind != "L" else "LOG"
        return [
            ResultSet(messages=[f"Processed 352 pages for database '{db.name}', file "
                                f"'{db.name}' on file 1."]),
            ResultSet(messages=[f"BACKUP {noun} successfully processed 354 pages in 0.051 "
                                "seconds (54.150 MB/sec)."]),
        ]  # fmt: skip

    def _history(self, _sql: str, params: tuple[Any, ...]) -> list[ResultSet]:
        rows = [
            r["row"]
            for r in self.backupset
            if r["database_name"].casefold() == str(params[0]).casefold()
            and r["physical_device_name"] == params[1]
        ]
        return [ResultSet(MSDB_COLUMNS, rows[-1:])]

    def _verify(self, sql: str, _params: tuple[Any, ...]) -> list[ResultSet]:
        path = re.findall(_PATH, sql)[0].replace("''", "'")
        if not self._file(path).exists():
            return cannot_open_device(path, "VERIFY DATABASE")
        return [ResultSet(messages=["The backup set on file 1 is valid."])]

    def _filelist(self, _sql: str, _params: tuple[Any, ...]) -> list[ResultSet]:
        rows = [
            ("GanttDB", "/var/opt/mssql/data/GanttDB.mdf", "D", "PRIMARY", 1),
            ("GanttDB_log", "/var/opt/mssql/data/GanttDB_log.ldf", "L", None, 2),
        ]
        return [ResultSet(FILELIST_COLUMNS, rows)]

    def _restore(self, sql: str, _params: tuple[Any, ...]) -> list[ResultSet]:
        """RESTORE ... WITH NORECOVERY leaves the database RESTORING; restoring over an
        existing database needs REPLACE (error 3159 otherwise).
        https://learn.microsoft.com/en-us/sql/t-sql/statements/restore-statements-arguments-transact-sql
        """
        match = re.match(rf"^RESTORE (DATABASE|LOG) {_NAME} FROM DISK = {_PATH}", sql)
        assert match, sql
        verb, name, path = match.groups()
        name, path = _unquote(name), path.replace("''", "'")
        if not self._file(path).exists():
            return cannot_open_device(path, f"RESTORE {verb}")
        db = self.state(name)
        if (
            verb == "DATABASE"
            and db is not None
            and db.state != "RESTORING"
            and "REPLACE" not in sql
        ):
            return self._error(
                3159,
                f'The tail of the log for the database "{name}" has not been backed up.',
                "RESTORE DATABASE",
            )
        if verb == "LOG" and (db is None or db.state != "RESTORING"):
            return self._error(
                3117,
                "The log or differential backup cannot be restored because no files are ready "
                "to rollforward.",
                "RESTORE LOG",
            )
        self.catalog[name.casefold()] = Database(name, "RESTORING")
        return [
            ResultSet(messages=[f"Processed 352 pages for database '{name}', file 'GanttDB' "
                                "on file 1."]),
            ResultSet(messages=[f"RESTORE {verb} successfully processed 354 pages in 0.047 "
                                "seconds (58.760 MB/sec)."]),
        ]  # fmt: skip

    def _recover(self, sql: str, _params: tuple[Any, ...]) -> list[ResultSet]:
        name = _unquote(re.findall(_NAME, sql)[0])
        db = self.state(name)
        if db is None:
            return self._error(911, f"Database '{name}' does not exist.", "RESTORE DATABASE")
        db.state = "ONLINE"
        return [ResultSet(messages=["RESTORE DATABASE successfully processed 0 pages."])]

    def _alter(self, sql: str, _params: tuple[Any, ...]) -> list[ResultSet]:
        """SET SINGLE_USER / MULTI_USER / OFFLINE / ONLINE and MODIFY NAME.
        https://learn.microsoft.com/en-us/sql/t-sql/statements/alter-database-transact-sql-set-options
        https://learn.microsoft.com/en-us/sql/relational-databases/databases/rename-a-database
        """
        names = [_unquote(n) for n in re.findall(_NAME, sql)]
        db = self.state(names[0])
        if db is None:
            return [ResultSet(error=[(5011, f"Database '{names[0]}' does not exist.")])]
        if "MODIFY NAME" in sql:
            new = names[1]
            if db.state != "ONLINE":
                return [ResultSet(error=[(5011, f"Database '{db.name}' is {db.state}.")])]
            if self.state(new) is not None and new.casefold() != db.name.casefold():
                return [
                    ResultSet(
                        error=[(1801, f"Database '{new}' already exists. Choose a different name.")]
                    )
                ]
            del self.catalog[db.name.casefold()]
            db.name = new
            self.catalog[new.casefold()] = db
            return [ResultSet(messages=[f"The database name '{new}' has been set."])]
        for option, attribute, value in (
            ("SINGLE_USER", "access", "SINGLE_USER"),
            ("MULTI_USER", "access", "MULTI_USER"),
            ("OFFLINE", "state", "OFFLINE"),
            ("ONLINE", "state", "ONLINE"),
        ):
            if f"SET {option}" in sql:
                setattr(db, attribute, value)
        return [ResultSet()]

    def _drop(self, sql: str, _params: tuple[Any, ...]) -> list[ResultSet]:
        name = _unquote(re.findall(_NAME, sql)[0])
        if self.state(name) is None:
            return [ResultSet(error=[(3701, f"Cannot drop the database '{name}'.")])]
        del self.catalog[name.casefold()]
        return [ResultSet()]


class _Cursor:
    def __init__(self, server: FakeOdbc) -> None:
        self.server = server
        self.sets: list[ResultSet] = []
        self.index = 0
        self.description: Any = None
        self.messages: list[tuple[str, str]] = []

    def execute(self, sql: str, *params: Any) -> None:
        self.server.statements.append((sql, params))
        for pattern, responder in self.server.responders:
            if pattern.search(sql):
                self.sets = responder(sql, params)
                break
        else:
            self.sets = [ResultSet()]
        self.server.drained.append(False)
        self._enter(0)

    def _enter(self, index: int) -> bool:
        self.index = index
        if index >= len(self.sets):
            self.server.drained[-1] = True
            return False
        current = self.sets[index]
        if current.error:
            text = current.error if isinstance(current.error, str) else odbc_message(current.error)
            raise ProgrammingError("42000", text)
        self.description = [(c,) for c in current.columns] or None
        # pyodbc's Cursor.messages: (``[SQLSTATE] (number)``, text with the driver prefix).
        self.messages = [("[01000] (0)", f"{DRIVER}{m}") for m in current.messages]
        return True

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.sets[self.index].rows]

    def nextset(self) -> bool:
        return self._enter(self.index + 1)

    def close(self) -> None:
        pass
