"""pgBackRest beside ours in the PostgreSQL rows of ``make bench`` (``bench/postgres.py`` drives
it on its throwaway cluster; ``make bench`` installs Debian's pgbackrest when missing).

* A local repository in a private folder owned by postgres (``repo1-path``), zstd
  (``compress-type=zst``), ``process-max=2``, one stanza for the cluster; every pgBackRest
  command runs as the postgres OS user with the bench's own config file (``--config``), so
  nothing outside the work folder is read or written.
* :data:`ARCHIVE_SCRIPT` is the cluster's ``archive_command`` for the whole run: it pushes each
  WAL file to the tools the mode file names (``PHASE TOOLS ALTERNATE``: ``ours`` =
  ``backupflow wal-push``, ``pgbackrest-sync`` / ``pgbackrest-async`` = ``pgbackrest
  archive-push`` without / with ``--archive-async``), in alternating order per segment when
  asked, and logs each tool's wall time on its own line.  Its name holds "pgbackrest" because
  pgBackRest's backup checks that the archive_command does.
* :func:`paced_wal` makes WAL at a fixed rate (bulk inserts paced by the clock) while
  :class:`Backlog` samples the ``.ready`` files in ``pg_wal/archive_status``.
* :func:`restore_copy` restores into a fresh folder (``--type=time --target=T
  --target-action=promote``), starts PostgreSQL on it and waits until it promoted;
  :func:`digest` is the query both tools' copies are checked with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

__all__ = [
    "ARCHIVE_SCRIPT",
    "STANZA",
    "Backlog",
    "backup",
    "digest",
    "drop_paced",
    "missing",
    "paced_wal",
    "restore_copy",
    "set_mode",
    "setup",
    "wait_archived",
]

MiB = 1 << 20
STANZA = "bench"
#: Generous: a 1 GiB restore replays in about a minute here.
TIMEOUT = 3600

ARCHIVE_SCRIPT = """#!/bin/sh
# archive_command of the bench: the WAL file $1 to each tool the mode file names, in order
# (the first two swapped on odd segments when ALTERNATE is yes); each push's wall time is
# logged in ns as: TOOL PHASE FILE RC NS.  Stops at the first tool that fails.
read -r phase tools alternate < "$BENCH_ARCHIVE_MODE"
case "$alternate:$1" in
  yes:*[13579BDF]) tools=$(echo "$tools" | awk -F, '{ t = $1; $1 = $2; $2 = t; print }' OFS=,) ;;
esac
for tool in $(echo "$tools" | tr , ' '); do
  start=$(date +%s%N)
  case "$tool" in
    ours) "$BENCH_LAUNCHER" wal-push "$1" ;;
    pgbackrest-sync)
      "$BENCH_PGBACKREST" --config="$BENCH_PGBR_CONFIG" --stanza=bench --no-archive-async \\
        archive-push "$1" ;;
    pgbackrest-async)
      "$BENCH_PGBACKREST" --config="$BENCH_PGBR_CONFIG" --stanza=bench --archive-async \\
        archive-push "$1" ;;
    *) echo "unknown tool $tool" >&2; false ;;
  esac
  rc=$?
  end=$(date +%s%N)
  echo "$tool $phase $1 $rc $((end - start))" >> "$BENCH_PUSH_TIMINGS"
  [ "$rc" -eq 0 ] || exit "$rc"
done
"""


def missing() -> str | None:
    """Why pgBackRest's rows cannot run here, or None."""
    if shutil.which("pgbackrest") is None:
        return "pgbackrest is not installed (make bench / make bootstrap install Debian's)"
    return None


def _chown(path: Path) -> Path:
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _private(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return _chown(path)


def set_mode(work: Path, phase: str, tools: str, alternate: bool = False) -> None:
    """What the archive_command does from its next call on (written whole, then renamed)."""
    tmp = work / ".archive-mode.tmp"
    tmp.write_text(f"{phase} {tools} {'yes' if alternate else 'no'}\n")
    tmp.chmod(0o644)
    os.replace(tmp, work / "archive-mode")


def setup(work: Path, cluster: Any) -> dict[str, str]:
    """The bench's config file (a local repository in ``work``); returns the archive_command's
    environment.  The stanza is made by :func:`create_stanza` once the cluster runs."""
    for name in ("pgbr-repo", "pgbr-log", "pgbr-lock", "pgbr-spool"):
        _private(work / name)
    config = work / "pgbackrest.conf"
    config.write_text(
        "[global]\n"
        f"repo1-path={work / 'pgbr-repo'}\n"
        "repo1-retention-full=99\n"
        "compress-type=zst\n"
        "process-max=2\n"
        "start-fast=y\n"
        "archive-timeout=600\n"
        f"log-path={work / 'pgbr-log'}\n"
        f"lock-path={work / 'pgbr-lock'}\n"
        f"spool-path={work / 'pgbr-spool'}\n"
        "log-level-console=warn\n"
        "log-level-file=info\n"
        f"\n[{STANZA}]\n"
        f"pg1-path={cluster.data}\n"
        f"pg1-port={cluster.port}\n"
        f"pg1-socket-path={cluster.socket_dir}\n"
        "pg1-user=postgres\n"
    )
    config.chmod(0o600)
    _chown(config)
    return {
        "BENCH_PGBACKREST": str(shutil.which("pgbackrest")),
        "BENCH_PGBR_CONFIG": str(config),
        "BENCH_ARCHIVE_MODE": str(work / "archive-mode"),
    }


def pgbackrest(work: Path, *args: str, timeout: float = TIMEOUT) -> str:
    """One pgBackRest command as the postgres OS user; its error output on failure."""
    from tests.support.pgcluster import as_cluster_user

    argv = [
        str(shutil.which("pgbackrest")),
        f"--config={work / 'pgbackrest.conf'}",
        f"--stanza={STANZA}",
        *args,
    ]
    done = subprocess.run(
        as_cluster_user(argv), capture_output=True, text=True, cwd=work, timeout=timeout
    )
    if done.returncode != 0:
        raise SystemExit(
            f"pgbackrest {' '.join(args)} failed ({done.returncode}): "
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return done.stdout


def create_stanza(work: Path) -> None:
    pgbackrest(work, "stanza-create")


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def backup(work: Path) -> dict[str, Any]:
    """One full backup; its wall time and the bytes of its folder in the repository."""
    folder = work / "pgbr-repo" / "backup" / STANZA
    before = set(folder.glob("*F")) if folder.exists() else set()
    started = time.perf_counter()
    pgbackrest(work, "--type=full", "backup")
    seconds = time.perf_counter() - started
    made = sorted(set(folder.glob("*F")) - before)
    if len(made) != 1:
        raise SystemExit(f"pgbackrest backup made {len(made)} backup folders, not one")
    return {"seconds": round(seconds, 3), "label": made[0].name, "bytes": _tree_bytes(made[0])}


# -- WAL at a fixed rate ---------------------------------------------------------------------


class Backlog:
    """Samples the ``.ready`` files of ``pg_wal/archive_status`` every ``every`` seconds on a
    thread, until :meth:`stop`: the worst backlog of the archiver."""

    def __init__(self, data: Path, every: float = 0.05) -> None:
        self.status = data / "pg_wal" / "archive_status"
        self.every = every
        self.worst = 0
        self.samples = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.every):
            try:
                ready = sum(1 for p in os.scandir(self.status) if p.name.endswith(".ready"))
            except OSError:
                continue
            self.worst = max(self.worst, ready)
            self.samples += 1

    def stop(self) -> dict[str, int]:
        self._done.set()
        self._thread.join()
        return {"worst_ready": self.worst, "samples": self.samples}


def paced_wal(cluster: Any, total_bytes: int, rate_bytes_s: float) -> tuple[str, float]:
    """About ``total_bytes`` of WAL at ``rate_bytes_s`` (small bulk inserts into a table of
    their own, each made when the WAL written so far is behind the clock's schedule), then a
    WAL switch; returns the last segment to archive and the rate reached.  The caller
    empties the table afterwards (:func:`drop_paced`), so the cluster does not grow."""
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS paced (LIKE notes INCLUDING DEFAULTS)")

        def lsn() -> int:
            row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
            assert row is not None
            return int(row[0])

        start = lsn()
        began = time.monotonic()
        made = 0
        while made < total_bytes:
            due = rate_bytes_s * (time.monotonic() - began)
            if made >= due:  # ahead of the schedule: wait for the clock to catch up
                time.sleep(min(0.25, (made - due) / rate_bytes_s + 0.001))
            else:
                rows = max(100, min(MiB // 4, total_bytes - made) // 250)
                conn.execute(
                    "INSERT INTO paced (id, project, note, blob) SELECT i, i %% 40, "
                    "'paced ' || (i %% 30000) || ' of project ' || (i %% 40), "
                    "decode(md5(random()::text) || md5(random()::text), 'hex') "
                    "FROM generate_series(1, %s) AS i",
                    (rows,),
                )
            made = lsn() - start
        rate = made / (time.monotonic() - began)
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        return str(row[0]), rate


def drop_paced(cluster: Any) -> None:
    cluster.execute("DROP TABLE IF EXISTS paced")


def wait_archived(cluster: Any, last: str, timeout: float = TIMEOUT) -> None:
    """Until PostgreSQL counts ``last`` (a segment name) archived and no file is ready."""
    status = cluster.data / "pg_wal" / "archive_status"
    deadline = time.monotonic() + timeout
    while True:
        done = cluster.execute("SELECT last_archived_wal FROM pg_stat_archiver")
        if done is not None and str(done)[:24] >= last and not any(status.glob("*.ready")):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the archiver did not archive {last}: {cluster.log_tail()}")
        time.sleep(0.05)


# -- restores --------------------------------------------------------------------------------


def digest(conn: Any) -> dict[str, list[int]]:
    """Row count and a sum of row hashes of every table the bench writes."""
    found: dict[str, list[int]] = {}
    for table in (
        "notes",
        "pgbench_accounts",
        "pgbench_branches",
        "pgbench_tellers",
        "pgbench_history",
    ):
        row = conn.execute(
            f"SELECT count(*), coalesce(sum(hashtext(t::text)::bigint), 0) FROM {table} t"
        ).fetchone()
        found[table] = [int(row[0]), int(row[1])]
    return found


def start_copy(root: Path) -> Any:
    """Start PostgreSQL on ``root``/data on a free port and a private socket folder, with
    archiving off (a promoted copy must not push a new timeline into either archive)."""
    from tests.support.pgcluster import Cluster, free_port

    copy = Cluster(root, free_port())
    _private(copy.socket_dir)
    options = (
        f"-c port={copy.port} -c unix_socket_directories={copy.socket_dir} "
        "-c archive_mode=off -c listen_addresses=127.0.0.1"
    )
    copy._run(  # no -w: the caller waits for the promotion itself
        [str(copy.bin / "pg_ctl"), "-D", str(copy.data), "-l", str(copy.log_file),
         "-o", options, "-W", "start"]
    )  # fmt: skip
    return copy


def wait_promoted(copy: Any, timeout: float = TIMEOUT) -> None:
    """Until the copy accepts connections and is out of recovery (target reached, promoted)."""
    import psycopg

    began = time.monotonic()
    while True:
        try:
            if copy.execute("SELECT NOT pg_is_in_recovery()"):
                return
        except psycopg.OperationalError:
            if copy.pid() is None and time.monotonic() - began > 10:
                raise SystemExit(f"the restored copy stopped: {copy.log_tail()}") from None
        if time.monotonic() - began > timeout:
            raise SystemExit(f"the restored copy did not promote: {copy.log_tail()}")
        time.sleep(0.05)


def restore_copy(work: Path, root: Path, target: str, asynchronous: bool) -> dict[str, Any]:
    """``pgbackrest restore`` to ``target`` into ``root``/data (fresh), then PostgreSQL on it
    until it promoted; the copy is left running for the caller's check (``copy``)."""
    shutil.rmtree(root, ignore_errors=True)
    _private(root)
    data = _private(root / "data")
    spool_in = work / "pgbr-spool" / "archive" / STANZA / "in"
    shutil.rmtree(spool_in, ignore_errors=True)
    # archive-get's options are not restore's: its command is written out in full (with the
    # copy's folder, which archive-get checks against PostgreSQL's)
    get = "--archive-async --archive-get-queue-max=1GiB" if asynchronous else "--no-archive-async"
    command = (
        f"{shutil.which('pgbackrest')} --config={work / 'pgbackrest.conf'} --stanza={STANZA} "
        f'--pg1-path={data} {get} archive-get %f "%p"'
    )
    started = time.perf_counter()
    pgbackrest(
        work, f"--pg1-path={data}", "--type=time", f"--target={target}",
        "--target-action=promote", f"--recovery-option=restore_command={command}", "restore",
    )  # fmt: skip
    restored = time.perf_counter()
    copy = start_copy(root)
    wait_promoted(copy)
    done = time.perf_counter()
    conf = (data / "postgresql.auto.conf").read_text()
    command = next((line for line in conf.splitlines() if line.startswith("restore_command")), "")
    return {
        "total_s": round(done - started, 2),
        "restore_s": round(restored - started, 2),
        "start_and_replay_s": round(done - restored, 2),
        "restore_command": command,
        "copy": copy,
    }


def stop_copy(copy: Any) -> None:
    """Stop a copy by its own postmaster pid and remove its folder."""
    copy.destroy()
