"""A fleet of two hosts on one real ``prefect server``: the bootstrap deploys the fleet file,
two workers (separate settings, separate secrets, and, where the tests run as root, separate
OS users) each run only their own site's jobs, every full backup is restore-tested on its
own, and a stopped worker leaves its site's runs late, which fleet health reports while the
other site carries on."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
)

from backupflow.keys import GeneratedKeys, generate_keys
from tests.server.test_real_server import PREFECT, ROOT, _free_port, _stop
from tests.support.pgcluster import cluster_python

SITES = ("alpha", "beta")


def _other_user() -> pwd.struct_passwd | None:
    """The OS user the second host's worker runs as: ``postgres`` when the tests run as root
    (make bootstrap creates it), else None (the same user, separate settings only)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def _database(path: Path, rows: int, owner: pwd.struct_passwd | None) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO tasks (name) VALUES (?)", [(f"t{i}",) for i in range(rows)])
    conn.close()
    if owner is not None:
        for item in (path.parent, path):
            os.chown(item, owner.pw_uid, owner.pw_gid)


@pytest.fixture
def estate_dir(tmp_path: Path) -> Iterator[Path]:
    """pytest's own folders are private to this user: another OS user's host needs one it
    can enter (each site's folders inside it are private to their host)."""
    if _other_user() is None:
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="bf-fleet-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def estate(estate_dir: Path) -> Iterator[dict[str, Any]]:
    tmp_path = estate_dir
    port = _free_port()
    user = _other_user()
    keys: dict[str, GeneratedKeys] = {site: generate_keys() for site in SITES}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BACKUPFLOW_"))}
    common = {
        **base,
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "BACKUPFLOW_PROJECT_DIR": str(ROOT),
    }
    tmp_path.chmod(0o755)
    shared = {tier: tmp_path / "tiers" / tier for tier in ("primary", "secondary", "dr")}
    sites: list[dict[str, Any]] = []
    for site in SITES:
        owner = user if site == "beta" else None
        home = tmp_path / site
        home.mkdir(mode=0o700)
        _database(home / "app" / f"{site}.db", 300 if site == "alpha" else 200, owner)
        for tier in shared.values():
            (tier / site).mkdir(parents=True, mode=0o700)
            if owner is not None:
                os.chown(tier / site, owner.pw_uid, owner.pw_gid)
        if owner is not None:
            os.chown(home, owner.pw_uid, owner.pw_gid)
        sites.append(
            {
                "name": site,
                "queue": f"{site}-host",
                "file_sets": [],
                "staging_dir": str(home / "staging"),
                "backup_log": str(home / "backup.log"),
                "database": {
                    "engine": "sqlite",
                    "name": "gantt",  # the same name on both sites: artifacts must not mix
                    "sqlite_path": str(home / "app" / f"{site}.db"),
                },
                "crypto": {
                    "recipients": [keys[site].recipient],
                    "verify_keys": [keys[site].verify_key],
                },
            }
        )
    fleet = {
        "version": 1,
        "fleet": {"queue": "estate", "tier_upload_slots": 2},
        "defaults": {
            "timezone": "Asia/Seoul",
            "repository": {tier: {"url": str(path)} for tier, path in shared.items()},
        },
        "sites": sites,
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    path.chmod(0o644)
    hosts: dict[str, dict[str, str]] = {}
    for site in SITES:
        home = tmp_path / site
        hosts[site] = {
            **common,
            "HOME": str(home),
            "PREFECT_HOME": str(home / "prefect"),
            "BACKUPFLOW_FLEET": str(path),
            "BACKUPFLOW_SITE": site,
            # this host's secrets, and no other host's
            "BACKUPFLOW_CRYPTO__SIGNING_KEY": keys[site].signing_key,
            "BACKUPFLOW_CRYPTO__IDENTITIES": keys[site].identity,
        }
    server_env = {
        **common,
        "PREFECT_HOME": str(tmp_path / "server"),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS": "5",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": "2",
    }
    server = subprocess.Popen(
        [*PREFECT, "server", "start"],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait(lambda: _healthy(common["PREFECT_API_URL"]), 90, "the server to answer")
        yield {
            "tmp": tmp_path,
            "fleet": path,
            "url": common["PREFECT_API_URL"],
            "admin": {
                **common,
                "PREFECT_HOME": str(tmp_path / "admin"),
                "BACKUPFLOW_FLEET": str(path),
            },
            "hosts": hosts,
            "user": user,
            "shared": shared,
        }
    finally:
        _stop(server)


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except OSError:
        return False


def _wait(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"waited {seconds} s for {what}")


def _run(
    args: list[str], env: dict[str, str], timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _worker(
    env: dict[str, str], *args: str, user: pwd.struct_passwd | None = None
) -> subprocess.Popen[bytes]:
    home = Path(env.get("HOME", "/tmp"))
    log = open(home / "worker.log" if home.is_dir() else os.devnull, "ab")  # noqa: SIM115
    python = sys.executable
    if user is not None:  # another OS user: a Python it can run, with this checkout's packages
        python = cluster_python()
        paths = [sysconfig.get_paths()["purelib"], str(ROOT / "src"), str(ROOT)]
        env = {**env, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.Popen(
        [python, "-m", "backupflow_app", "worker", *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        user=user.pw_uid if user is not None else None,
        group=user.pw_gid if user is not None else None,
    )


async def _query(url: str, what: str, **kwargs: Any) -> Any:
    async with PrefectClient(api=url) as client:
        return await getattr(client, what)(**kwargs)


def _runs_of(url: str, full_name: str) -> list[Any]:
    deployment = asyncio.run(_query(url, "read_deployment_by_name", name=full_name))
    return list(
        asyncio.run(
            _query(
                url,
                "read_flow_runs",
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])
                ),
            )
        )
    )


def _artifact(url: str, key: str) -> list[dict[str, Any]]:
    found = asyncio.run(
        _query(
            url, "read_artifacts", artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    )
    if not found:
        return []
    latest = max(found, key=lambda a: a.created)
    rows: list[dict[str, Any]] = json.loads(str(latest.data))
    return rows


def test_two_hosts_each_run_their_own_site_and_every_full_is_restore_tested(
    estate: dict[str, Any],
) -> None:
    url, admin, hosts = estate["url"], estate["admin"], estate["hosts"]
    boot = _run([sys.executable, "deployments/bootstrap.py"], admin)
    assert boot.returncode == 0, boot.stdout + boot.stderr
    assert "deployments created" in boot.stdout
    again = _run([sys.executable, "deployments/bootstrap.py"], admin)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 deployments created, 0 updated" in again.stdout, again.stdout

    workers = {
        "alpha": _worker(hosts["alpha"]),
        "beta": _worker(hosts["beta"], user=estate["user"]),
        "fleet": _worker({**admin, "HOME": str(estate["tmp"])}, "--fleet-jobs"),
    }
    try:
        for site in ("alpha", "beta"):
            full = _run(
                [*PREFECT, "deployment", "run", f"backup-database/{site}-full", "--watch"], admin
            )
            assert full.returncode == 0, full.stdout + full.stderr
        # Each site's backup is in its own folder of each shared tier, written by its own
        # host (where the tests run as root, beta's worker runs as another OS user).
        for site in SITES:
            for tier in estate["shared"].values():
                manifests = list((tier / site).rglob("*.manifest.json"))
                assert len(manifests) == 1, (tier, site)
                if estate["user"] is not None:
                    owner = manifests[0].stat().st_uid
                    assert (owner == estate["user"].pw_uid) == (site == "beta")
        # The automation tests each full on its own, on the site's host, and the per-site
        # history artifact shows its RTO.
        for site in SITES:
            runs = _wait(
                lambda site=site: [
                    r
                    for r in _runs_of(url, f"restore-test/{site}")
                    if r.state and r.state.is_final()
                ],
                240,
                f"the restore test of {site} to finish",
            )
            assert runs[0].state.is_completed(), runs[0].state
            rows = _artifact(url, f"{site}-restore-test")
            assert rows and rows[0]["result"] == "passed", rows
            assert 0 < rows[0]["rto_seconds"] < 240 * 60 and rows[0]["chain_bytes"] > 0
        assert not _artifact(url, "restore-test")  # never an artifact without its site

        # Stop beta's host: its runs go late, alpha's carry on, fleet health says so.
        _stop(workers["beta"])
        late = _run([*PREFECT, "deployment", "run", "backup-database/beta-log"], admin)
        assert late.returncode == 0, late.stdout + late.stderr
        log = _run([*PREFECT, "deployment", "run", "backup-database/alpha-log", "--watch"], admin)
        assert log.returncode == 0, log.stdout + log.stderr
        _wait(
            lambda: [
                r for r in _runs_of(url, "backup-database/beta-log") if r.state_name == "Late"
            ],
            120,
            "beta's log backup to be marked Late",
        )
        health = _run([*PREFECT, "deployment", "run", "fleet-health/fleet", "--watch"], admin)
        assert health.returncode != 0  # a site needs attention: the run fails and tells
        rows = _artifact(url, "fleet-health")
        worker_log = (estate["tmp"] / "worker.log").read_text(errors="replace")[-3000:]
        assert [r["site"] for r in rows] == ["beta", "alpha"], health.stdout + worker_log
        assert rows[0]["state"] == "late runs" and "1 late run" in rows[0]["detail"], rows
        assert rows[1]["state"] == "ok", rows
        assert rows[1]["recovery_age_minutes"] < 60
        assert rows[1]["predicted_restore_minutes"] != "—"
        runs = _runs_of(url, "backup-database/beta-log")
        assert all(not (r.state and r.state.is_final()) for r in runs)  # waiting, not lost
    finally:
        for process in workers.values():
            _stop(process)
