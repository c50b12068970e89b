"""With the DR tier's S3 endpoint down, every flow that reads it names the tier and the cause:
the restore, the DR drill, the failover's pre-flight and the health check (issue 15)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from prefect.artifacts import Artifact

from backupflow.config import FailoverSettings, Settings, use_settings
from backupflow.errors import BackupflowError, BackupsUnreadableError, NoBackupError
from backupflow.failover import FailoverError
from backupflow.models import BackupKind
from backupflow.objectives import HealthState
from flows.backup_database import backup_database
from flows.backup_health import StaleBackupsError, backup_health
from flows.dr_drill import dr_drill
from flows.failover import failover
from flows.restore_database import restore_database
from tests.integration.test_tier_state import REFUSED, with_dr_down


@pytest.fixture
def dr_down(settings: Settings, aws_env: None) -> Settings:
    return with_dr_down(settings)


def _seed(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO tasks (name) VALUES (?)", [(f"t{i}",) for i in range(80)])
    conn.close()


def _names_dr_and_cause(message: str) -> None:
    assert "tier dr is unreachable" in message and REFUSED in message, message
    assert "there are no backups" not in message, message


def test_restore_from_the_dr_tier_names_it_and_the_cause(dr_down: Settings) -> None:
    with use_settings(dr_down):
        with pytest.raises(NoBackupError) as only_dr:
            restore_database(source="dr", dry_run=True)
        with pytest.raises(NoBackupError) as auto:
            restore_database(dry_run=True)
    _names_dr_and_cause(str(only_dr.value))
    _names_dr_and_cause(str(auto.value))
    # the error says what happened: the backups could not be read, not "no backup"
    assert type(only_dr.value) is BackupsUnreadableError
    assert type(auto.value) is BackupsUnreadableError
    assert "no backups of gantt were found in tier(s) primary, secondary" in str(auto.value)


def test_the_drill_names_the_tier_and_the_cause(dr_down: Settings) -> None:
    with use_settings(dr_down), pytest.raises(BackupflowError) as raised:
        dr_drill()
    _names_dr_and_cause(str(raised.value))


def test_the_failover_preflight_names_the_tier_and_the_cause(dr_down: Settings) -> None:
    settings = dr_down.model_copy(
        update={
            "failover": FailoverSettings(
                hosted_zone_id="Z0000000000000",
                record_name="api.workload.example",
                standby_address="198.51.100.20",
                health_url="http://127.0.0.1:9/health",
                health_attempts=1,
                health_interval_seconds=0.1,
            )
        }
    )
    with use_settings(settings), pytest.raises(FailoverError, match="pre-flight") as raised:
        failover()
    _names_dr_and_cause(str(raised.value))
    assert not settings.database.sqlite_path.exists()


def test_health_shows_the_unreachable_tier_once_with_its_cause(
    settings: Settings, dr_down: Settings
) -> None:
    _seed(settings.database.sqlite_path)
    with use_settings(settings):
        backup_database(kind=BackupKind.FULL)
    with use_settings(dr_down), pytest.raises(StaleBackupsError) as raised:
        backup_health()
    message = str(raised.value)
    # never backed-up file sets are findings too, so this is not only an unreachable tier
    assert type(raised.value) is StaleBackupsError
    assert message.count("tier dr is unreachable") == 1 and REFUSED in message
    assert "config in primary: never backed up" in message and "(- old)" not in message
    health = Artifact.get("backup-health")
    assert health is not None
    lines = str(health.data).splitlines()
    rows = [line for line in lines if line.startswith("| ")][2:]
    dr_rows = [r for r in rows if "| dr |" in r]
    assert len(dr_rows) == 6 and all(f"**{HealthState.UNREACHABLE.value}**" in r for r in dr_rows)
    assert rows[0] in dr_rows  # the worst rows first
    assert "| ok | database_full | primary |" in str(health.data)
