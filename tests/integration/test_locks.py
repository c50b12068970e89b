"""One writer per restore target, one database backup at a time per host: lock files that
other processes meet."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from backupflow.config import Settings, use_settings
from backupflow.errors import RestoreTargetError
from backupflow.locks import LockHeldError, lock_path, target_lock
from backupflow.models import BackupKind
from tests.support.chain import content_digest, restore, take_backup

ROOT = Path(__file__).resolve().parents[2]


def _child(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_HOLD_TARGET = """
    import sys, time
    from pathlib import Path
    from backupflow.locks import target_lock
    with target_lock(Path(sys.argv[1]), Path(sys.argv[2]), run="nightly-drill"):
        print("held", flush=True)
        time.sleep(float(sys.argv[3]))
"""


def _wait_for(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == line, proc.stderr.read() if proc.stderr else ""


def _seed(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(str(i),) for i in range(500)])
    conn.close()


def test_a_second_restore_into_the_same_target_is_refused_while_the_first_writes(
    settings: Settings, tmp_path: Path
) -> None:
    _seed(settings.database.sqlite_path)
    take_backup(settings, BackupKind.FULL)
    target = tmp_path / "app" / "copy.db"
    holder = _child(_HOLD_TARGET, str(settings.staging_dir), str(target), "30")
    try:
        _wait_for(holder, "held")
        with (
            use_settings(settings),
            pytest.raises(RestoreTargetError, match=r"^another restore is writing") as refused,
        ):
            restore(settings, None, target)
        message = str(refused.value)
        assert str(target) in message and "run nightly-drill" in message
        assert message.endswith("; wait for it or choose another target.")
        assert not target.exists()  # nothing was written
        # Another target is not held up.
        with use_settings(settings):
            restore(settings, None, tmp_path / "app" / "other.db")
    finally:
        holder.kill()
        holder.wait()
    # The holder died without letting go: the kernel dropped its lock, and the restore runs.
    with use_settings(settings):
        restore(settings, None, target)
    assert content_digest(target) == content_digest(settings.database.sqlite_path)
    assert not os.listdir(settings.staging_dir / "locks")  # lock files do not pile up


def test_lock_files_are_private_and_named_by_a_hash(tmp_path: Path) -> None:
    odd = "GanttDB; DROP TABLE x/../../etc"
    path = lock_path(tmp_path, "restore", odd)
    assert path.parent == tmp_path / "locks" and path.name.startswith("restore-")
    assert "/" not in path.name[len("restore-") :] and "DROP" not in path.name
    with target_lock(tmp_path, odd):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        with (
            pytest.raises(LockHeldError, match=f"process {os.getpid()}"),
            target_lock(tmp_path, odd),
        ):
            pass  # the same process, a second writer: refused too
    assert not path.exists()


_BACKUP = """
    import logging, sys, time
    from pathlib import Path
    from backupflow.config import load_settings
    from flows._slots import slot
    logging.basicConfig(level=logging.INFO, format="%(message)s", filename=sys.argv[4])
    settings = load_settings(staging_dir=Path(sys.argv[1]), concurrency_limit=sys.argv[2] or None)
    release = Path(sys.argv[3])
    with slot(settings):
        start = time.time()
        print("held", flush=True)
        while not release.exists():  # hold the slot until the test lets go
            time.sleep(0.02)
        print(f"{start} {time.time()}", flush=True)
"""


def _wait_for_text(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path.name} never said {text!r}")


@pytest.mark.parametrize("limit", ["", "backupflow-database-backups"], ids=["no-limit", "no-api"])
def test_backups_on_one_host_wait_for_each_other_on_the_lock_file(
    tmp_path: Path, limit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes taking the backup slot as the CLI does (no Prefect API, so a configured
    limit cannot be held): the second waits, says so, and starts after the first ends."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    staging = tmp_path / "staging"
    released = tmp_path / "release-first"
    logs = (tmp_path / "first.log", tmp_path / "second.log")
    first = _child(_BACKUP, str(staging), limit, str(released), str(logs[0]))
    _wait_for(first, "held")
    second = _child(_BACKUP, str(staging), limit, str(tmp_path / "release-second"), str(logs[1]))
    # The second says it waits while the first still holds the slot; only then let go.
    _wait_for_text(logs[1], "waiting for the database-backup slot held by another run")
    released.touch()
    out_first, _ = first.communicate(timeout=60)
    _wait_for(second, "held")
    (tmp_path / "release-second").touch()
    out_second, err_second = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, err_second
    (_start1, end1) = map(float, out_first.split()[-2:])
    (start2, _end2) = map(float, out_second.split()[-2:])
    assert start2 >= end1 - 0.05, "the second backup ran while the first held the slot"
    assert "held by another run (process" in logs[1].read_text()
