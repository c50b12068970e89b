"""The resident WAL archiver: one process per cluster that ``wal-push`` hands segments to.

PostgreSQL runs ``archive_command`` once per finished segment and waits for it.  Starting
Python and importing the pipeline for each one costs more than pushing the segment, so the
first ``wal-push`` starts this process (like pgBackRest's async archiver) and every
``wal-push`` after it only asks it over a private Unix socket
(:mod:`backupflow_app.walclient`).  It:

* pushes each asked-for segment into the first enabled tier exactly as ``wal-push`` always
  did (:func:`~.archive.push_wal`: stored, verified, recorded), and answers only then:
  PostgreSQL is told "archived" for nothing less;
* pushes ahead, in parallel, the segments PostgreSQL has marked ready
  (``pg_wal/archive_status/*.ready``), so the answer is often waiting already;
* copies every segment it archived (and, when it starts, every one the first tier holds
  that another tier lacks) to every other enabled tier, object then record, reading from
  the first tier, never from ``pg_wal``: a tier that is down never holds up archiving nor
  keeps files on the database server, and is caught up with when it is back;
* exits after ``archiver_idle_seconds`` with nothing to do, or when its data folder goes.

Its folder (socket, lock, log) is private to the cluster's OS user (0700); one instance
holds its lock.  Protocol: one line ``push <absolute path>``; one line back,
``<exit code> <message>``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from backupflow.catalog import wal_prefix, wal_record_key
from backupflow.codecs import Codec
from backupflow.engines.postgres.archive import (
    PushResult,
    WalConflictError,
    check_wal_name,
    push_wal,
    read_record,
    read_record_as_stored,
    system_identifier_of,
)
from backupflow.engines.postgres.walnames import parse_wal_name, wal_path
from backupflow.errors import BackupflowError
from backupflow.models import Category
from backupflow.storage import Tier
from backupflow.tiers import copy_object

__all__ = ["SOCKET", "Archiver", "state_dir"]

SOCKET = "archiver.sock"
LOCK = "archiver.lock"
#: Segments pushed at once.
WORKERS = 2
#: Segments pushed ahead of PostgreSQL's asking.
AHEAD = 4
_MAX_LINE = 4096
_RETRY_MAX = 30.0


def state_dir(data_dir: Path) -> Path:
    """The archiver's folder: ``BACKUPFLOW_ARCHIVER_DIR``, else beside the data folder."""
    given = os.environ.get("BACKUPFLOW_ARCHIVER_DIR")
    return Path(given) if given else data_dir.absolute().parent / ".backupflow-archiver"


class Archiver:
    """Serves ``wal-push`` requests for the cluster at ``data_dir`` until idle."""

    def __init__(
        self,
        tiers: Sequence[Tier],
        database: str,
        data_dir: Path,
        folder: Path,
        codec: Codec,
        *,
        idle_seconds: float,
    ) -> None:
        self.first = tiers[0]
        self.others = tuple(tiers[1:])
        self.database = database
        self.data_dir = data_dir.absolute()
        self.folder = folder
        self.codec = codec
        self.idle_seconds = idle_seconds
        self.sysid = system_identifier_of(self.data_dir)
        self._lock = threading.Lock()
        self._pushes: dict[str, Future[PushResult]] = {}
        self._copies: dict[str, set[str]] = {t.name: set() for t in self.others}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_work = time.monotonic()
        #: The settings it serves (set by the wal-push that started it).
        self.fingerprint = os.environ.get("BACKUPFLOW_ARCHIVER_FINGERPRINT", "")
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="wal-push")

    # -- running --------------------------------------------------------------------------

    def serve(self) -> int:
        """Hold the lock and serve until idle; 0 (also when another instance serves)."""
        lock_fd = os.open(
            self.folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        # An instance with other settings is finishing what it does: wait for it (bounded).
        deadline = time.monotonic() + 60
        while True:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(lock_fd)
                    return 0
                time.sleep(0.05)
        # The socket is named from the data folder, as wal-push (run there) names it: a Unix
        # socket's path must be short.
        os.chdir(self.data_dir)
        path = Path(os.path.relpath(self.folder / SOCKET, self.data_dir))
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                path.unlink()  # a dead instance's: we hold the lock
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.listen(64)
        listener.settimeout(1.0)
        workers = [
            threading.Thread(target=self._scan_ready, daemon=True),
            *(threading.Thread(target=self._copier, args=(t,), daemon=True) for t in self.others),
        ]
        for worker in workers:
            worker.start()
        self._catch_up()
        try:
            while not self._stop.is_set() and not self._done():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()
        finally:
            self._stop.set()
            self._wake.set()
            listener.close()
            with contextlib.suppress(OSError):
                path.unlink()
            self._pool.shutdown(wait=True, cancel_futures=True)
            os.close(lock_fd)
        return 0

    def _done(self) -> bool:
        if not (self.data_dir / "global" / "pg_control").exists() or not self.folder.is_dir():
            return True
        with self._lock:
            busy = any(not f.done() for f in self._pushes.values())
        if busy:
            self._last_work = time.monotonic()
        # Copies still owed to a tier that stays down do not keep it alive: the next
        # instance finds them again when it starts (:meth:`_catch_up`).
        return time.monotonic() - self._last_work > self.idle_seconds

    # -- pushing --------------------------------------------------------------------------

    def _push(self, name: str) -> Future[PushResult]:
        """The push of ``name`` in progress or done, a new one when none (or it failed)."""
        with self._lock:
            future = self._pushes.get(name)
            if future is None or (future.done() and future.exception() is not None):
                future = self._pool.submit(self._push_one, name)
                self._pushes[name] = future
            self._last_work = time.monotonic()
            return future

    def _push_one(self, name: str) -> PushResult:
        result = push_wal(
            self.first, self.database, Path("pg_wal") / name,
            data_dir=self.data_dir, codec=self.codec,
            warn=lambda text: sys.stderr.write(f"warning: {text}\n"),
        )  # fmt: skip
        with self._lock:
            for names in self._copies.values():
                names.add(name)
        self._wake.set()
        return result

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                line = conn.makefile("rb").readline(_MAX_LINE).decode("utf-8", "replace")
            except OSError:
                return
            answer = self._request(line.strip())
            reply = "leaving" if answer is None else f"{answer[0]} {' '.join(answer[1].split())}"
            with contextlib.suppress(OSError):
                conn.sendall(f"{reply}\n".encode())

    def _request(self, line: str) -> tuple[int, str] | None:
        verb, _, rest = line.partition(" ")
        theirs, _, argument = rest.partition(" ")
        if verb != "push" or not argument:
            return 2, "the archiver was asked something it does not do."
        if theirs != self.fingerprint:
            # Started with other settings (a rotated key, a moved tier): leave, so the
            # push starts an archiver with its own; no answer means "ask again".
            self._stop.set()
            return None
        path = Path(argument)
        if path.parent != self.data_dir / "pg_wal":
            return 2, f"{path} is not in this cluster's pg_wal folder ({self.data_dir})."
        try:
            check_wal_name(path.name)
            with self._lock:
                for stale in [n for n, f in self._pushes.items() if f.done() and n != path.name]:
                    if not (
                        self.data_dir / "pg_wal" / "archive_status" / f"{stale}.ready"
                    ).exists():
                        del self._pushes[stale]  # answered, or PostgreSQL moved on
            self._push(path.name).result()
        except BackupflowError as exc:
            return exc.exit_code, str(exc)
        except OSError as exc:
            return (
                1,
                f"{exc.strerror or type(exc).__name__}; PostgreSQL keeps the file and retries.",
            )
        except Exception as exc:  # never kill the archiver for one segment
            return 70, f"internal error: {type(exc).__name__}: {exc}"
        with self._lock:
            self._pushes.pop(path.name, None)
        return 0, ""

    def _scan_ready(self) -> None:
        """Push ahead what PostgreSQL marked ready (it asks for them one at a time)."""
        status = self.data_dir / "pg_wal" / "archive_status"
        while not self._stop.is_set():
            try:
                with os.scandir(status) as entries:
                    ready = sorted(e.name[:-6] for e in entries if e.name.endswith(".ready"))
            except OSError:
                ready = []
            with self._lock:
                running = sum(1 for f in self._pushes.values() if not f.done())
                fresh = [n for n in ready if n not in self._pushes]
            for name in fresh[: max(0, AHEAD - running)]:
                with contextlib.suppress(ValueError):
                    parse_wal_name(name)
                    self._push(name)
            # Often enough that a push starts while its wal-push is still starting up (one
            # small folder read each time).
            self._stop.wait(0.02)

    # -- copying to the other tiers -------------------------------------------------------

    def _catch_up(self) -> None:
        """Every WAL file of this cluster the first tier records and another tier lacks."""
        prefix = f"{wal_prefix(Category.DATABASE, self.database)}{self.sysid}/"

        def records(tier: Tier) -> set[str]:
            return {
                i.key[len(prefix) : -len(".rec")]
                for i in tier.storage.list(prefix)
                if i.key.endswith(".rec")
            }

        try:
            held = records(self.first)
        except BackupflowError:
            return
        for tier in self.others:
            try:
                missing = held - records(tier)
            except BackupflowError:
                missing = held  # down now: the copier retries
            with self._lock:
                self._copies[tier.name] |= missing
        self._wake.set()

    def _copier(self, tier: Tier) -> None:
        delay = 0.5
        failing = False  # said once per outage, not once per retry: the log stays small
        while not self._stop.is_set():
            with self._lock:
                todo = sorted(self._copies[tier.name])
            if not todo:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            failed = False
            for name in todo:
                if self._stop.is_set():
                    return
                try:
                    copy_wal(self.first, tier, self.database, self.sysid, name)
                except BackupflowError as exc:
                    if not failing:
                        sys.stderr.write(
                            f"warning: {name} not yet copied to {tier.name} (retried until it "
                            f"answers): {exc}\n"
                        )
                    failing = failed = True
                    break
                if failing:
                    sys.stderr.write(f"{tier.name} answers again: copying what it missed\n")
                    failing = False
                with self._lock:
                    self._copies[tier.name].discard(name)
                    self._last_work = time.monotonic()
                delay = 0.5
            if failed:  # the tier is down or refuses: again later, never dropped
                self._stop.wait(delay)
                delay = min(_RETRY_MAX, delay * 2)


def copy_wal(source: Tier, dest: Tier, database: str, sysid: int, name: str) -> bool:
    """Copy one archived WAL file (its object, then its record as stored) from ``source`` to
    ``dest``; False when ``dest`` already held it.  A record ``dest`` holds for other
    content is a :class:`WalConflictError`."""
    found = read_record_as_stored(source, database, sysid, name)
    if found is None:
        return False  # removed meanwhile (prune): nothing to copy
    record, raw = found
    there = read_record(dest, database, sysid, name)
    if there is not None:
        if there.object.raw_sha256 != record.object.raw_sha256:
            raise WalConflictError(
                f"{dest.name} holds {name} with other content; it was left as it is."
            )
        return False
    copy_object(source.storage, dest.storage, record.object, chunk_bytes=1 << 20,
                write_once=dest.write_once)  # fmt: skip
    record_key = wal_record_key(Category.DATABASE, database, wal_path(sysid, name))
    # False: a racing copy (or a push into that tier) recorded it first.
    return dest.storage.create(record_key, raw)
