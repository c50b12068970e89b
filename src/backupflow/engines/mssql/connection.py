"""Talking to SQL Server through pyodbc: autocommit, every result set drained, messages kept.

BACKUP and RESTORE cannot run in a transaction, so connections use ``autocommit=True``.
After each statement every result set is read (``nextset``) and the informational messages
are collected: a cursor closed early makes the server abort a running BACKUP or RESTORE
without a word, and errors such as 3013 arrive in a later result set.

A server error reaches pyodbc as one exception whose text holds every diagnostic record of
the statement (``[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]<text>
(<number>) (SQLExecDirectW); [42000] ...``).  :class:`ServerFailed` keeps each record's
number and text, so the engine can tell a consistency error (DBCC CHECKDB) or a broken
chain (4305, 4326) from any other failure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from backupflow.config import DatabaseSettings
from backupflow.errors import ConfigError, EngineError

__all__ = [
    "Connection",
    "Result",
    "ServerFailed",
    "SqlSession",
    "connection_string",
    "odbc_connect",
    "server_records",
]

_RECORD = re.compile(r"(?:\[[0-9A-Z]{5}\] )?(?:\[[^\]]*\])*(.*?) \((\d+)\)(?: \(SQL\w+\))?$", re.S)
_PREFIX = re.compile(r"^(?:\[[^\]]*\] ?)+")


def server_records(text: str) -> list[tuple[int, str]]:
    """The (error number, message) records of a pyodbc error text, driver prefixes removed;
    a text without numbered records gives one record numbered 0."""
    records = []
    for part in re.split(r"; (?=\[[0-9A-Z]{5}\] )", text):
        match = _RECORD.match(part.strip())
        if match:
            records.append((int(match.group(2)), match.group(1).strip()))
    return records or [(0, _PREFIX.sub("", text.strip()))]


class ServerFailed(EngineError):
    """A statement failed on the server; ``records`` are its (number, message) pairs.  The
    engine translates the numbers it knows into the error tree's own classes."""

    def __init__(self, message: str, records: Sequence[tuple[int, str]]) -> None:
        super().__init__(message)
        self.records = tuple(records)

    @property
    def numbers(self) -> tuple[int, ...]:
        return tuple(number for number, _text in self.records)

    def shown(self, limit: int = 3) -> str:
        """The first records as ``text (number)``, joined with ``; ``."""
        return "; ".join(
            f"{text.rstrip('.')} ({number})" if number else text.rstrip(".")
            for number, text in self.records[:limit]
        )


class Cursor(Protocol):
    description: Any
    messages: list[tuple[str, str]]

    def execute(self, sql: str, *params: Any) -> Any: ...

    def fetchall(self) -> list[Sequence[Any]]: ...

    def nextset(self) -> bool | None: ...

    def close(self) -> None: ...


class Connection(Protocol):
    def cursor(self) -> Cursor: ...

    def close(self) -> None: ...


def _brace(value: str) -> str:
    """An ODBC connection-string value in braces (``}`` doubled), safe for any password."""
    return "{" + value.replace("}", "}}") + "}"


def connection_string(settings: DatabaseSettings, password: str) -> str:
    """The ODBC connection string; it is passed to the driver, never to a command line."""
    parts = {
        "DRIVER": _brace(settings.odbc_driver),
        "SERVER": f"{settings.server},{settings.port}",
        "DATABASE": "master",
        "Encrypt": "yes" if settings.encrypt else "no",
        "TrustServerCertificate": "yes" if settings.trust_server_certificate else "no",
    }
    if settings.user:
        parts["UID"] = _brace(settings.user)
        parts["PWD"] = _brace(password)
    else:
        parts["Trusted_Connection"] = "yes"
    return ";".join(f"{k}={v}" for k, v in parts.items())


def odbc_connect(settings: DatabaseSettings, password: str) -> Connection:
    """A pyodbc connection with autocommit (imported here: it needs unixODBC and a driver)."""
    try:
        import pyodbc
    except ImportError as exc:
        raise ConfigError(
            "pyodbc cannot be loaded (it needs unixODBC and the Microsoft ODBC Driver 18 for "
            "SQL Server on this worker; see docs/sqlserver.md)."
        ) from exc
    try:
        conn: Connection = pyodbc.connect(
            connection_string(settings, password), autocommit=True, timeout=30
        )
    except pyodbc.Error as exc:
        raise EngineError(
            f"cannot connect to SQL Server {settings.server}:{settings.port}: "
            f"{exc.args[-1] if exc.args else exc}"
        ) from None  # the driver's text never contains the password; the string does
    return conn


@dataclass
class Result:
    """Every result set and message one statement produced."""

    sets: list[list[tuple[Any, ...]]] = field(default_factory=list)
    columns: list[list[str]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        """The first non-empty result set as dicts keyed by column name."""
        for columns, rows in zip(self.columns, self.sets, strict=False):
            if rows:
                return [dict(zip(columns, row, strict=False)) for row in rows]
        return []

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        """The rows of the first result set that has any."""
        return next((rows for rows in self.sets if rows), [])


class SqlSession:
    """Runs statements on one connection, draining results; records what it ran."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._conn: Connection | None = None
        self.statements: list[str] = []

    def run(self, sql: str, *params: Any) -> Result:
        if self._conn is None:
            self._conn = self._connect()
        self.statements.append(sql)
        cursor = self._conn.cursor()
        result = Result()
        try:
            cursor.execute(sql, *params)
            while True:
                result.messages += [
                    _PREFIX.sub("", str(text)) for _code, text in getattr(cursor, "messages", [])
                ]
                if cursor.description:
                    result.columns.append([str(col[0]) for col in cursor.description])
                    result.sets.append([tuple(row) for row in cursor.fetchall()])
                if not cursor.nextset():
                    break
        except Exception as exc:  # pyodbc.Error and driver errors; pyodbc may be absent
            detail = exc.args[-1] if getattr(exc, "args", None) else exc
            failed = ServerFailed("", server_records(str(detail)))
            raise ServerFailed(
                f"SQL Server failed: {failed.shown()} (statement: {sql.splitlines()[0]}).",
                failed.records,
            ) from None
        finally:
            cursor.close()
        return result

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
