"""Class 8 (hook environment) through the flows: a post-restore command that prints its
environment and echoes the secrets it can read leaks none of them into the flow's return
value, the backup log or the Prefect logs."""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import uuid
from pathlib import Path

import pytest
from prefect.blocks.system import Secret
from prefect_aws import AwsCredentials
from pydantic import SecretStr

from backupflow.config import Settings, use_settings
from backupflow.models import BackupKind
from flows.backup_files import backup_files
from flows.restore_files import restore_files
from flows.restore_system import restore_system
from tests.support.chain import take_backup
from tests.support.trees import make_api_tree

ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "AKIAFLOWHOOKTEST001",
    "AWS_SECRET_ACCESS_KEY": "flowHookSecret/Access+Key0123",
    "BACKUPFLOW_DATABASE__PASSWORD": "flow-env-db-password-1a2b",
    "PREFECT_API_KEY": "pnu_flowhookapikey987654321",
}
SETTINGS_PASSWORD = "flow-settings-password-3c4d"
BLOCK_PASSWORD = "flow-secret-block-password-5e6f"
BLOCK_AWS_SECRET = "flow-aws-block-secret-7a8b"
MARKER = "HOOK-RAN-RELOAD-OK"


def _everything_secret() -> list[str]:
    return [*ENVIRONMENT.values(), SETTINGS_PASSWORD, BLOCK_PASSWORD, BLOCK_AWS_SECRET]


@pytest.fixture
def hooked(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """An API tree backed up, and a hook that prints its environment and every secret it
    can read from a file of its own."""
    for key, value in ENVIRONMENT.items():
        monkeypatch.setenv(key, value)
    suffix = uuid.uuid4().hex[:8]
    Secret(value=BLOCK_PASSWORD).save(f"hook-db-{suffix}")
    AwsCredentials(
        aws_access_key_id="AKIAFLOWBLOCK000001", aws_secret_access_key=SecretStr(BLOCK_AWS_SECRET)
    ).save(f"hook-aws-{suffix}")
    api = make_api_tree(tmp_path / "api")
    stolen = tmp_path / "hook-can-read.json"
    stolen.write_text(json.dumps(_everything_secret()))
    script = (
        "import json, os\n"
        "print(json.dumps(dict(os.environ)))\n"
        f"for value in json.load(open({str(stolen)!r})):\n"
        "    print('found', value, json.dumps(value))\n"
        f"print({MARKER!r})\n"
    )
    roots = {name: {"root": api} for name in ("config", "logs", "uploads")}
    files = settings.files.model_copy(
        update={
            **{
                name: getattr(settings.files, name).model_copy(update=value)
                for name, value in roots.items()
            },
            "post_restore_hook": [sys.executable, "-c", script],
            "post_restore_cwd": tmp_path,
        }
    )
    database = settings.database.model_copy(
        update={"password": SecretStr(SETTINGS_PASSWORD), "password_block": f"hook-db-{suffix}"}
    )
    repository = settings.repository.model_copy(
        update={
            "dr": settings.repository.dr.model_copy(
                update={"credentials_block": f"hook-aws-{suffix}"}
            )
        }
    )
    return settings.model_copy(
        update={"files": files, "database": database, "repository": repository}
    )


def _assert_clean(text: str, where: str) -> None:
    for value in _everything_secret():
        assert value not in text, f"{value!r} leaked into {where}"
    for key in ENVIRONMENT:
        assert key not in text, f"{key} was passed to the hook ({where})"


def test_restore_files_hook_leaks_nothing(
    hooked: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="prefect")
    with use_settings(hooked):
        backup_files(file_set="config")
        report = restore_files(file_set="config", in_place=True)
    assert report.hook is not None and report.hook.ok
    assert MARKER in report.hook.output  # the hook ran and its output was kept
    _assert_clean(repr(report), "the flow's return value")
    log = hooked.backup_log.read_text()
    assert MARKER in log
    _assert_clean(log, "the backup log")
    assert MARKER in caplog.text
    _assert_clean(caplog.text, "the Prefect logs")


def test_restore_system_hook_leaks_nothing(
    hooked: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    live = hooked.database.sqlite_path
    live.parent.mkdir(parents=True)
    conn = sqlite3.connect(live)
    with conn:
        conn.execute("CREATE TABLE t (v TEXT)")
    conn.close()
    caplog.set_level(logging.INFO, logger="prefect")
    with use_settings(hooked):
        take_backup(hooked, BackupKind.FULL)
        backup_files(file_set="config")
        backup_files(file_set="uploads")
        report = restore_system(source="primary", replace=True)
    [hook_step] = [s for s in report.steps if s["step"] == "post-restore command"]
    assert hook_step["result"] == "ok" and MARKER in hook_step["detail"]
    _assert_clean(repr(report), "the flow's return value")
    _assert_clean(hooked.backup_log.read_text(), "the backup log")
    assert MARKER in caplog.text
    _assert_clean(caplog.text, "the Prefect logs")
