"""The end-to-end demo: a sample Gantt-workload database, backed up and restored for real.

It needs no services, no root and no network: SQLite, a local folder as the primary tier,
an in-process S3 endpoint of moto's on loopback for the secondary and DR buckets (local
folders when moto is not installed), and Prefect's temporary local server.  Besides the
backups and restores it runs a DR drill from the DR tier alone and the health check, and says
what they measured as RTO and RPO against the objectives.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from rich.console import Console
from rich.table import Table

from backupflow.config import Settings, load_settings, use_settings
from backupflow.errors import RestoreTargetError
from backupflow.keys import GeneratedKeys, generate_keys, key_id
from backupflow.models import BackupKind, Category, Manifest
from backupflow.planning import RestorePlan
from backupflow.reporting import iso, manifest_row, plan_rows
from backupflow.storage import open_tiers
from backupflow.tiers import locate
from backupflow_app.demo_drill import expected_failure, run_drill, run_health
from backupflow_app.demo_files import run_file_demo

__all__ = ["create_sample_database", "database_digest", "demo_settings", "run_demo"]

_SCHEMA = """
CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL, starts DATE, ends DATE);
CREATE TABLE assignees (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE,
                        weekly_capacity_hours REAL NOT NULL);
CREATE TABLE tasks (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL REFERENCES projects,
                    name TEXT NOT NULL, assignee_id INTEGER REFERENCES assignees,
                    starts DATE NOT NULL, ends DATE NOT NULL, progress REAL DEFAULT 0);
CREATE TABLE workload (id INTEGER PRIMARY KEY, assignee_id INTEGER NOT NULL REFERENCES assignees,
                       task_id INTEGER NOT NULL REFERENCES tasks, day DATE NOT NULL,
                       hours REAL NOT NULL);
CREATE INDEX workload_by_day ON workload(assignee_id, day);
"""


def create_sample_database(path: Path, *, projects: int = 12, seed: int = 7) -> None:
    """Create a sample Gantt-workload database (projects, assignees, tasks, daily workload)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.executescript(_SCHEMA)
        conn.executemany(
            "INSERT INTO assignees VALUES (?, ?, ?, ?)",
            [(i, f"Engineer {i:02d}", f"eng{i:02d}@example.com", 40.0) for i in range(1, 41)],
        )
        start = date(2026, 9, 1)
        task_id = 0
        for project in range(1, projects + 1):
            begins = start + timedelta(days=rng.randrange(0, 30))
            conn.execute(
                "INSERT INTO projects VALUES (?, ?, ?, ?)",
                (project, f"Project {project:02d}", begins, begins + timedelta(days=120)),
            )
            for n in range(rng.randrange(20, 40)):
                task_id += 1
                t_start = begins + timedelta(days=rng.randrange(0, 90))
                t_end = t_start + timedelta(days=rng.randrange(3, 25))
                assignee = rng.randrange(1, 41)
                conn.execute(
                    "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (task_id, project, f"Task {project}.{n}", assignee, t_start, t_end, 0.0),
                )
                conn.executemany(
                    "INSERT INTO workload (assignee_id, task_id, day, hours) VALUES (?, ?, ?, ?)",
                    [
                        (assignee, task_id, t_start + timedelta(days=d), rng.choice((2, 4, 6, 8)))
                        for d in range((t_end - t_start).days)
                    ],
                )
    conn.close()


def database_digest(path: Path) -> str:
    """SHA-256 of the database's logical content (schema and every row)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        digest = hashlib.sha256()
        for line in conn.iterdump():
            digest.update(line.encode())
            digest.update(b"\n")
        return digest.hexdigest()
    finally:
        conn.close()


def _change(path: Path, step: int) -> str:
    """Apply the demo's n-th batch of application changes; returns what it did."""
    conn = sqlite3.connect(path)
    with conn:
        if step == 1:
            conn.execute("UPDATE tasks SET progress = 0.5 WHERE id % 3 = 0")
            done = "progress updated on a third of the tasks"
        elif step == 2:
            conn.execute(
                "INSERT INTO workload (assignee_id, task_id, day, hours) "
                "SELECT assignee_id, id, ends, 8 FROM tasks WHERE project_id = 2"
            )
            done = "overtime day added to project 2"
        else:
            conn.execute(
                "DELETE FROM workload WHERE task_id IN (SELECT id FROM tasks WHERE project_id = 3)"
            )
            conn.execute("DELETE FROM tasks WHERE project_id = 3")
            conn.execute("DELETE FROM projects WHERE id = 3")
            done = "project 3 deleted"
    conn.close()
    return done


SECONDARY_BUCKET = "workload-optimization-backups"
DR_BUCKET = "dr-workload-optimization-backups"


@contextmanager
def s3_endpoint() -> Iterator[str | None]:
    """An in-process S3 endpoint of moto's on loopback, with the seed's two buckets in two
    regions (DR with Object Lock); None when moto is not installed."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "demo-not-a-secret")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request lines
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    try:
        for bucket, region, lock in (
            (SECONDARY_BUCKET, "ap-northeast-2", False),
            (DR_BUCKET, "ap-northeast-1", True),
        ):
            client = boto3.client("s3", region_name=region, endpoint_url=url)
            client.create_bucket(
                Bucket=bucket,
                CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                ObjectLockEnabledForBucket=lock,
            )
        yield url
    finally:
        server.stop()


def demo_settings(
    workdir: Path, endpoint: str | None = None, keys: GeneratedKeys | None = None
) -> Settings:
    """Settings that keep everything inside ``workdir`` (and the demo's S3 endpoint), with
    ``keys`` (default: new throwaway keys) as the repository keys."""
    keys = keys or generate_keys()
    if endpoint is None:
        secondary: dict[str, object] = {"url": str(workdir / "s3-secondary")}
        dr: dict[str, object] = {"url": str(workdir / "s3-dr")}
    else:
        common = {"endpoint_url": endpoint, "addressing_style": "path"}
        secondary = {"url": f"s3://{SECONDARY_BUCKET}", "region": "ap-northeast-2", **common}
        dr = {
            "url": f"s3://{DR_BUCKET}",
            "region": "ap-northeast-1",
            "object_lock_mode": "GOVERNANCE",
            "object_lock_days": 1,
            **common,
        }
    return load_settings(
        repository={
            "primary": {"url": str(workdir / "backups")},
            "secondary": secondary,
            "dr": dr,
            "request_attempts": 2,
        },
        database={
            "engine": "sqlite",
            "name": "gantt_workload",
            "sqlite_path": workdir / "app" / "gantt_workload.db",
        },
        backup_log=workdir / "log" / "backup.log",
        staging_dir=workdir / "staging",
        restore_roots=[workdir / "restored", workdir / "restored-files"],
        files={
            "config": {"root": str(workdir / "api")},
            "logs": {"root": str(workdir / "api")},
            "uploads": {"root": str(workdir / "api")},
            # A stand-in for the seed's `pm2 reload ecosystem.config.js --env production`.
            "post_restore_hook": [
                sys.executable,
                "-c",
                "print('pm2 reload ecosystem.config.js --env production (demo stand-in)')",
            ],
            "post_restore_cwd": str(workdir / "api"),
        },
        crypto={
            "recipients": [keys.recipient],
            "identities": keys.identity,
            "signing_key": keys.signing_key,
            "verify_keys": [keys.verify_key],
        },
    )


@dataclass
class _Point:
    manifest: Manifest
    digest: str


def _plan_table(label: str, plan: RestorePlan[Manifest]) -> Table:
    table = Table(title=f"Plan for the {label} restore")
    for column in ("step", "id", "kind", "restore_point", "why"):
        table.add_column(column.replace("_", " "))
    for row in plan_rows(plan):
        table.add_row(*(str(row[c]) for c in ("step", "id", "kind", "restore_point", "why")))
    return table


def _catalog_table(settings: Settings) -> Table:
    holdings = locate(open_tiers(settings), Category.DATABASE.value, settings.database.name)
    table = Table(title="Catalog: every backup and the tiers holding it")
    for column in ("id", "kind", "restore point", "parent", "raw bytes", "stored bytes", "tiers"):
        table.add_column(column)
    for entry in holdings.sorted_entries():
        manifest, _tier = holdings.load(entry.id)
        row = manifest_row(manifest)
        table.add_row(
            row["id"],
            row["kind"],
            row["restore_point"],
            row["parent"],
            f"{row['raw_bytes']:,}",
            f"{row['stored_bytes']:,}",
            ", ".join(holdings.tier_names(entry.id)),
        )
    return table


def run_demo(workdir: Path, console: Console) -> bool:
    """Run the demo; returns True when every restore matched its restore point."""
    with s3_endpoint() as endpoint:
        return _run(workdir, console, endpoint)


def _run(workdir: Path, console: Console, endpoint: str | None) -> bool:
    from flows.backup_database import backup_database
    from flows.restore_database import restore_database

    if workdir.exists():
        shutil.rmtree(workdir)
    keys = generate_keys()
    settings = demo_settings(workdir, endpoint, keys)
    live = settings.database.sqlite_path
    create_sample_database(live)
    console.rule("[bold]backupflow demo")
    console.print(
        f"throwaway keys for this demo only, held in memory: age key {key_id(keys.recipient)} "
        f"encrypts every object, signing key {key_id(keys.verify_key)} signs every manifest "
        "(real ones: `backupflow key init`)"
    )
    repo = settings.repository
    console.print(f"sample database {live}: {live.stat().st_size:,} bytes")
    console.print(
        f"tiers: primary {repo.primary.url}; secondary {repo.secondary.url} "
        f"({repo.secondary.region or 'local folder'}); DR {repo.dr.url} "
        f"({repo.dr.region or 'local folder'}"
        + (", Object Lock" if repo.dr.object_lock_mode else "")
        + ")"
        + (
            f"; S3 served by moto on {endpoint}"
            if endpoint
            else "; moto absent: S3 tiers are folders"
        )
    )
    points: list[_Point] = []
    ok = True
    with use_settings(settings), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        schedule: list[BackupKind | int] = [
            BackupKind.FULL,
            1,
            BackupKind.DIFF,
            2,
            BackupKind.LOG,
            3,
            BackupKind.LOG,
        ]
        for item in schedule:
            if isinstance(item, int):
                console.print(f"[cyan]application change:[/cyan] {_change(live, item)}")
                continue
            manifest = backup_database(kind=item)[0]
            points.append(_Point(manifest, database_digest(live)))
            console.print(
                f"[green]{item.value} backup[/green] {manifest.id} "
                f"({manifest.stored_bytes:,} bytes stored on each of 3 tiers)"
            )
        console.print(_catalog_table(settings))

        diff, first_log = points[1].manifest, points[2].manifest
        middle = diff.restore_point + (first_log.restore_point - diff.restore_point) / 2
        results = Table(title="Restores")
        for column in (
            "requested",
            "from",
            "restore point reached",
            "behind target (or now)",
            "backups",
            "restore s",
            "flow run s",
            "matches source",
        ):
            results.add_column(column)
        cases: list[tuple[str, datetime | None, _Point, Path, Literal["auto", "dr"]]] = [
            ("middle", middle, points[1], workdir / "restored" / "middle.db", "auto"),
            ("latest", None, points[-1], workdir / "restored" / "latest.db", "auto"),
            ("DR-only", None, points[-1], workdir / "restored" / "from-dr.db", "dr"),
        ]
        for label, when, expected, into, source in cases:
            if label == "DR-only":
                console.rule("[bold]DR drill: a rehearsal from the DR tier alone")
                ok = run_drill(console) and ok
                shutil.rmtree(settings.repository.primary.url)
                console.print(
                    "[red]disaster:[/red] the primary backup folder is gone; restoring from the "
                    "DR tier alone"
                )
            clock = time.perf_counter()
            report = restore_database(
                target_time=when,
                into=str(into),
                source=source,
            )
            seconds = time.perf_counter() - clock
            console.print(_plan_table(label, report.plan))
            for note in report.plan.notes:
                console.print(f"[yellow]note:[/yellow] {note}")
            same = database_digest(into) == expected.digest
            reached = report.plan.restore_point == expected.manifest.restore_point
            ok = ok and same and reached
            outcome = report.outcome
            results.add_row(
                iso(when) if when else "latest",
                ", ".join(sorted(set(outcome.tiers_used.values()))) if outcome else "-",
                iso(report.plan.restore_point),
                f"{report.plan.shortfall.total_seconds():.3f} s",
                str(len(report.plan.steps)),
                f"{outcome.seconds:.3f}" if outcome else "-",
                f"{seconds:.2f}",
                "[green]yes[/green]" if same and reached else "[red]NO[/red]",
            )
        console.print(results)

        try:
            with expected_failure():
                restore_database(into=str(live))
            console.print("[red]a restore over the live database was not refused[/red]")
            ok = False
        except RestoreTargetError as exc:
            console.print(
                f"[green]refused as expected[/green] (restore over live data without "
                f"--replace): {exc}"
            )
        ok = run_file_demo(settings, workdir, console) and ok
        console.rule("[bold]health check")
        ok = run_health(settings, console) and ok
    console.print(f"backup log: {settings.backup_log}")
    console.rule("[bold green]demo passed" if ok else "[bold red]demo FAILED")
    return ok
