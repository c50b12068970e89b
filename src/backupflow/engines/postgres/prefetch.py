"""WAL fetched ahead of replay, so a restoring copy's ``restore_command`` is a rename.

Replaying archived WAL one ``wal-fetch`` process per segment spends most of a restore
starting Python and waiting for one tier read at a time.  Instead, the restore itself (the
process that waits for the copy anyway) fetches the files recovery will ask for, in replay
order, a few at a time in parallel, into a private spool beside the copy, at most
:data:`WINDOW` files ahead of what recovery took (``archive-get-queue-max`` in pgBackRest's
words).  Each file is verified while it streams (:func:`~.archive.fetch_wal`) before it is
published in the spool under its own name.

The copy's ``restore_command`` is a small shell script (:data:`SCRIPT`): for a name the
spool expects (a ``<name>.wait`` marker), it waits until the file is there and renames it
to ``%p``; for any other name (a history file, a name past the archive's end), and for one
the prefetcher could not serve, it runs ``wal-fetch`` as before, which reports why.  Nothing
unverified reaches PostgreSQL either way.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from backupflow.engines.postgres.archive import append_report, archived, fetch_wal
from backupflow.engines.postgres.walnames import WalName, parse_wal_name
from backupflow.models import StoredObject
from backupflow.storage import Tier

__all__ = ["SCRIPT", "WINDOW", "Prefetcher", "replay_order", "spool_command"]

#: Files fetched ahead of what recovery took (16 MiB each: 128 MiB of spool at most).
WINDOW = 8
#: Files fetched at once.
WORKERS = 3
#: How long the script waits for an expected file before it asks wal-fetch itself.
WAIT_SECONDS = 300
_POLL = 0.01

SCRIPT = """#!/bin/sh
# restore_command of a copy restored by backupflow: serve %f from the prefetch spool.
# Generated for one restore; removed with it.
spool={spool}
f="$1"
p="$2"
case "$f" in
  ''|*[!0-9A-Za-z.]*) exit 1 ;;
esac
n=0
while [ -e "$spool/$f.wait" ] && [ ! -e "$spool/$f" ] && [ "$n" -lt {polls} ]; do
  sleep {poll}
  n=$((n + 1))
done
if [ -e "$spool/$f" ] && mv -f "$spool/$f" "$p"; then
  rm -f "$spool/$f.wait"
  exit 0
fi
rm -f "$spool/$f.wait"
exec {fallback} "$f" "$p"
"""


def replay_order(
    planned: Mapping[str, StoredObject],
    *,
    loose: bool,
    tier: Tier | None,
    database: str,
    sysid: int,
    timeline: int,
    segment_bytes: int,
) -> list[str]:
    """The segments recovery will ask for, in replay order: those the plan lists, then (for
    a loose plan) those the first tier records after them on the chain's timeline."""
    names: list[WalName] = []
    for name in planned:
        with contextlib.suppress(ValueError):
            parsed = parse_wal_name(name, segment_bytes)
            if parsed.kind == "segment":
                names.append(parsed)
    names.sort()
    if loose and tier is not None:
        last = names[-1].segno if names else -1
        with contextlib.suppress(Exception):  # a listing that fails: wal-fetch serves them
            names += [
                n
                for n in archived(tier, database, sysid, segment_bytes)
                if n.kind == "segment"
                and n.timeline == timeline
                and n.segno > last
                and n.name not in planned
            ]
    return [n.name for n in names]


def spool_command(script: Path) -> str:
    """``restore_command`` running ``script`` with ``%f %p`` (``%`` doubled in the path)."""
    return f"/bin/sh {shlex.quote(str(script)).replace('%', '%%')} %f %p"


class Prefetcher:
    """Fetches ``names`` in order into ``spool`` on helper threads until :meth:`stop`."""

    def __init__(
        self,
        tiers: Sequence[Tier],
        database: str,
        sysid: int,
        spool: Path,
        names: Sequence[str],
        planned: Mapping[str, StoredObject],
        *,
        report: Path,
        chown: Callable[[Path], None],
        window: int = WINDOW,
        workers: int = WORKERS,
    ) -> None:
        self.tiers = tuple(tiers)
        self.database = database
        self.sysid = sysid
        self.spool = spool
        self.names = tuple(names)
        self.planned = planned
        self.report = report
        self.chown = chown
        self.window = max(1, window)
        self.workers = max(1, min(workers, self.window))
        self.fetched = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._published: set[str] = set()
        self._thread: threading.Thread | None = None

    def write_script(self, path: Path, fallback: str) -> Path:
        """The copy's restore_command script at ``path`` (private, the cluster user's)."""
        text = SCRIPT.format(
            spool=shlex.quote(str(self.spool)),
            polls=int(WAIT_SECONDS / _POLL),
            poll=_POLL,
            fallback=fallback,
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o700)
        self.chown(path)
        return path

    def start(self) -> None:
        """Make the spool (0700, the cluster user's), mark every expected name, start."""
        self.spool.mkdir(mode=0o700)
        self.chown(self.spool)
        for name in self.names:
            fd = os.open(
                self.spool / f"{name}.wait", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                0o600,
            )  # fmt: skip
            os.close(fd)
        self._thread = threading.Thread(target=self._run, name="wal-prefetch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop fetching and remove the spool (recovery is over, or failed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        shutil.rmtree(self.spool, ignore_errors=True)

    # -- the threads ----------------------------------------------------------------------

    def _run(self) -> None:
        pending = deque(self.names)
        try:
            self._serve(pending)
        except Exception:  # never leave recovery waiting on a spool nobody fills
            pass
        finally:
            for name in pending:  # not fetched here: the script asks wal-fetch at once
                with contextlib.suppress(OSError):
                    (self.spool / f"{name}.wait").unlink()

    def _serve(self, pending: deque[str]) -> None:
        futures: dict[str, Future[None]] = {}
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="wal-get") as pool:
            while (pending or futures) and not self._stop.is_set():
                for name in [n for n, f in futures.items() if f.done()]:
                    futures.pop(name)
                with self._lock:
                    # Taken by recovery: the file left the spool, a place is free.
                    self._published = {n for n in self._published if (self.spool / n).exists()}
                    ahead = len(self._published)
                while (
                    pending and len(futures) < self.workers and ahead + len(futures) < self.window
                ):
                    name = pending.popleft()
                    futures[name] = pool.submit(self._fetch, name)
                self._stop.wait(_POLL * 2)

    def _fetch(self, name: str) -> None:
        if self._stop.is_set():
            return
        landing = self.spool / f"{name}.fetched"
        try:
            outcome = fetch_wal(
                self.tiers, self.database, self.sysid, name, landing,
                planned=self.planned.get(name), lookup=True,
            )  # fmt: skip
            if outcome.outcome == "fetched":
                self.chown(landing)
                os.rename(landing, self.spool / name)
                with self._lock:
                    self._published.add(name)
                    self.fetched += 1
                append_report(self.report, outcome)
                return
        except Exception:  # wal-fetch serves it, and reports why
            pass
        with contextlib.suppress(OSError):
            landing.unlink()
        # Not served here: the script hands the name to wal-fetch.
        with contextlib.suppress(OSError):
            (self.spool / f"{name}.wait").unlink()
