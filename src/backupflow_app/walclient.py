"""The fast path of ``backupflow wal-push``: hand the segment to the resident archiver.

Standard library only, so a push costs an interpreter start and one round trip on a
private Unix socket, not the pipeline's imports (:mod:`backupflow.engines.postgres.archiver`
does the work).  The first push of a cluster starts the archiver; when it cannot be
reached or started (its folder is not private, the socket path is too long, it died),
:func:`push_via_archiver` returns None and ``wal-push`` archives the segment itself, as
it always did: archiving never depends on the archiver.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["FINGERPRINT_VAR", "fingerprint", "push_via_archiver"]

SOCKET = "archiver.sock"
#: The variable that gives a new archiver the fingerprint of the settings it serves.
FINGERPRINT_VAR = "BACKUPFLOW_ARCHIVER_FINGERPRINT"
#: How long a push waits for its answer (PostgreSQL retries a failed push).
ANSWER_SECONDS = 3600.0
#: How long the first push waits for a new archiver to listen.
START_SECONDS = 60.0
_SOCKET_PATH_MAX = 100
#: The archiver's log is started anew when it is larger than this.
_LOG_MAX = 8 << 20


def _folder(data_dir: Path) -> Path | None:
    """The archiver's folder, made private if new; None when it is not ours and private."""
    given = os.environ.get("BACKUPFLOW_ARCHIVER_DIR")
    folder = Path(given) if given else data_dir.parent / ".backupflow-archiver"
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        info = os.lstat(folder)
    except OSError:
        return None
    private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
    if not private or info.st_mode & 0o077:
        return None
    return folder


def fingerprint() -> str:
    """What the settings of this push are made of: every ``BACKUPFLOW_*`` and ``AWS_*``
    variable and the env-file's identity.  An archiver started with other settings (a key
    was rotated, a tier moved) hands over to a new one instead of serving this push."""
    digest = hashlib.sha256()
    for key in sorted(k for k in os.environ if k.startswith(("BACKUPFLOW_", "AWS_"))):
        if key != FINGERPRINT_VAR:
            digest.update(f"{key}={os.environ[key]}\0".encode("utf-8", "surrogateescape"))
    env_file = os.environ.get("BACKUPFLOW_CONFIG")
    if env_file:
        try:
            info = os.stat(env_file)
            digest.update(f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}".encode())
        except OSError:
            digest.update(b"missing")
    return digest.hexdigest()[:32]


def _ask(path: Path, segment: str, mine: str) -> tuple[int, str] | None:
    """The archiver's answer for ``segment``; None when nobody (with our settings) listens."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5.0)
            conn.connect(str(path))
            conn.settimeout(ANSWER_SECONDS)
            conn.sendall(f"push {mine} {segment}\n".encode())
            line = conn.makefile("rb").readline(8192).decode("utf-8", "replace")
    except OSError:
        return None
    code, _, message = line.strip().partition(" ")
    if not code.isdigit():
        return None  # it went away mid-answer, or runs with other settings and leaves
    return int(code), message


def _start(folder: Path, data_dir: Path, mine: str) -> subprocess.Popen[bytes] | None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env[FINGERPRINT_VAR] = mine
    try:
        log = os.open(
            folder / "archiver.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600
        )
        if os.fstat(log).st_size > _LOG_MAX:  # each start may begin it anew: it stays small
            os.ftruncate(log, 0)
    except OSError:
        return None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "backupflow_app", "wal-archiver", "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=data_dir,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    except OSError:
        return None
    finally:
        os.close(log)


def push_via_archiver(args: Sequence[str]) -> int | None:
    """``wal-push <path>`` through the archiver: the exit code, or None to push in-process
    (options given, the archiver switched off or out of reach)."""
    if len(args) != 1 or args[0].startswith("-"):
        return None
    if os.environ.get("BACKUPFLOW_WAL_ARCHIVER", "on").lower() in ("off", "0", "false", "no"):
        return None
    data_dir = Path.cwd()
    segment = os.path.abspath(os.path.join(data_dir, args[0]))
    folder = _folder(data_dir)
    if folder is None:
        return None
    # Named from the data folder (both sides run there): a Unix socket's path is short.
    path = Path(os.path.relpath(folder / SOCKET, data_dir))
    if len(str(path)) > _SOCKET_PATH_MAX:
        return None
    mine = fingerprint()
    answer = _ask(path, segment, mine)
    if answer is None:
        # None listens, or one with other settings is leaving: start ours (it waits for
        # the old one's lock) and ask it.
        child = _start(folder, data_dir, mine)
        deadline = time.monotonic() + START_SECONDS
        while answer is None and child is not None and time.monotonic() < deadline:
            if child.poll() is not None:
                break  # it could not start: push in-process
            time.sleep(0.02)
            answer = _ask(path, segment, mine) if path.exists() else None
    if answer is None:
        return None
    code, message = answer
    if message:
        sys.stderr.write(f"{'error' if code else 'warning'}: {message}\n")
    return code
