"""Throwaway PostgreSQL clusters for the live tests.

Each cluster lives in its own temporary folder owned by the ``postgres`` OS user (PostgreSQL
refuses to run as root, and the tests run as root under CI), listens on a free loopback port
and a private socket folder, and is stopped by its own postmaster pid, never by name.

:func:`pg_missing` says why clusters cannot be made here (tests call ``need(not reason, ...)``:
a skip locally, a failure under ``CI=true``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

__all__ = [
    "BACKUP_ROLE",
    "BACKUP_ROLE_PASSWORD",
    "Cluster",
    "as_cluster_user",
    "free_port",
    "launcher",
    "pg_bin_dir",
    "pg_missing",
    "pg_workdir",
    "running_cluster",
]

OS_USER = "postgres"
#: The login the engine uses in the tests: REPLICATION, pg_monitor, pg_switch_wal, with a
#: password (scram-sha-256 on loopback), like a production backup role.
BACKUP_ROLE = "backupflow"
BACKUP_ROLE_PASSWORD = "s3cret-for-tests-only"


def pg_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's program folder (15 or later), or None."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_basebackup"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def pg_missing() -> str | None:
    """Why throwaway clusters cannot be made on this machine, or None."""
    if pg_bin_dir() is None:
        return "PostgreSQL 15+ is not installed (make bootstrap installs Debian's postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return "there is no postgres OS user to run clusters as (make bootstrap creates it)"
    return None


def as_cluster_user(argv: Sequence[str]) -> list[str]:
    """``argv`` run as the postgres OS user when we are root (environment kept)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", OS_USER, "--", *argv]
    return list(argv)


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(OS_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def pg_workdir(prefix: str = "bf-pg-") -> Path:
    """A new private folder (0700) owned by the postgres OS user, for clusters, their
    sockets and anything the cluster's own processes (archive_command) must write."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    _chown(path)
    path.chmod(0o700)
    return path


def _runnable_by_others(path: Path) -> bool:
    """Whether every folder above ``path`` can be entered, and ``path`` run, by any user."""
    path = path.resolve()
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        needed = 0o001 if part != path else 0o005
        if mode & needed != needed:
            return False
    return True


def cluster_python() -> str:
    """A Python the postgres OS user can run, of this interpreter's version (its compiled
    packages are shared): this one, or the system's."""
    if _runnable_by_others(Path(sys.executable)):
        return sys.executable
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if system.exists():
        return str(system)
    raise AssertionError(
        f"no Python {sys.version_info.major}.{sys.version_info.minor} the postgres user can run"
    )


def launcher(folder: Path) -> Path:
    """A ``backupflow`` command the cluster's own processes (archive_command,
    restore_command) can run: this interpreter's packages and this checkout's code (the
    ``PYTHONPATH`` the tests run with is passed on through the server's environment)."""
    script = folder / "backupflow"
    site_dir = sysconfig.get_paths()["purelib"]
    code = (
        f"import site, sys; site.addsitedir({site_dir!r}); "
        "from backupflow_app.entry import main; sys.argv[0] = 'backupflow'; main()"
    )
    script.write_text(f'#!/bin/sh\nexec {cluster_python()} -c "{code}" "$@"\n')
    script.chmod(0o755)
    _chown(script)
    return script


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """One throwaway cluster: ``data`` folder, loopback ``port``, private ``socket_dir``."""

    root: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def bin(self) -> Path:
        found = pg_bin_dir()
        assert found is not None
        return found

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        archive_command: str | None = None,
        settings: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Cluster:
        """initdb (as the postgres OS user, with data checksums) and configure: loopback
        only, WAL archiving through ``archive_command`` (off when None), a password login
        :data:`BACKUP_ROLE` is made by :meth:`add_backup_role` once it runs."""
        cluster = cls(root, free_port(), dict(env or {}))
        root.mkdir(mode=0o700, exist_ok=True)
        _chown(root)
        cluster.socket_dir.mkdir(mode=0o700, exist_ok=True)
        _chown(cluster.socket_dir)
        cluster._run(
            [
                str(cluster.bin / "initdb"),
                "-D",
                str(cluster.data),
                "-U",
                OS_USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--data-checksums",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        )
        conf = {
            "port": str(cluster.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{cluster.socket_dir}'",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "archive_mode": "on" if archive_command else "off",
            "archive_command": _quote(archive_command or ""),
            "archive_timeout": "0",
            "fsync": "off",
            "full_page_writes": "on",
            "shared_buffers": "32MB",
            "max_connections": "30",
            "log_min_messages": "warning",
            "timezone": "'UTC'",
            **(settings or {}),
        }
        with (cluster.data / "postgresql.conf").open("a") as handle:
            handle.write("\n# backupflow tests\n")
            for key, value in conf.items():
                handle.write(f"{key} = {value}\n")
        with (cluster.data / "pg_hba.conf").open("a") as handle:
            handle.write("host replication all 127.0.0.1/32 scram-sha-256\n")
        return cluster

    def _run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            as_cluster_user(argv),
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            cwd=self.root,
            **kwargs,
        )

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        try:
            self._run(
                [
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            )
        except subprocess.CalledProcessError as exc:
            raise AssertionError(f"the test cluster did not start: {self.log_tail()}") from exc

    def pid(self) -> int | None:
        """The postmaster's pid from its pid file, or None when it is not running."""
        try:
            first = (self.data / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def stop(self, *, timeout: float = 60.0) -> None:
        """Fast shutdown by the postmaster's own pid (SIGINT), waiting for it to exit."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A superuser connection over the private socket (trust), autocommit."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=OS_USER,
            dbname=dbname,
            autocommit=True,
            **kwargs,
        )

    def execute(self, sql: str, params: Sequence[Any] = (), dbname: str = "postgres") -> Any:
        """Run one statement; returns the first row's first column (or None)."""
        with self.connect(dbname) as conn:
            cursor = conn.execute(sql.encode(), params)  # type: ignore[call-overload]
            if cursor.description is None:
                return None
            row = cursor.fetchone()
            return None if row is None else row[0]

    def add_backup_role(self) -> None:
        """The production-shaped backup login: REPLICATION, pg_monitor, pg_switch_wal."""
        with self.connect() as conn:
            conn.execute(
                f"CREATE ROLE {BACKUP_ROLE} LOGIN REPLICATION PASSWORD '{BACKUP_ROLE_PASSWORD}'"
            )
            conn.execute(f"GRANT pg_monitor TO {BACKUP_ROLE}")
            conn.execute(f"GRANT EXECUTE ON FUNCTION pg_switch_wal() TO {BACKUP_ROLE}")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@contextlib.contextmanager
def running_cluster(root: Path, **kwargs: Any) -> Iterator[Cluster]:
    """A started cluster with the backup role, destroyed afterwards."""
    cluster = Cluster.create(root, **kwargs)
    try:
        cluster.start()
        cluster.add_backup_role()
        yield cluster
    finally:
        cluster.destroy()
