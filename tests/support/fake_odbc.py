"""A stand-in for a pyodbc connection that plays back recorded SQL Server behaviour.

Each statement is matched against recorded responses (result sets with columns, rows and
informational messages, or an error raised when a given result set is reached), and every
statement is recorded, so a test can assert the exact T-SQL the engine ran.

The helpers below record what a real server answers (shapes checked against SQL Server 2022
on Linux): ``sys.databases`` names are ``sysname`` and may hold any character a
``CREATE DATABASE [...]`` accepted, FILELISTONLY rows carry whatever logical and physical
names the database was created with, and ``SERVERPROPERTY('InstanceDefaultDataPath')`` ends
with a separator (``/var/opt/mssql/data/``) or is NULL before SQL Server 2012.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FILELIST_COLUMNS", "FakeOdbc", "ResultSet", "ServerError"]

FILELIST_COLUMNS = ("LogicalName", "PhysicalName", "Type", "FileGroupName", "FileId")


class ServerError(Exception):
    """What pyodbc raises for a server error (the text is the last argument)."""


@dataclass
class ResultSet:
    columns: Sequence[str] = ()
    rows: Sequence[Sequence[Any]] = ()
    messages: Sequence[str] = ()
    error: str | None = None  # raised when this result set is reached


Responder = Callable[[str, tuple[Any, ...]], list[ResultSet]]


@dataclass
class FakeOdbc:
    responders: list[tuple[re.Pattern[str], Responder]] = field(default_factory=list)
    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    drained: list[bool] = field(default_factory=list)

    def on(self, pattern: str, responder: Responder | list[ResultSet]) -> None:
        fn = responder if callable(responder) else (lambda _sql, _params, r=responder: r)
        self.responders.insert(0, (re.compile(pattern, re.S), fn))

    def databases(self, names: Sequence[Any]) -> None:
        """What ``SELECT name FROM sys.databases ...`` lists (hostile names included)."""
        self.on(r"^SELECT name FROM sys\.databases", [ResultSet(["name"], [(n,) for n in names])])

    def filelist(self, rows: Sequence[tuple[Any, Any, Any]]) -> None:
        """RESTORE FILELISTONLY rows: (logical, physical, type) for each file."""
        full = [(*row, "PRIMARY" if row[2] == "D" else None, i + 1) for i, row in enumerate(rows)]
        self.on(r"^RESTORE FILELISTONLY", [ResultSet(FILELIST_COLUMNS, full)])

    def default_paths(
        self, data: str | None = "/var/opt/mssql/data/", log: str | None = "/var/opt/mssql/data/"
    ) -> None:
        """``SERVERPROPERTY('InstanceDefaultDataPath')`` / ``'InstanceDefaultLogPath'``."""
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
            raise ServerError("42000", current.error)
        self.description = [(c,) for c in current.columns] or None
        self.messages = [("01000", m) for m in current.messages]
        return True

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.sets[self.index].rows]

    def nextset(self) -> bool:
        return self._enter(self.index + 1)

    def close(self) -> None:
        pass
