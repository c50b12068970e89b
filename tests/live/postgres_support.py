"""Shared pieces of the live PostgreSQL tests: one archiving cluster whose tiers are S3
buckets on moto's HTTP server (its archive_command runs as the postgres OS user, which could
not read a root-owned folder tier), the settings that reach both this process and the
cluster's own processes (wal-push, wal-fetch), and a way to look inside a restored folder.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from backupflow.config import Settings, load_settings
from tests.support.keys import key_env
from tests.support.pgcluster import (
    BACKUP_ROLE,
    BACKUP_ROLE_PASSWORD,
    OS_USER,
    Cluster,
    as_cluster_user,
    free_port,
    pg_bin_dir,
)
from tests.support.s3 import MotoServer, client_for, make_bucket

__all__ = ["LivePg", "Restored", "events_cluster", "live_pg", "rows", "start_restored"]

DB = "pgmain"
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class LivePg:
    """A running cluster archiving into an S3 primary tier through ``backupflow wal-push``."""

    root: Path
    cluster: Cluster
    env: dict[str, str]
    launcher: Path

    def settings(self, tmp_path: Path, **database: Any) -> Settings:
        """This process's settings (the same as the cluster's environment says)."""
        for key, value in self.env.items():
            os.environ[key] = value
        return load_settings(
            staging_dir=tmp_path / "staging",
            backup_log=tmp_path / "log" / "backup.log",
            restore_roots=[self.root],
            database={
                "engine": "postgres",
                "name": DB,
                "server": "127.0.0.1",
                "port": self.cluster.port,
                "user": BACKUP_ROLE,
                "password": BACKUP_ROLE_PASSWORD,
                "pg_data_dir": self.cluster.data,
                "pg_superuser": OS_USER,
                "pg_backupflow_command": str(self.launcher),
                "archive_wait_seconds": 60,
                "recovery_wait_seconds": 120,
                **database,
            },
        )

    def new_folder(self, name: str) -> Path:
        """A folder the cluster's user owns, under this module's work folder."""
        path = self.root / f"{name}-{uuid.uuid4().hex[:6]}"
        path.mkdir(mode=0o700)
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam(OS_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return path


def tier_env(moto: MotoServer, bucket: str) -> dict[str, str]:
    """S3 primary tier on moto; the other tiers off."""
    saved = {key: os.environ.get(key) for key in AWS}
    os.environ.update(AWS)
    try:
        make_bucket(client_for("us-east-1", moto.url), bucket, "us-east-1")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {
        **AWS,
        "BACKUPFLOW_REPOSITORY__PRIMARY__URL": f"s3://{bucket}/repo",
        "BACKUPFLOW_REPOSITORY__PRIMARY__REGION": "us-east-1",
        "BACKUPFLOW_REPOSITORY__PRIMARY__ENDPOINT_URL": moto.url,
        "BACKUPFLOW_REPOSITORY__PRIMARY__ADDRESSING_STYLE": "path",
        "BACKUPFLOW_REPOSITORY__SECONDARY__ENABLED": "false",
        "BACKUPFLOW_DATABASE__ARCHIVER_IDLE_SECONDS": "30",
        "BACKUPFLOW_REPOSITORY__DR__ENABLED": "false",
        "BACKUPFLOW_DATABASE__NAME": DB,
        **key_env(),
    }


@contextlib.contextmanager
def live_pg(root: Path, moto: MotoServer, launcher: Path) -> Iterator[LivePg]:
    """A started cluster archiving with ``<launcher> wal-push %p``; destroyed afterwards."""
    env = tier_env(moto, f"pg-{uuid.uuid4().hex[:10]}")
    cluster = Cluster.create(
        root / "live",
        archive_command=f"{launcher} wal-push %p",
        env={**env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    try:
        cluster.start()
        cluster.add_backup_role()
        yield LivePg(root, cluster, env, launcher)
    finally:
        cluster.destroy()


@contextlib.contextmanager
def events_cluster(moto: MotoServer) -> Iterator[LivePg]:
    """A module's archiving cluster with an ``events`` table (id, note, commit time), in a
    private work folder removed afterwards; a skip locally, a failure under CI, when no
    cluster can be made here."""
    from tests.conftest import need
    from tests.support.pgcluster import launcher, pg_missing, pg_workdir

    need(pg_missing() is None, f"live PostgreSQL: {pg_missing()}")
    root = pg_workdir()
    try:
        with live_pg(root, moto, launcher(root)) as live:
            live.cluster.execute(
                "CREATE TABLE events (id int PRIMARY KEY, note text NOT NULL, "
                "at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
            yield live
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Restored:
    """A restored data folder started on a free port (its own config names the live one)."""

    data: Path
    port: int
    socket_dir: Path

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user=OS_USER, dbname=dbname,
            autocommit=True,
        )  # fmt: skip


@contextlib.contextmanager
def start_restored(data: Path) -> Iterator[Restored]:
    """Start a restored folder privately (no archiving), stop it by its pid afterwards."""
    bin_dir = pg_bin_dir()
    assert bin_dir is not None
    socket_dir = data.parent / f"sock-{uuid.uuid4().hex[:6]}"
    socket_dir.mkdir(mode=0o700)
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(OS_USER)
        os.chown(socket_dir, entry.pw_uid, entry.pw_gid)
    port = free_port()
    options = " ".join(
        shlex.quote(part)
        for part in (
            *("-c", f"port={port}", "-c", f"unix_socket_directories={socket_dir}"),
            *("-c", "archive_mode=off", "-c", "listen_addresses="),
        )
    )
    log = socket_dir / "server.log"
    subprocess.run(
        as_cluster_user(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
             "-t", "60", "start"]
        ),
        check=True, capture_output=True,
    )  # fmt: skip
    cluster = Cluster(data.parent, port)
    try:
        yield Restored(data, port, socket_dir)
    finally:
        _stop(data, cluster)


def _stop(data: Path, cluster: Cluster) -> None:
    import signal
    import time

    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    for _ in range(600):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    del cluster


def rows(conn: psycopg.Connection[Any], table: str = "events") -> list[tuple[Any, ...]]:
    """Every row of ``table`` in key order."""
    return [tuple(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()]
