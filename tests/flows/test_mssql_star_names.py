"""Issue 12, class 7: ``databases = ["*"]`` under the backup-database flow, with a server
that lists hostile database names (through the fake ODBC connection)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backupflow import backup_run
from backupflow.config import Settings, load_settings, use_settings
from backupflow.errors import BackupflowError
from backupflow.models import BackupKind
from flows import backup_database as flow_module
from tests.support.fake_odbc import FakeOdbc

HOSTILE = ["../../../etc/cron.d/x", "x'; DROP DATABASE Audit;--", "Gantt]DB", "/etc/passwd"]


def _settings(tmp_path: Path) -> Settings:
    return load_settings(
        repository={"primary": {"url": str(tmp_path / "backups")}},
        database={
            "engine": "sqlserver",
            "name": "GanttDB",
            "databases": ["*"],
            "worker_backup_dir": tmp_path / "worker",
        },
        backup_log=tmp_path / "log" / "backup.log",
        staging_dir=tmp_path / "staging",
    )


def test_class7_star_backs_up_only_rule_abiding_names_and_fails_saying_how_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FakeOdbc()
    server.databases(["Audit", *HOSTILE, "GanttDB"])
    monkeypatch.setattr(
        "backupflow.engines.mssql.connection.odbc_connect", lambda *_a: server.connect()
    )
    backed_up: list[str] = []

    def backup_one(subject: Any, *_args: Any, **_kwargs: Any) -> Any:
        backed_up.append(subject.name)
        return None

    monkeypatch.setattr(backup_run, "run_backup", backup_one)
    with use_settings(_settings(tmp_path)), pytest.raises(BackupflowError) as caught:
        flow_module.backup_database(kind=BackupKind.FULL)
    assert backed_up == ["Audit", "GanttDB"]
    message = str(caught.value)
    assert message.startswith("4 of 6 database backups failed: 4 database(s) on the server")
    assert "BACKUPFLOW_DATABASE__DATABASES" in message
    assert not any(name in message for name in HOSTILE)
