"""The SQL Server engine.

Light on purpose: :mod:`backupflow.engines.mssql.settings` is imported by the settings, so
importing this package must not import the engine (which imports the settings);
:class:`SqlServerEngine` is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backupflow.engines.mssql.engine import SqlServerEngine

__all__ = ["SqlServerEngine"]


def __getattr__(name: str) -> object:
    if name == "SqlServerEngine":
        from backupflow.engines.mssql.engine import SqlServerEngine

        return SqlServerEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
