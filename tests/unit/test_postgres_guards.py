"""Guards of the PostgreSQL engine that need no cluster: what a child process inherits,
which pid is ever signalled, and the recovery settings a copy always starts with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backupflow.engines.postgres.restoring import RECOVERY_RESETS
from backupflow.engines.postgres.server import child_env, postmaster_pid, read_bounded


def test_no_child_inherits_a_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGPASSWORD", "BACKUPFLOW_DATABASE__PASSWORD", "DB_PASSWORD", "PGPASSFILE"):
        monkeypatch.setenv(name, "s3cret")
    monkeypatch.setenv("BACKUPFLOW_DATABASE__NAME", "gantt")
    env = child_env()
    assert "s3cret" not in env.values()
    assert env["BACKUPFLOW_DATABASE__NAME"] == "gantt"


def test_a_pid_file_naming_another_program_is_never_signalled(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "postmaster.pid").write_text(f"{os.getpid()}\n{data}\n")  # this python process
    assert postmaster_pid(data) is None
    (data / "postmaster.pid").write_text("1\n")
    assert postmaster_pid(data) is None


def test_a_planted_link_or_endless_file_is_not_read(tmp_path: Path) -> None:
    link = tmp_path / "server.log"
    link.symlink_to("/dev/zero")
    with pytest.raises(OSError):
        read_bounded(link, 1024)
    big = tmp_path / "big.log"
    big.write_bytes(b"x" * 5000 + b"END")
    assert read_bounded(big, 100, tail=True).endswith("END")
    assert len(read_bounded(big, 100, tail=True)) == 100


def test_every_inherited_recovery_setting_is_reset() -> None:
    for name in (
        "recovery_target",
        "recovery_target_time",
        "recovery_target_xid",
        "recovery_target_name",
        "recovery_target_lsn",
        "recovery_min_apply_delay",
        "recovery_end_command",
        "archive_cleanup_command",
        "archive_library",
        "external_pid_file",
    ):
        assert name in RECOVERY_RESETS
    assert RECOVERY_RESETS["recovery_target_inclusive"] == "on"
