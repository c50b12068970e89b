"""Issue 22, item 6: the scratch copy a killed restore leaves beside (or, for a file set,
inside) its target is removed by the next run once the grace period is over, and never
while the restore that made it still runs.

The restores here are real processes that do what a restore does before it is killed
(hold the target's restore lock, build the scratch under the engine's own name for it),
then are killed with SIGKILL; the next run is a real backup of the same live database or
file set.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupflow.backup_run import DatabaseSubject, FileSetSubject, run_backup
from backupflow.config import FileSetSettings, Settings
from backupflow.engines import open_engine
from backupflow.errors import RestoreTargetError
from backupflow.filesets.engine import FileSetEngine
from backupflow.leftovers import remove_dead_scratch
from backupflow.locks import target_lock
from backupflow.models import BackupKind
from backupflow.steps import DirectSteps
from backupflow.storage import open_tiers
from tests.support.chain import take_backup

ROOT = Path(__file__).resolve().parents[2]
HOURS = 3600.0

#: A restore killed while it builds: it holds the target's lock, as every restore does from
#: before its scratch exists until the scratch is gone, and builds the scratch.
_RESTORE = """
    import sys, time
    from pathlib import Path
    from backupflow.locks import target_lock
    staging, target, scratch = (Path(arg) for arg in sys.argv[1:4])
    kind = sys.argv[4]
    with target_lock(staging, target, run="restore-under-test"):
        if kind == "folder":
            scratch.mkdir(mode=0o700)
            (scratch / "data").mkdir(mode=0o700)
            (scratch / "data" / "base.tar").write_bytes(b"x" * 65536)
        else:
            scratch.write_bytes(b"SQLite format 3\\0" + b"x" * 65536)
        print("built", flush=True)
        time.sleep(600)
"""


class Restore:
    """A restore process building ``scratch`` for ``target``."""

    def __init__(self, settings: Settings, target: Path, scratch: Path, kind: str) -> None:
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        self.scratch = scratch
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_RESTORE), str(settings.staging_dir),
             str(target), str(scratch), kind],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "built", self.proc.stderr.read() if self.proc.stderr else ""

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        assert self.proc.returncode == -signal.SIGKILL


@pytest.fixture
def restores() -> Iterator[list[Restore]]:
    started: list[Restore] = []
    yield started
    for restore in started:
        if restore.proc.poll() is None:
            restore.kill()


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def _seed(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(str(i),) for i in range(200)])
    conn.close()


def test_a_killed_restores_scratch_beside_the_live_database_is_removed_by_the_next_backup(
    settings: Settings, tmp_path: Path, restores: list[Restore], caplog: pytest.LogCaptureFixture
) -> None:
    live = settings.database.sqlite_path
    _seed(live)
    engine = open_engine(settings)
    start = lambda: Restore(settings, live, engine.scratch_path(live), "file")  # noqa: E731
    killed_long_ago = start()
    killed_long_ago.kill()
    _age(killed_long_ago.scratch, 2 * HOURS)
    killed_just_now = start()
    killed_just_now.kill()  # dead, but younger than the 60-minute grace period
    running = start()
    restores.append(running)
    _age(running.scratch, 5 * HOURS)  # a long restore, still alive
    elsewhere = tmp_path / "not-ours"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("kept")
    _age(elsewhere, 5 * HOURS)
    planted = live.parent / f".{live.name}.restoring-deadbeef"
    planted.symlink_to(elsewhere)
    _age(planted, 5 * HOURS)
    assert killed_long_ago.scratch.name.startswith(f".{live.name}.restoring-")

    # While a restore into the live database runs, nothing named for it is touched: every
    # scratch there may be that restore's.
    assert take_backup(settings, BackupKind.FULL).id
    assert killed_long_ago.scratch.exists() and running.scratch.exists()

    running.kill()
    with caplog.at_level(logging.WARNING):
        assert take_backup(settings, BackupKind.FULL).id

    assert not killed_long_ago.scratch.exists()
    assert not running.scratch.exists()  # its process is gone now, and it is old
    assert killed_just_now.scratch.exists()  # within the grace period
    assert planted.is_symlink() and (elsewhere / "keep.txt").read_text() == "kept"
    assert f"removed {killed_long_ago.scratch}, the scratch copy of a restore" in caplog.text
    assert sorted(p.name for p in live.parent.iterdir()) == sorted(
        [live.name, killed_just_now.scratch.name, planted.name]
    )


def test_a_killed_in_place_file_set_restores_scratch_folder_is_removed_by_the_next_backup(
    settings: Settings, tmp_path: Path, restores: list[Restore]
) -> None:
    root = tmp_path / "api"
    root.mkdir()
    (root / "settings.toml").write_text("debug = false\n")
    settings = settings.model_copy(
        update={
            "files": settings.files.model_copy(
                update={"config": FileSetSettings(root=root, include=["**"])}
            )
        }
    )
    engine = FileSetEngine("config", settings.files.config, staging_dir=settings.staging_dir)
    killed = Restore(settings, root, engine.scratch_path(root), "folder")
    killed.kill()
    _age(killed.scratch, 2 * HOURS)
    assert killed.scratch.parent == root and (killed.scratch / "data" / "base.tar").exists()
    # A restore into a new sub-folder builds beside that sub-folder, under its own name:
    # never taken for a scratch of the root.
    into_new = root / "restored"
    other = Restore(settings, into_new, engine.scratch_path(into_new), "folder")
    restores.append(other)
    _age(other.scratch, 2 * HOURS)
    assert other.scratch.parent == root and other.scratch.name.startswith(".restored.")

    outcome = run_backup(FileSetSubject("config", settings), open_tiers(settings), DirectSteps())

    assert outcome.manifest.id
    assert not killed.scratch.exists()
    assert other.scratch.exists() and (other.scratch / "data" / "base.tar").exists()
    assert (root / "settings.toml").read_text() == "debug = false\n"


def test_a_restore_that_holds_its_lock_keeps_its_scratch_and_a_sweep_inside_the_lock_works(
    settings: Settings, tmp_path: Path
) -> None:
    live = settings.database.sqlite_path
    _seed(live)
    engine = open_engine(settings)
    scratch = engine.scratch_path(live)
    scratch.write_bytes(b"half-built")
    _age(scratch, 5 * HOURS)
    cutoff = time.time() - HOURS
    with target_lock(settings.staging_dir, live):
        # another process's sweep (a backup) sees the lock held and leaves it
        assert (
            remove_dead_scratch(
                open_engine(settings), live, lock_dir=settings.staging_dir, older_than=cutoff
            )
            == []
        )
        assert scratch.exists()
        # the restore itself, holding the lock, sweeps what earlier restores left
        assert remove_dead_scratch(
            engine, live, lock_dir=settings.staging_dir, older_than=cutoff, locked=True
        ) == [scratch]
    assert not scratch.exists()


def test_two_spellings_of_one_target_share_its_restore_lock(tmp_path: Path) -> None:
    real = tmp_path / "data"
    real.mkdir()
    linked = tmp_path / "via-link"
    linked.symlink_to(real)
    with (
        target_lock(tmp_path / "locks", real / "app.db"),
        pytest.raises(RestoreTargetError, match=r"^another restore is writing"),
        target_lock(tmp_path / "locks", linked / "app.db"),
    ):
        pass


def test_a_backup_of_a_database_whose_folder_holds_no_scratch_is_unaffected(
    settings: Settings,
) -> None:
    live = settings.database.sqlite_path
    _seed(live)
    outcome = run_backup(
        DatabaseSubject(open_engine(settings), settings), open_tiers(settings), DirectSteps()
    )
    assert outcome.complete
    assert sorted(p.name for p in live.parent.iterdir()) == [live.name]


def test_a_restore_into_the_same_target_removes_what_a_killed_restore_left(
    settings: Settings, restores: list[Restore]
) -> None:
    """The next restore into the target sweeps too (it holds the target's lock, so every
    older scratch named for that target is a dead one's), and still restores."""
    from tests.support.chain import content_digest, restore

    live = settings.database.sqlite_path
    _seed(live)
    take_backup(settings, BackupKind.FULL)
    engine = open_engine(settings)
    into = live.parent / "restored.db"
    killed = Restore(settings, into, engine.scratch_path(into), "file")
    killed.kill()
    _age(killed.scratch, 2 * HOURS)
    young = Restore(settings, into, engine.scratch_path(into), "file")
    young.kill()  # dead, but within the grace period: kept

    restore(settings, None, into)

    assert not killed.scratch.exists()
    assert young.scratch.exists()
    assert content_digest(into) == content_digest(live)
