"""Running a PostgreSQL cluster's programs, sessions to the live server, and a private copy.

* :class:`Programs` runs ``pg_basebackup``, ``pg_verifybackup``, ``pg_amcheck`` and the
  server itself from ``pg_bin_dir`` (or the newest installed), as ``pg_os_user`` when the
  worker is root (``runuser``): PostgreSQL refuses to run as root.  The password reaches a
  child only through ``PGPASSWORD`` in its environment, never its arguments; what a program
  says is bounded, and a failure is one sentence (its last error line).
* :func:`live_session` opens a psycopg session to the live server (``application_name =
  backupflow``, a connect timeout); a refused login or an unreachable server is one sentence.
* :class:`Copy` is a restored cluster started privately: a free loopback port, its socket
  in the scratch folder, an ``hba`` that trusts only that socket, options given on the
  command line (nothing written into its configuration), stopped by its own pid.

Size: about 400 lines: the programs, the live session, the pid rules and the private copy
are one process-handling layer with one set of rules for users, environments and signals.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from backupflow.config import DatabaseSettings
from backupflow.errors import EngineError, SourceNotFoundError

__all__ = ["Copy", "Programs", "free_port", "live_session", "postmaster_pid", "stop_postmaster"]

#: Bytes of a program's output kept (its tail), so a chatty failure cannot fill memory.
OUTPUT_LIMIT = 64 * 1024
DEFAULT_OS_USER = "postgres"
CONNECT_TIMEOUT = 10


def _bin_dir(settings: DatabaseSettings) -> Path:
    if settings.pg_bin_dir is not None:
        return settings.pg_bin_dir
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out and (Path(out) / "pg_basebackup").exists():
                return Path(out)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_basebackup"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise EngineError(
            "no PostgreSQL programs found (pg_basebackup); install the server's client "
            "programs or set BACKUPFLOW_DATABASE__PG_BIN_DIR."
        )
    return found[-1].parent


def last_error_line(text: str) -> str:
    """The line a user should read: the last one naming an error, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if any(word in line for word in ("error", "ERROR", "FATAL", "PANIC", "fatal")):
            return line[:400]
    return lines[-1][:400] if lines else "no output"


@dataclass(frozen=True)
class Programs:
    """The cluster's programs, run as its OS user when the worker is root."""

    settings: DatabaseSettings

    @property
    def bin_dir(self) -> Path:
        return _bin_dir(self.settings)

    @property
    def os_user(self) -> str | None:
        """The user programs that need it run as; None when we are not root."""
        if os.geteuid() != 0:
            return None
        return self.settings.pg_os_user or DEFAULT_OS_USER

    def owner_ids(self) -> tuple[int, int] | None:
        """(uid, gid) of the cluster's OS user when we are root, else None."""
        user = self.os_user
        if user is None:
            return None
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise EngineError(
                f"there is no OS user {user} to run PostgreSQL as; create it or set "
                "BACKUPFLOW_DATABASE__PG_OS_USER."
            ) from None
        return entry.pw_uid, entry.pw_gid

    def chown(self, path: Path) -> None:
        """Give ``path`` (not following a link) to the cluster's OS user when we are root."""
        ids = self.owner_ids()
        if ids is not None:
            os.chown(path, *ids, follow_symlinks=False)

    def argv(self, program: str, args: Sequence[str], *, as_owner: bool) -> list[str]:
        path = str(self.bin_dir / program)
        user = self.os_user if as_owner else None
        return ["runuser", "-u", user, "--", path, *args] if user else [path, *args]

    def run(
        self,
        program: str,
        args: Sequence[str],
        *,
        as_owner: bool = False,
        password: str | None = None,
        timeout: float | None = None,
        cwd: Path | None = None,
        what: str | None = None,
    ) -> str:
        """Run one program; its output (bounded), or :class:`EngineError` with its last
        error line.  ``password`` goes into ``PGPASSWORD`` only."""
        env = child_env()
        if password:
            env["PGPASSWORD"] = password
        try:
            done = subprocess.run(
                self.argv(program, args, as_owner=as_owner),
                capture_output=True,
                env=env,
                timeout=timeout,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError:
            raise EngineError(
                f"{program} is not installed in {self.bin_dir}; set "
                "BACKUPFLOW_DATABASE__PG_BIN_DIR."
            ) from None
        except subprocess.TimeoutExpired:
            raise EngineError(f"{what or program} did not finish within {timeout:.0f} s.") from None
        output = (done.stdout[-OUTPUT_LIMIT:] + done.stderr[-OUTPUT_LIMIT:]).decode(
            errors="replace"
        )
        if password:
            output = output.replace(password, "***")
        if done.returncode != 0:
            raise EngineError(f"{what or program} failed: {last_error_line(output)}")
        return output


def live_session(settings: DatabaseSettings, password: str) -> psycopg.Connection[Any]:
    """An autocommit session to the live server's ``postgres`` database."""
    try:
        return psycopg.connect(
            host=settings.server,
            port=settings.port,
            user=settings.user or None,
            password=password or None,
            dbname="postgres",
            connect_timeout=CONNECT_TIMEOUT,
            application_name="backupflow",
            autocommit=True,
        )
    except psycopg.OperationalError as exc:
        text = last_error_line(str(exc))
        if password:
            text = text.replace(password, "***")
        where = f"{settings.server}:{settings.port}"
        if "password authentication failed" in text or "no password supplied" in text:
            raise EngineError(
                f"PostgreSQL at {where} refused the login {settings.user!r} ({text}); check "
                "BACKUPFLOW_DATABASE__USER and its password."
            ) from None
        raise SourceNotFoundError(
            f"cannot connect to PostgreSQL at {where} ({text}); check "
            "BACKUPFLOW_DATABASE__SERVER and BACKUPFLOW_DATABASE__PORT."
        ) from None


#: Variables no child of ours inherits: the database password in every spelling the settings
#: accept (the copy and a restarted cluster are long-running servers whose superusers can
#: read their environment).
_SECRET_VARIABLES = frozenset(
    {"PGPASSWORD", "PGPASSFILE", "BACKUPFLOW_DATABASE__PASSWORD", "DB_PASSWORD"}
)


def child_env() -> dict[str, str]:
    """This process's environment without any database password."""
    return {k: v for k, v in os.environ.items() if k.upper() not in _SECRET_VARIABLES}


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_APPEND = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


def postmaster_pid(data: Path) -> int | None:
    """The pid in ``data``'s ``postmaster.pid`` when that process is alive and is a server
    of that folder (a ``postgres`` program owned by the folder's owner), else None: a stale
    pid file whose number was reused, or a number planted there, is never signalled."""
    try:
        fd = os.open(data / "postmaster.pid", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            pid = int(handle.read(64).split(b"\n", 1)[0].strip())
        if pid <= 1:
            return None
        os.kill(pid, 0)
        proc = Path(f"/proc/{pid}")
        if proc.stat().st_uid != data.stat().st_uid:
            return None
        if not os.readlink(proc / "exe").rsplit("/", 1)[-1].startswith("postgres"):
            return None
    except (OSError, ValueError):
        return None
    return pid


def stop_postmaster(data: Path, *, timeout: float = 120.0) -> bool:
    """Fast shutdown of the postmaster of ``data`` by its own pid (SIGINT), then immediate
    (SIGQUIT) if it does not exit in time; False if none was running."""
    pid = postmaster_pid(data)
    if pid is None:
        return False
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 30.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return True
            time.sleep(0.05)
    raise EngineError(f"the PostgreSQL server of {data} (pid {pid}) did not stop.")


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _write_private(path: Path, text: str) -> None:
    """A new file (0600, never through a link, never over an existing one)."""
    from backupflow.fsutil import create_private_file

    with os.fdopen(create_private_file(path), "w", encoding="utf-8") as handle:
        handle.write(text)


def read_bounded(path: Path, limit: int, *, tail: bool = False) -> str:
    """At most ``limit`` bytes of a regular file (its end with ``tail``), never through a
    link: the scratch folder belongs to the cluster's OS user, who could plant one."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if tail:
            handle.seek(max(0, info.st_size - limit))
        return handle.read(limit).decode(errors="replace")


@dataclass
class Copy:
    """A restored cluster in ``scratch/data``, started privately."""

    programs: Programs
    scratch: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    #: The options of the last start, reused by :meth:`restart` (never the live config's
    #: archive_command: a copy started without them would push its timeline to the archive).
    extra: dict[str, str] | None = None

    @property
    def data(self) -> Path:
        return self.scratch / "data"

    @property
    def socket_dir(self) -> Path:
        return self.scratch / "sock"

    @property
    def log_file(self) -> Path:
        return self.scratch / "server.log"

    @property
    def hba_file(self) -> Path:
        return self.scratch / "restore_hba.conf"

    def prepare(self) -> None:
        """The socket folder and the hba file (local trust only), owned by the cluster's
        user; the config file when the data folder has none (Debian keeps it in /etc)."""
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self.programs.chown(self.socket_dir)
        _write_private(self.hba_file, "local all all trust\n")
        self.programs.chown(self.hba_file)
        if not (self.data / "postgresql.conf").exists():
            empty = self.scratch / "postgresql.conf"
            _write_private(empty, "# backupflow: the backed-up folder had no postgresql.conf\n")
            self.programs.chown(empty)

    def options(self, extra: Mapping[str, str]) -> list[str]:
        """The ``-c`` options a restore starts the copy with (never written to its config)."""
        self.port = self.port or free_port()
        conf = self.scratch / "postgresql.conf"
        settings = {
            **({"config_file": str(conf)} if conf.exists() else {}),
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            "hba_file": str(self.hba_file),
            "logging_collector": "off",
            "log_destination": "stderr",
            "primary_conninfo": "",
            "primary_slot_name": "",
            "synchronous_standby_names": "",
            "hot_standby": "on",
            **extra,
        }
        args: list[str] = []
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        return args

    def start(self, extra: Mapping[str, str]) -> None:
        """Start the server of the copy (it may begin with a long recovery)."""
        self.extra = dict(extra)
        if not self.log_file.exists():
            _write_private(self.log_file, "")
            self.programs.chown(self.log_file)
        args = ["-D", str(self.data), *self.options(extra)]
        argv = self.programs.argv("postgres", args, as_owner=True)
        env = child_env()
        with os.fdopen(os.open(self.log_file, _APPEND), "ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )

    def pid(self) -> int | None:
        return postmaster_pid(self.data)

    def running(self) -> bool:
        """Whether the server started by :meth:`start` (or found by its pid file) runs."""
        if self.process is not None:
            return self.process.poll() is None
        pid = self.pid()
        return pid is not None and _alive(pid)

    def connect(self, superuser: str, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=superuser,
            dbname=dbname,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="backupflow-restore",
            autocommit=True,
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = read_bounded(self.log_file, OUTPUT_LIMIT, tail=True)
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def restart(self) -> None:
        """Stop, then start again with the same options."""
        self.stop()
        self.start(self.extra or {})

    def stop(self) -> None:
        stop_postmaster(self.data)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
