"""The SQL Server engine."""

from backupflow.engines.mssql.engine import SqlServerEngine

__all__ = ["SqlServerEngine"]
