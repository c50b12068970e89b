"""A CLI backup and restore never depend on the Prefect server answering (issue 24): with
``PREFECT_API_URL`` naming a dead port, with no Prefect API at all, with a server that accepts
connections and never answers, and on a host whose cores are busy, the same core run goes on
without Prefect, says so in one line, records it in the backup log, and the restored data
equals the source."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.chain import content_digest
from tests.support.keys import key_env

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "backupflow_app"]


@contextmanager
def silent_server() -> Iterator[str]:
    """A loopback port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def dead_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


@contextmanager
def busy_cores() -> Iterator[None]:
    """Both cores busy (a CPU hog per core) while the block runs."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@contextmanager
def api(case: str) -> Iterator[str | None]:
    if case == "silent-server":
        with silent_server() as url:
            yield url
    elif case == "dead-port":
        yield dead_port()
    elif case == "no-server-busy-host":
        with busy_cores():
            yield None
    else:
        yield None


@pytest.mark.parametrize("case", ["dead-port", "no-server", "silent-server", "no-server-busy-host"])
def test_backup_and_restore_run_without_prefect(case: str, tmp_path: Path) -> None:
    live = tmp_path / "app" / "gantt.db"
    live.parent.mkdir()
    conn = sqlite3.connect(live)
    with conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(2000)])
    conn.close()
    log = tmp_path / "backup.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BACKUPFLOW_", "PREFECT_"))},
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "BACKUPFLOW_REPOSITORY__PRIMARY__URL": str(tmp_path / "backups"),
        "BACKUPFLOW_REPOSITORY__SECONDARY__URL": str(tmp_path / "secondary"),
        "BACKUPFLOW_REPOSITORY__DR__URL": str(tmp_path / "dr"),
        "BACKUPFLOW_DATABASE__NAME": "gantt",
        "BACKUPFLOW_DATABASE__SQLITE_PATH": str(live),
        "BACKUPFLOW_BACKUP_LOG": str(log),
        "BACKUPFLOW_STAGING_DIR": str(tmp_path / "staging"),
        "BACKUPFLOW_PREFECT_WAIT_SECONDS": "3",
        **key_env(),
    }
    with api(case) as url:
        if url is not None:
            env["PREFECT_API_URL"] = url

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*CLI, *args], env=env, capture_output=True, text=True, timeout=300, check=False
            )

        backup = run("backup", "database")
        restored = run("restore", "database", "--latest", "--into", str(live.parent / "r.db"))
    for done in (backup, restored):
        assert done.returncode == 0, done.stderr
        notes = [line for line in done.stderr.splitlines() if "runs without Prefect" in line]
        assert len(notes) == 1, done.stderr
        assert "Traceback" not in done.stderr
    assert "full backup" in backup.stdout and "restored gantt" in restored.stdout
    assert "target_time: none given, so the latest state" in restored.stderr
    assert content_digest(live.parent / "r.db") == content_digest(live)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    offline = [e for e in events if e["event"] == "run-without-prefect"]
    assert [e["flow"] for e in offline] == ["backup-database", "restore-database"]
    assert {"backup", "restore"} <= {e["event"] for e in events}
