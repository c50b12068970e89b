"""A real ``prefect server`` and a process worker: bootstrap, deploy prefect.yaml, run the log
backup and the DR drill through ``prefect deployment run``, read the drill's artifact."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from tests.support.keys import key_env

ROOT = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]

EXPECTED = {  # deployment -> (cron, parameters)
    "database-full": ("0 2 * * *", {"kind": "full"}),
    "database-diff": ("0 */4 * * *", {"kind": "diff"}),
    "database-log": ("0 * * * *", {"kind": "log"}),
    "config": ("0 3 * * *", {"file_set": "config"}),
    "uploads": ("0 3 * * *", {"file_set": "uploads"}),
    "logs": ("0 4 * * *", {"file_set": "logs"}),
    "backup-health": ("*/15 * * * *", {}),
    "dr-drill": ("0 10 1 1,4,7,10 *", {"source": "dr"}),
    "backup-review": ("0 9 2 1,4,7,10 *", {}),
    "verify": ("0 5 * * 0", {}),
    "restore-database": (None, {}),
    "restore-files": (None, {}),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BACKUPFLOW_"))}
    live = tmp_path / "app" / "gantt.db"
    live.parent.mkdir()
    conn = sqlite3.connect(live)
    with conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO tasks (name) VALUES (?)", [(f"t{i}",) for i in range(500)])
    conn.close()
    return {
        **base,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "BACKUPFLOW_PROJECT_DIR": str(ROOT),
        "BACKUPFLOW_DATABASE__NAME": "gantt",
        "BACKUPFLOW_DATABASE__SQLITE_PATH": str(live),
        "BACKUPFLOW_REPOSITORY__PRIMARY__URL": str(tmp_path / "primary"),
        "BACKUPFLOW_REPOSITORY__SECONDARY__URL": str(tmp_path / "secondary"),
        "BACKUPFLOW_REPOSITORY__DR__URL": str(tmp_path / "dr"),
        "BACKUPFLOW_BACKUP_LOG": str(tmp_path / "backup.log"),
        "BACKUPFLOW_STAGING_DIR": str(tmp_path / "staging"),
        **key_env(),  # the worker signs, encrypts and (for the drill) decrypts
    }


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[str]:
    process = subprocess.Popen(
        [*PREFECT, "server", "start"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = env["PREFECT_API_URL"]
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("prefect server did not answer /api/health within 90 s")
        yield url
    finally:
        _stop(process)


async def _deployments(url: str) -> dict[str, Any]:
    async with PrefectClient(api=url) as client:
        return {d.name: d for d in await client.read_deployments()}


async def _artifact_rows(url: str, key: str) -> list[dict[str, Any]]:
    async with PrefectClient(api=url) as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    latest = max(found, key=lambda a: a.created)  # type: ignore[arg-type, return-value]
    rows: list[dict[str, Any]] = json.loads(str(latest.data))
    return rows


def _run(
    args: list[str], env: dict[str, str], timeout: int = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_deploy_and_run_through_a_worker(env: dict[str, str], server: str) -> None:
    boot = _run([sys.executable, "deployments/bootstrap.py"], env)
    assert boot.returncode == 0, boot.stdout + boot.stderr
    again = _run([sys.executable, "deployments/bootstrap.py"], env)  # idempotent
    assert again.returncode == 0, again.stdout + again.stderr

    deployments = asyncio.run(_deployments(server))
    for name, (cron, parameters) in EXPECTED.items():
        deployment = deployments[name]
        crons = [getattr(s.schedule, "cron", None) for s in deployment.schedules]
        assert crons == ([cron] if cron else []), name
        if cron:
            assert deployment.schedules[0].schedule.timezone == "Asia/Seoul"  # type: ignore[union-attr]
        assert dict(deployment.parameters) == parameters, name
    for name in ("database-full", "database-diff", "database-log", "dr-drill"):
        limit = deployments[name].global_concurrency_limit
        assert limit is not None and limit.limit == 1, name

    worker = subprocess.Popen(
        [*PREFECT, "worker", "start", "--pool", "backupflow"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        log = _run([*PREFECT, "deployment", "run", "backup-database/database-log", "--watch"], env)
        assert log.returncode == 0, log.stdout + log.stderr
        assert any((Path(env["BACKUPFLOW_REPOSITORY__DR__URL"])).rglob("*.manifest.json"))

        drill = _run([*PREFECT, "deployment", "run", "dr-drill/dr-drill", "--watch"], env)
        assert drill.returncode == 0, drill.stdout + drill.stderr
        rows = asyncio.run(_artifact_rows(server, "dr-drill-gantt"))
        assert rows[-1]["tier"] == "dr" and rows[-1]["result"] == "passed"
        assert rows[-1]["rto_minutes"] < 240 and rows[-1]["rpo_minutes"] < 60

        bad = _run(
            [
                *PREFECT,
                "deployment",
                "run",
                "restore-database/restore-database",
                "--param",
                "target_time=not-a-time",
                "--watch",
            ],
            env,
        )
        assert bad.returncode != 0
        assert not list(Path(env["BACKUPFLOW_DATABASE__SQLITE_PATH"]).parent.glob("*.restored-*"))
    finally:
        _stop(worker)
