"""The SQL Server cycle against a real server: backup -> restore under a new name -> CHECKDB.

Not part of ``make test`` (no SQL Server can run on the development machines): run it with
``make test-mssql`` where ``BACKUPFLOW_TEST_MSSQL_DSN`` names a reachable server, e.g. the one
``docker compose -f docker/compose.test.yaml up`` starts.  The DSN's password is read from
the environment only.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backupflow.config import load_settings
from backupflow.engines import open_engine
from backupflow.engines.mssql import SqlServerEngine
from backupflow.models import BackupKind
from tests.support.chain import restore, take_backup

pytestmark = pytest.mark.mssql


@pytest.fixture
def live(tmp_path: Path) -> SqlServerEngine:
    if not os.environ.get("BACKUPFLOW_TEST_MSSQL_DSN"):
        pytest.fail("BACKUPFLOW_TEST_MSSQL_DSN is not set: make test-mssql needs a SQL Server")
    engine = open_engine(load_settings())
    assert isinstance(engine, SqlServerEngine)
    return engine


def test_backup_restore_checkdb_cycle(live: SqlServerEngine, tmp_path: Path) -> None:
    settings = load_settings()
    session = live.session
    session.run(f"IF DB_ID('{live.database}') IS NULL CREATE DATABASE [{live.database}];")
    session.run(f"ALTER DATABASE [{live.database}] SET RECOVERY FULL;")
    session.run(f"USE [{live.database}]; CREATE TABLE t{uuid.uuid4().hex[:6]} (v int);")
    full = take_backup(settings, BackupKind.FULL)
    diff = take_backup(settings, BackupKind.DIFF)
    log = take_backup(settings, BackupKind.LOG)
    assert int(diff.position["database_backup_lsn"]) == int(full.position["checkpoint_lsn"])
    target = f"{live.database}_live_{uuid.uuid4().hex[:6]}"
    plan, _outcome = restore(settings, datetime.now(UTC), Path(target))
    assert plan.last.id == log.id
    session.run(f"DROP DATABASE [{target}];")
