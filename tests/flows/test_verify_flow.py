"""The verify-backups flow under the Prefect harness: artifacts, failure and notification."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from prefect.artifacts import Artifact
from prefect.blocks.abstract import NotificationBlock

from backupflow.config import Contact, OwnersSettings, Settings, use_settings
from backupflow.errors import ParameterError
from backupflow.models import BackupKind
from backupflow.storage import open_tiers
from backupflow.storage.base import put_bytes
from backupflow.verify import VerificationFailedError
from flows.verify_backups import verify_backups
from tests.support.chain import take_backup


def _seed(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO tasks (name) VALUES (?)", [(f"t{i}",) for i in range(300)])
    conn.close()


class _Told:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def notify(self, body: str, subject: str | None = None) -> None:
        self.messages.append({"body": body, "subject": subject})


def _rows(key: str) -> list[dict[str, Any]]:
    artifact = cast(Artifact | None, Artifact.get(key))
    assert artifact is not None, key
    rows: list[dict[str, Any]] = json.loads(str(artifact.data))
    return rows


def test_a_clean_run_publishes_a_table_per_series(settings: Settings) -> None:
    _seed(settings.database.sqlite_path)
    with use_settings(settings):
        take_backup(settings, BackupKind.FULL)
        report = verify_backups(read_data_percent=100)
    assert report.ok and report.requests > 0 and report.bytes_read > 0
    rows = _rows("verify-gantt")
    assert [r["tier"] for r in rows] == ["primary", "secondary", "dr"]
    assert all(r["kind"] == "summary" and "1 authenticated backup(s)" in r["detail"] for r in rows)
    for name in ("config", "logs", "uploads"):
        assert all(r["kind"] == "summary" for r in _rows(f"verify-{name}"))


def test_a_finding_fails_the_run_after_publishing_and_tells_the_administrator(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(settings.database.sqlite_path)
    told = _Told()
    monkeypatch.setattr(NotificationBlock, "load", classmethod(lambda cls, name: told))
    admin = settings.model_copy(
        update={
            "owners": OwnersSettings(
                backup_administrator=Contact(name="Kim", notification_block="admin-mail")
            )
        }
    )
    with use_settings(admin):
        take_backup(admin, BackupKind.FULL)
        secondary = open_tiers(admin)[1]
        planted = "database/gantt/2026-11-26/payload.sh"
        put_bytes(secondary.storage, planted, b"#!/bin/sh\n")
        with pytest.raises(VerificationFailedError, match=r"^verify found 1 problem\(s\)"):
            verify_backups(read_data_percent=0)
    rows = _rows("verify-gantt")
    assert {k: v for k, v in rows[-1].items() if k != "detail"} == {
        "tier": "secondary",
        "kind": "foreign-object",
    }
    assert planted in rows[-1]["detail"]
    assert len(told.messages) == 1
    assert "verify-backups" in told.messages[0]["body"]
    assert "Kim" in str(told.messages[0]["subject"])


def test_a_bad_percentage_is_refused_before_any_request(settings: Settings) -> None:
    with use_settings(settings), pytest.raises(ParameterError, match="between 0 and 100"):
        verify_backups(read_data_percent=250)


def test_the_verify_deployment_runs_weekly_on_sunday_at_five_in_seoul() -> None:
    project = yaml.safe_load((Path(__file__).parents[2] / "prefect.yaml").read_text())
    (deployment,) = [d for d in project["deployments"] if d["name"] == "verify"]
    assert deployment["entrypoint"] == "flows/verify_backups.py:verify_backups"
    assert deployment["schedules"] == [
        {"cron": "0 5 * * 0", "timezone": "Asia/Seoul", "active": True}
    ]
    assert deployment["work_pool"]["name"] == "backupflow"
    assert deployment.get("parameters", {}) == {}  # the default percentage: 25, rotating
    hooks = [getattr(h, "__qualname__", "") for h in verify_backups.on_failure_hooks]
    assert hooks and all("notify_on_failure" in h for h in hooks)
