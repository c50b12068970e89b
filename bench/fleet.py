"""The fleet's scale, measured on one machine (issue 25): ``python bench/fleet.py``.

1. A real ``prefect server`` and a fleet file of ``--sites`` small SQLite sites sharing three
   tiers (a folder, and two S3 buckets on a moto server on loopback).
2. Bootstrap: ``deployments/bootstrap.py`` deploys the fleet (timed), then again with
   nothing changed (timed; it must write nothing).
3. Fleet health over every site and tier, after one full backup per site: its time and its
   storage requests (S3 requests counted at botocore's endpoint, folder reads at the
   storage), against the budget of two per series and tier.
4. The hourly storm: ``--storm`` sites' log backups all scheduled for the same second, run
   by two workers (``--worker-limit`` runs each at a time; the per-tier upload limits
   apply): p50/p99 start delay, time until the last completes, runs lost (not Completed),
   and the Prefect server's peak RSS over the whole run (its process tree, sampled).

It prints one line a scenario and ends with ``FLEET bootstrap_s=… rerun_s=… health_s=…
health_requests=… budget=… storm_p99_s=… storm_done_s=… storm_lost=… server_peak_mib=…``.
``--quick`` (make test) runs the same on a few sites.  Exits 1 when a bound is broken:
bootstrap ≥ 180 s, rerun ≥ 60 s, requests over budget, any run lost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from backupflow.keys import generate_keys  # noqa: E402

PREFECT = [sys.executable, "-m", "prefect"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise SystemExit(f"bench: waited {seconds:.0f} s for {what}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except OSError:
        return False


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class TreeRss:
    """Samples the RSS of a process and its descendants; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children.get(pid, [])
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in self._tree():
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
                except OSError:
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(0.5)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _fleet_file(work: Path, sites: int, keys: Any, s3: str) -> Path:
    entries = []
    for index in range(sites):
        name = f"site-{index:03d}"
        db = work / "sites" / name / "app.db"
        db.parent.mkdir(parents=True)
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"r{i}",) for i in range(200)])
        conn.close()
        entries.append(
            {
                "name": name,
                "file_sets": [],
                "staging_dir": str(work / "sites" / name / "staging"),
                "backup_log": str(work / "sites" / name / "backup.log"),
                "database": {"engine": "sqlite", "name": "gantt", "sqlite_path": str(db)},
            }
        )
    s3_tier = {"endpoint_url": s3, "addressing_style": "path", "region": "us-east-1"}
    document = {
        "version": 1,
        "fleet": {"queue": "fleet", "tier_upload_slots": 4},
        "defaults": {
            "timezone": "UTC",
            "crypto": {"recipients": [keys.recipient], "verify_keys": [keys.verify_key]},
            "repository": {
                "primary": {"url": str(work / "tiers" / "primary")},
                "secondary": {"url": "s3://fleet-secondary", **s3_tier},
                "dr": {"url": "s3://fleet-dr", **s3_tier},
            },
        },
        "sites": entries,
    }
    import yaml

    path = work / "fleet.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _backups(path: Path, keys: Any) -> float:
    """One full backup per site, in-process (what the fleet health then reads)."""
    from backupflow.backup_run import DatabaseSubject, run_backup
    from backupflow.config import KeySettings
    from backupflow.engines import open_engine
    from backupflow.fleet import load_fleet
    from backupflow.steps import DirectSteps
    from backupflow.storage import open_tiers

    started = time.perf_counter()
    crypto = KeySettings(
        recipients=[keys.recipient],
        identities=keys.identity,
        signing_key=keys.signing_key,
        verify_keys=[keys.verify_key],
    )
    for site in load_fleet(path).sites:
        settings = site.settings.model_copy(update={"crypto": crypto})
        run_backup(
            DatabaseSubject(open_engine(settings), settings), open_tiers(settings), DirectSteps()
        )
    return time.perf_counter() - started


def _health(path: Path) -> tuple[float, int, int, list[Any]]:
    """Fleet health over every site (no orchestrator facts): seconds, storage requests
    counted where they happen, and the budget (two per series and tier)."""
    import botocore.endpoint

    from backupflow.fleet import load_fleet
    from backupflow.storage.local import LocalStorage
    from flows.fleet_health import fleet_rows

    counted = {"n": 0}
    make_request = botocore.endpoint.Endpoint.make_request
    local_list, local_open = LocalStorage.list, LocalStorage.open

    def count_s3(self: Any, *args: Any, **kwargs: Any) -> Any:
        counted["n"] += 1
        return make_request(self, *args, **kwargs)

    def count_list(self: Any, *args: Any, **kwargs: Any) -> Any:
        counted["n"] += 1
        return local_list(self, *args, **kwargs)

    def count_open(self: Any, *args: Any, **kwargs: Any) -> Any:
        counted["n"] += 1
        return local_open(self, *args, **kwargs)

    fleet = load_fleet(path)
    botocore.endpoint.Endpoint.make_request = count_s3  # type: ignore[method-assign]
    LocalStorage.list, LocalStorage.open = count_list, count_open  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        rows, _internal = fleet_rows(fleet, {}, datetime.now(UTC))
        seconds = time.perf_counter() - started
    finally:
        botocore.endpoint.Endpoint.make_request = make_request  # type: ignore[method-assign]
        LocalStorage.list, LocalStorage.open = local_list, local_open  # type: ignore[method-assign]
    series_tiers = sum(3 for _ in fleet.sites)  # one database series, three tiers
    return seconds, counted["n"], 2 * series_tiers, rows


async def _schedule_storm(url: str, names: list[str], at: datetime) -> list[str]:
    from prefect.client.orchestration import PrefectClient
    from prefect.states import Scheduled

    async with PrefectClient(api=url) as client:
        ids = []
        for name in names:
            deployment = await client.read_deployment_by_name(f"backup-database/{name}-log")
            run = await client.create_flow_run_from_deployment(
                deployment.id, state=Scheduled(scheduled_time=at)
            )
            ids.append(str(run.id))
        return ids


async def _runs(url: str, ids: list[str]) -> list[Any]:
    from uuid import UUID

    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with PrefectClient(api=url) as client:
        found: list[Any] = []
        for start in range(0, len(ids), 200):
            found += await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[UUID(i) for i in ids[start : start + 200]])
                ),
                limit=200,
            )
        return found


def _storm(url: str, env: dict[str, str], path: Path, count: int, limit: int) -> dict[str, Any]:
    """``count`` sites' log backups at one instant, two workers serving half the sites each."""
    from backupflow.fleet import load_fleet

    sites = [site.name for site in load_fleet(path).sites][:count]
    halves = [sites[0::2], sites[1::2]]
    workers = []
    for half in halves:
        worker_env = {**env, "BACKUPFLOW_FLEET": str(path), "BACKUPFLOW_SITE": ",".join(half)}
        queues = [arg for name in half for arg in ("--work-queue", name)]
        workers.append(
            subprocess.Popen(
                [
                    *PREFECT,
                    "worker",
                    "start",
                    "--pool",
                    "backupflow",
                    "--limit",
                    str(limit),
                    *queues,
                ],
                cwd=ROOT,
                env=worker_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    try:
        at = datetime.now(UTC) + timedelta(seconds=20)
        ids = asyncio.run(_schedule_storm(url, sites, at))

        def finished() -> list[Any] | None:
            runs = asyncio.run(_runs(url, ids))
            final = [r for r in runs if r.state and r.state.is_final()]
            return runs if len(final) == len(ids) else None

        runs = _wait(finished, 60 * 30, "the storm's runs to finish")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    delays = sorted(
        max(0.0, (r.start_time - at).total_seconds()) for r in runs if r.start_time is not None
    )
    ends = [r.end_time for r in runs if r.end_time is not None]
    lost = [r for r in runs if not r.state.is_completed()]
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))] if delays else float("nan")
    return {
        "runs": len(runs),
        "lost": len(lost),
        "lost_states": sorted({r.state.name for r in lost}),
        "lost_messages": [f"{r.name}: {r.state.message}" for r in lost],
        "p50": statistics.median(delays) if delays else float("nan"),
        "p99": p99,
        "done": (max(ends) - at).total_seconds() if ends else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--storm", type=int, default=50)
    parser.add_argument("--worker-limit", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="a few sites (make test)")
    args = parser.parse_args()
    if args.quick:
        args.sites, args.storm = 2, 2
    work = Path(tempfile.mkdtemp(prefix="bf-fleet-bench-"))
    keys = generate_keys()
    port, s3_port = _free_port(), _free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BACKUPFLOW_"))}
    env = {
        **base,
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "BACKUPFLOW_PROJECT_DIR": str(ROOT),
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        # the bench host's secrets: one host serving every bench site
        "BACKUPFLOW_CRYPTO__SIGNING_KEY": keys.signing_key,
        "BACKUPFLOW_CRYPTO__IDENTITIES": keys.identity,
    }
    os.environ.update(
        {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    )
    s3 = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = subprocess.Popen(
        [*PREFECT, "server", "start"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    rss = TreeRss(server.pid)
    try:
        s3_url = f"http://127.0.0.1:{s3_port}"
        _wait(lambda: _listening(s3_port), 60, "moto to answer")
        import boto3

        client = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
        for bucket in ("fleet-secondary", "fleet-dr"):
            client.create_bucket(Bucket=bucket)
        _wait(lambda: _healthy(env["PREFECT_API_URL"]), 120, "the Prefect server to answer")
        path = _fleet_file(work, args.sites, keys, s3_url)
        admin = {**env, "BACKUPFLOW_FLEET": str(path)}
        admin.pop("BACKUPFLOW_CRYPTO__SIGNING_KEY")
        admin.pop("BACKUPFLOW_CRYPTO__IDENTITIES")
        timings = []
        for label in ("bootstrap", "rerun"):
            started = time.perf_counter()
            boot = subprocess.run(
                [sys.executable, "deployments/bootstrap.py"],
                cwd=ROOT,
                env=admin,
                capture_output=True,
                text=True,
                check=False,
            )
            timings.append(time.perf_counter() - started)
            if boot.returncode != 0:
                raise SystemExit(f"bench: the {label} failed: {boot.stderr or boot.stdout}")
            print(
                f"{label} of {args.sites} sites: {timings[-1]:.1f} s: {boot.stdout.splitlines()[0]}"
            )
        if "0 deployments created, 0 updated" not in boot.stdout:
            raise SystemExit(f"bench: the rerun wrote deployments: {boot.stdout}")
        seconds = _backups(path, keys)
        print(f"one full backup of each of {args.sites} sites, in-process: {seconds:.1f} s")
        health_s, requests, budget, rows = _health(path)
        states = sorted({row.state.value for row in rows})
        print(
            f"fleet health over {args.sites} sites x 3 tiers: {health_s:.1f} s, {requests} "
            f"storage requests (budget {budget}); states {states}"
        )
        storm = _storm(env["PREFECT_API_URL"], env, path, args.storm, args.worker_limit)
        print(
            f"storm of {storm['runs']} log backups at one instant: start delay p50 "
            f"{storm['p50']:.1f} s, p99 {storm['p99']:.1f} s; all done after "
            f"{storm['done']:.1f} s; lost {storm['lost']} {storm['lost_states']}"
        )
        for line in storm["lost_messages"]:
            print(f"  lost: {line}")

    finally:
        peak = rss.stop()
        for process in (server, s3):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(f"Prefect server peak RSS (process tree): {peak / 2**20:.0f} MiB")
    print(
        f"FLEET sites={args.sites} bootstrap_s={timings[0]:.1f} rerun_s={timings[1]:.1f} "
        f"health_s={health_s:.1f} health_requests={requests} budget={budget} "
        f"storm={storm['runs']} storm_p99_s={storm['p99']:.1f} storm_done_s={storm['done']:.1f} "
        f"storm_lost={storm['lost']} server_peak_mib={peak / 2**20:.0f}"
    )
    broken = []
    if timings[0] >= 180:
        broken.append(f"bootstrap took {timings[0]:.0f} s (bound 180)")
    if timings[1] >= 60:
        broken.append(f"the rerun took {timings[1]:.0f} s (bound 60)")
    if requests > budget:
        broken.append(f"fleet health made {requests} requests (budget {budget})")
    if storm["lost"]:
        broken.append(f"{storm['lost']} storm runs did not complete")
    for line in broken:
        print(f"bench: {line}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
