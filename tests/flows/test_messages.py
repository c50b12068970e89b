"""Messages for whoever started the run: options named as they gave them (a CLI flag or a
flow parameter), a dry run that shows the plan over an existing database, and the
database-backup slot (a missing limit, a wait)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

from backupflow.config import Settings, use_settings
from backupflow.errors import ConfigError, RestoreTargetError
from backupflow.models import BackupKind
from flows._slots import slot
from flows.backup_database import backup_database
from flows.backup_files import backup_files
from flows.restore_database import restore_database
from flows.restore_system import restore_system
from tests.support.chain import content_digest, take_backup
from tests.support.keys import key_env
from tests.support.trees import make_api_tree

ROOT = Path(__file__).resolve().parents[2]


def _seed(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(str(i),) for i in range(800)])
    conn.close()


def test_a_flow_run_is_told_the_parameters_it_has(settings: Settings) -> None:
    live = settings.database.sqlite_path
    _seed(live)
    take_backup(settings, BackupKind.FULL)
    with use_settings(settings), pytest.raises(RestoreTargetError) as refused:
        restore_database(into=str(live))
    message = str(refused.value)
    assert message == (
        f"{live} already exists; pass replace=true to replace it (the current file is kept "
        "aside) or choose another path with the into parameter."
    )
    assert "--" not in message


def test_the_command_line_is_told_its_flags(tmp_path: Path, prefect_server: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUPFLOW_", "PREFECT_"))}
    env = {
        **base,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "BACKUPFLOW_REPOSITORY__PRIMARY__URL": str(tmp_path / "backups"),
        "BACKUPFLOW_REPOSITORY__SECONDARY__URL": str(tmp_path / "secondary"),
        "BACKUPFLOW_REPOSITORY__DR__URL": str(tmp_path / "dr"),
        "BACKUPFLOW_DATABASE__NAME": "gantt",
        "BACKUPFLOW_DATABASE__SQLITE_PATH": str(tmp_path / "app" / "gantt.db"),
        "BACKUPFLOW_BACKUP_LOG": str(tmp_path / "backup.log"),
        "BACKUPFLOW_STAGING_DIR": str(tmp_path / "staging"),
        **key_env(),
    }
    live = tmp_path / "app" / "gantt.db"
    _seed(live)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "backupflow_app", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    assert cli("backup", "database").returncode == 0
    refused = cli("restore", "database", "--latest", "--into", str(live))
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert "already exists; pass --replace to replace it" in last
    assert "choose another path with --into." in last
    assert "replace=true" not in refused.stderr


def test_a_system_dry_run_shows_the_plan_over_the_live_database(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "api"
    make_api_tree(root)
    files = settings.files.model_copy(
        update={
            name: getattr(settings.files, name).model_copy(update={"root": root})
            for name in ("config", "logs", "uploads")
        }
    )
    host = settings.model_copy(update={"files": files})
    live = host.database.sqlite_path
    _seed(live)
    with use_settings(host):
        backup_database(kind=BackupKind.FULL)
        backup_files(file_set="config")
        backup_files(file_set="uploads")
        before = content_digest(live)
        with caplog.at_level(logging.WARNING):
            plan = restore_system(source="primary", dry_run=True)
    assert [s["step"] for s in plan.steps] == ["database (plan)", "config (plan)", "uploads (plan)"]
    assert f"1 backup(s) into {live}" in plan.steps[0]["detail"]
    assert content_digest(live) == before
    assert any(
        f"{live} exists: a real run would refuse it without replace=true" in r.getMessage()
        for r in caplog.records
    )
    # A real run still refuses it without replace.
    with use_settings(host), pytest.raises(RestoreTargetError, match="pass replace=true"):
        restore_system(source="primary")


def test_a_missing_global_limit_says_to_run_the_bootstrap(settings: Settings) -> None:
    _seed(settings.database.sqlite_path)
    limited = settings.model_copy(update={"concurrency_limit": "never-created-limit"})
    with use_settings(limited), pytest.raises(ConfigError) as refused:
        backup_database(kind=BackupKind.FULL)
    assert str(refused.value) == (
        "the global concurrency limit 'never-created-limit' does not exist on the Prefect API; "
        "run the bootstrap (python deployments/bootstrap.py) to create it."
    )


def test_a_backup_waiting_for_the_slot_says_so(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    name = "messages-test-slot"

    async def create() -> None:
        async with get_client() as client:
            await client.upsert_global_concurrency_limit_by_name(name, 1)

    asyncio.run(create())
    limited = settings.model_copy(update={"concurrency_limit": name})
    entered: list[float] = []

    def second() -> None:
        with slot(limited):
            entered.append(time.monotonic())

    with caplog.at_level(logging.INFO, logger="backupflow.slots"):
        with concurrency(name, occupy=1, strict=True):
            waiter = threading.Thread(target=second)
            waiter.start()
            time.sleep(2)
            released = time.monotonic()
        waiter.join(timeout=60)
    assert entered and entered[0] >= released, "the second holder did not wait for the slot"
    messages: list[Any] = [r.getMessage() for r in caplog.records]
    assert f"waiting for the database-backup slot held by another run ({name})" in messages
