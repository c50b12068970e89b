"""The PostgreSQL rows of ``make bench`` (``bench/run.py`` calls :func:`run`; results go under
"postgres" in bench/out/results.json).

One throwaway cluster (``tests/support/pgcluster.py``: it runs as the postgres OS user, in a
private ``pg_workdir()`` removed afterwards) filled with about ``BENCH_PG_MB`` MiB (1024 by
default): half pgbench's tables (``pgbench -i``), half rows of text and random bytes.

1. Base backup: ours (one full through the one backup run into a local folder tier) against
   ``pg_basebackup -Ft -z -X fetch`` to local disk, on the same cluster, one after the other.
2. ``wal-push`` latency per 16 MiB segment, as PostgreSQL runs it: the cluster's own
   archive_command is ``<timer> %p``, a shell script that runs ``backupflow wal-push %p``
   (a new process per segment, cwd = the data folder) and logs its wall time.  The segments
   of the fill go to a local folder tier owned by postgres; those of the "hour of WAL" to an
   S3 tier on moto's HTTP server.  Compared with archive_timeout = 60 s.
3. Restore to a target one hour of WAL after the base: ``BENCH_PG_WAL_MB`` MiB of WAL
   (1024 = 64 segments by default: an hour of a busy app) made by pgbench runs and bulk
   inserts, archived into S3 by wal-push, a log backup after every sixth of it; then one
   restore through the one restore run to the last log's restore point.  Split: base
   lay-down, pg_verifybackup + start of the copy, WAL replay, pg_amcheck.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "src"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

MiB = 1 << 20
SEGMENT = 16 * MiB
PG_MB = int(os.environ.get("BENCH_PG_MB", "1024"))
WAL_MB = int(os.environ.get("BENCH_PG_WAL_MB", "1024"))
#: pgBackRest's archive rows: segments per phase, and the fixed WAL rate (MiB/s) of each.
PUSH_SEGMENTS = int(os.environ.get("BENCH_PG_PUSH_SEGMENTS", "32"))
WAL_RATE_MB = float(os.environ.get("BENCH_PG_WAL_RATE_MB", "16"))
SLICES = 6
ARCHIVE_TIMEOUT = 60.0
AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def missing() -> str | None:
    """Why the PostgreSQL rows cannot run here, or None."""
    from tests.support.pgcluster import pg_missing

    return pg_missing()


def _chown(path: Path) -> Path:
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _folder(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return _chown(path)


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _push_seconds(timings: Path, tool: str, phases: tuple[str, ...]) -> tuple[list[float], int]:
    """Seconds of ``tool``'s pushes of 16 MiB segments (not .history/.backup) in ``phases``,
    and how many failed."""
    seconds = []
    failed = 0
    if timings.exists():
        for line in timings.read_text().splitlines():
            who, phase, name, rc, ns = line.split()
            if who != tool or phase not in phases or len(Path(name).name) != 24:
                continue
            if rc != "0":
                failed += 1
                continue
            seconds.append(int(ns) / 1e9)
    return seconds, failed


def _push_stats(timings: Path, tool: str = "ours", *phases: str) -> dict[str, Any]:
    """Median and p99 seconds of the 16 MiB segments' pushes, and every sample."""
    seconds, failed = _push_seconds(timings, tool, phases)
    if not seconds:
        return {"segments": 0, "failed": failed}
    return {
        "segments": len(seconds),
        "failed": failed,
        "median_s": round(statistics.median(seconds), 3),
        "p99_s": round(_pct(seconds, 0.99), 3),
        "max_s": round(max(seconds), 3),
        "MBps_median": round(16 / statistics.median(seconds), 1),
        "archive_timeout_s": ARCHIVE_TIMEOUT,
        "p99_share_of_archive_timeout": round(_pct(seconds, 0.99) / ARCHIVE_TIMEOUT, 4),
        "samples_s": [round(s, 4) for s in seconds],
    }


# -- the cluster ------------------------------------------------------------------------------


def _tier_env(primary: dict[str, str], database: str) -> dict[str, str]:
    from tests.support.keys import key_env

    env = {f"BACKUPFLOW_REPOSITORY__PRIMARY__{k.upper()}": v for k, v in primary.items()}
    return {
        **AWS,
        **env,
        "BACKUPFLOW_REPOSITORY__SECONDARY__ENABLED": "false",
        "BACKUPFLOW_REPOSITORY__DR__ENABLED": "false",
        "BACKUPFLOW_DATABASE__NAME": database,
        **key_env(),
    }


def _settings(env: dict[str, str], cluster: Any, work: Path, launcher: Path) -> Any:
    """This process's settings, from the same variables the cluster's processes see."""
    from backupflow.config import load_settings
    from tests.support.pgcluster import BACKUP_ROLE, BACKUP_ROLE_PASSWORD

    for key in [k for k in os.environ if k.startswith("BACKUPFLOW_REPOSITORY__")]:
        del os.environ[key]
    os.environ.update(env)
    return load_settings(
        staging_dir=work / "staging",
        backup_log=work / "log" / "backup.log",
        restore_roots=[work],
        database={
            "engine": "postgres",
            "name": env["BACKUPFLOW_DATABASE__NAME"],
            "server": "127.0.0.1",
            "port": cluster.port,
            "user": BACKUP_ROLE,
            "password": BACKUP_ROLE_PASSWORD,
            "pg_data_dir": cluster.data,
            "pg_superuser": "postgres",
            "pg_backupflow_command": str(launcher),
            "archive_wait_seconds": 1800,
            "recovery_wait_seconds": 3600,
        },
    )


def _restart(cluster: Any, env: dict[str, str]) -> None:
    """Restart with a new environment (the archive_command's settings); wait until the
    segments left over are archived first."""
    _wait_archived(cluster)
    cluster.stop()
    cluster.env = env
    cluster.start()


def _wait_archived(cluster: Any, timeout: float = 1800) -> None:
    status = cluster.data / "pg_wal" / "archive_status"
    deadline = time.monotonic() + timeout
    while any(status.glob("*.ready")):
        if time.monotonic() > deadline:
            raise AssertionError(f"the archiver fell behind: {cluster.log_tail()}")
        time.sleep(0.2)


def _psql(cluster: Any, *args: str) -> None:
    from tests.support.pgcluster import as_cluster_user

    subprocess.run(
        as_cluster_user(
            [str(cluster.bin / args[0]), *args[1:], "-h", str(cluster.socket_dir),
             "-p", str(cluster.port), "-U", "postgres"]
        ),
        check=True, capture_output=True, cwd=cluster.root,
    )  # fmt: skip


def _fill(cluster: Any, mb: int) -> None:
    """Half pgbench tables (about 15 MiB per scale step), half rows of text + random bytes."""
    _psql(cluster, "pgbench", "-i", "-q", "-s", str(max(1, mb // 2 // 15)), "postgres")
    cluster.execute(
        "CREATE TABLE notes (id bigserial PRIMARY KEY, project int NOT NULL, "
        "note text NOT NULL, blob bytea NOT NULL)"
    )
    _insert_notes(cluster, mb // 2 * MiB)


def _insert_notes(cluster: Any, target_bytes: int) -> None:
    """Rows of about 170 bytes on disk (index included): a repetitive note and 32 random
    bytes, in batches of 100,000."""
    rows = max(1, target_bytes // 170)
    with cluster.connect() as conn:
        while rows > 0:
            batch = min(rows, 100_000)
            conn.execute(
                "INSERT INTO notes (project, note, blob) SELECT i %% 40, "
                "'task ' || (i %% 30000) || ' of project ' || (i %% 40) || ': status ok', "
                "decode(md5(random()::text) || md5(random()::text), 'hex') "
                "FROM generate_series(1, %s) AS i",
                (batch,),
            )
            rows -= batch


def _wal_lsn(cluster: Any) -> int:
    return int(cluster.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


# -- the three measures -----------------------------------------------------------------------


def _base_backups(cluster: Any, settings: Any, work: Path, pgbr: bool) -> dict[str, Any]:
    """Ours, pgBackRest, pgBackRest, ours (A B B A; only ours twice without pgBackRest),
    then ``pg_basebackup -z`` once."""
    import pgbackrest

    from backupflow.models import BackupKind
    from tests.support.chain import take_backup

    ours: list[float] = []
    theirs: list[dict[str, Any]] = []
    manifest = None
    for who in ("ours", "pgbackrest", "pgbackrest", "ours"):
        if who == "ours":
            started = time.perf_counter()
            manifest = take_backup(settings, BackupKind.FULL)
            ours.append(round(time.perf_counter() - started, 3))
        elif pgbr:
            theirs.append(pgbackrest.backup(work))
    assert manifest is not None
    ours_s = statistics.median(ours)
    base = next(o for o in manifest.objects if o.role == "base")
    stored = sum(o.size for o in manifest.objects)
    cluster_mb = base.raw_size / MiB

    theirs_dir = work / "pg_basebackup"
    started = time.perf_counter()
    _psql(
        cluster, "pg_basebackup", "-D", str(theirs_dir), "-Ft", "-z", "-X", "fetch",
        "--checkpoint=fast", "--no-password",
    )  # fmt: skip
    theirs_s = time.perf_counter() - started
    theirs_bytes = _tree_bytes(theirs_dir)
    shutil.rmtree(theirs_dir)
    row = {
        "cluster_bytes": base.raw_size,
        "ours_s": round(ours_s, 2),
        "ours_samples_s": ours,
        "ours_MBps": round(cluster_mb / ours_s, 1),
        "ours_output_bytes": stored,
        "ours_ratio": round(base.raw_size / stored, 2),
        "pg_basebackup_z_s": round(theirs_s, 2),
        "pg_basebackup_z_MBps": round(cluster_mb / theirs_s, 1),
        "pg_basebackup_z_output_bytes": theirs_bytes,
        "pg_basebackup_z_ratio": round(base.raw_size / theirs_bytes, 2),
        "speedup": round(theirs_s / ours_s, 2),
    }
    if theirs:
        pgbr_s = statistics.median(t["seconds"] for t in theirs)
        pgbr_bytes = theirs[-1]["bytes"]
        row.update(
            pgbackrest_s=round(pgbr_s, 2),
            pgbackrest_samples=theirs,
            pgbackrest_MBps=round(cluster_mb / pgbr_s, 1),
            pgbackrest_output_bytes=pgbr_bytes,
            pgbackrest_ratio=round(base.raw_size / pgbr_bytes, 2),
        )
    return row


def _hour_of_wal(
    cluster: Any, settings: Any, wal_bytes: int, after_full: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """A base (then ``after_full``: pgBackRest's), then ``wal_bytes`` of WAL in six slices
    (pgbench for a few seconds, then bulk inserts up to the slice's volume), a log backup
    after each."""
    from backupflow.models import BackupKind
    from tests.support.chain import take_backup

    full = take_backup(settings, BackupKind.FULL)
    other_full = after_full() if after_full else None
    start = _wal_lsn(cluster)
    logs = []
    log_seconds = []
    for index in range(1, SLICES + 1):
        goal = start + wal_bytes * index // SLICES
        _psql(cluster, "pgbench", "-n", "-c", "4", "-j", "2", "-T", "2", "postgres")
        while _wal_lsn(cluster) < goal:
            _insert_notes(cluster, min(8 * MiB, max(MiB, goal - _wal_lsn(cluster)) // 2))
        clock = time.perf_counter()
        logs.append(take_backup(settings, BackupKind.LOG))
        log_seconds.append(time.perf_counter() - clock)
    end = _wal_lsn(cluster)
    return {
        "full": full,
        "other_full": other_full,
        "logs": logs,
        "wal_bytes_generated": end - start,
        "log_backup_s_median": round(statistics.median(log_seconds), 2),
    }


@contextlib.contextmanager
def _timed(owner: Any, name: str, into: dict[str, float], key: str) -> Iterator[None]:
    """Wrap ``owner.name`` so its wall time adds up in ``into[key]``; unwrap afterwards."""
    original: Callable[..., Any] = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        clock = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into[key] = into.get(key, 0.0) + time.perf_counter() - clock

    setattr(owner, name, timed)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def _keep_failure(restoring: Any, into: Path) -> Iterator[None]:
    """When the copy stops during recovery, keep its server log and the fetch report in
    ``into`` (the scratch folder is removed with the failed restore)."""
    original = restoring.copy_failed

    def keeping(copy: Any, until: Any) -> Any:
        with contextlib.suppress(OSError):
            report = copy.scratch / restoring.REPORT_FILE
            into.parent.mkdir(parents=True, exist_ok=True)
            into.write_text(
                f"{copy.log_tail(400)}\n--- fetch report ---\n"
                f"{report.read_text() if report.exists() else '(none)'}"
            )
            print(f"postgres restore failed: the copy's log is in {into}", flush=True)
        return original(copy, until)

    restoring.copy_failed = keeping
    try:
        yield
    finally:
        restoring.copy_failed = original


def _restore(settings: Any, hour: dict[str, Any], work: Path) -> dict[str, Any]:
    from backupflow.engines.postgres import engine as pg_engine
    from backupflow.engines.postgres import layout, restoring
    from tests.support.chain import restore

    target_time = hour["logs"][-1].restore_point
    into = _folder(work / "restored") / "data"
    split: dict[str, float] = {}
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_timed(layout, "extract_base", split, "base_laydown_s"))
        stack.enter_context(_timed(restoring, "wait", split, "wal_replay_s"))
        stack.enter_context(_timed(pg_engine.PostgresEngine, "_amcheck", split, "amcheck_s"))
        stack.enter_context(_timed(pg_engine.PostgresEngine, "restore", split, "engine_s"))
        out = Path(os.environ.get("BENCH_OUT") or ROOT / "bench" / "out")
        failure_log = out / "pg-restore-failure.log"
        stack.enter_context(_keep_failure(restoring, failure_log))
        plan, _outcome = restore(settings, target_time, into)
    total = time.perf_counter() - started
    wal = [o for m in plan.manifests for o in m.objects if o.role.startswith("wal:")]
    engine_s = split.pop("engine_s", 0.0)
    known = sum(split.values())
    figures = {k: round(v, 2) for k, v in split.items()}
    return {
        "target": target_time.isoformat(),
        "chain": len(plan.manifests),
        "total_s": round(total, 2),
        **figures,
        "verify_and_start_s": round(engine_s - known, 2),
        "download_plan_install_s": round(total - engine_s, 2),
        "wal_files_in_chain": len(wal),
        "wal_bytes_in_chain": sum(o.raw_size for o in wal),
        "wal_stored_bytes": sum(o.size for o in wal),
    }


def _push_phases(cluster: Any, work: Path, timings: Path) -> dict[str, Any]:
    """``PUSH_SEGMENTS`` segments of WAL at ``WAL_RATE_MB`` MiB/s in each of four phases:
    ours alone, ours and pgBackRest sync (one script, alternating which goes first),
    pgBackRest sync alone, pgBackRest async alone; each push timed, and the worst backlog
    of ``.ready`` files sampled while the phase makes and archives its WAL."""
    import pgbackrest

    phases = {
        "push-ours": ("ours", False),
        "push-both": ("ours,pgbackrest-sync", True),
        "push-sync": ("pgbackrest-sync", False),
        "push-async": ("pgbackrest-async", False),
    }
    out: dict[str, Any] = {
        "segments_per_phase": PUSH_SEGMENTS,
        "wal_rate_MiBps_asked": WAL_RATE_MB,
    }
    for phase, (tools, alternate) in phases.items():
        pgbackrest.set_mode(work, phase, tools, alternate)
        backlog = pgbackrest.Backlog(cluster.data)
        try:
            last, rate = pgbackrest.paced_wal(cluster, PUSH_SEGMENTS * SEGMENT, WAL_RATE_MB * MiB)
            pgbackrest.wait_archived(cluster, last)
        finally:
            worst = backlog.stop()
        pgbackrest.drop_paced(cluster)
        entry: dict[str, Any] = {"wal_rate_MiBps": round(rate / MiB, 1), **worst}
        for tool in tools.split(","):
            entry[tool] = _push_stats(timings, tool, phase)
        out[phase] = entry
        print(f"postgres {phase}: {entry}", flush=True)
    return out


def _start_installed(root: Path) -> Any:
    """Our restored (installed) copy at ``root``/data, started for the row check."""
    import pgbackrest

    copy = pgbackrest.start_copy(root)
    pgbackrest.wait_promoted(copy, timeout=600)
    return copy


def _check_rows(who: str, copy: Any, expected: dict[str, list[int]]) -> dict[str, list[int]]:
    """The copy's rows (count and hash sum per table); exits when they are not ``expected``."""
    import pgbackrest

    with copy.connect() as conn:
        got = pgbackrest.digest(conn)
    if got != expected:
        raise SystemExit(
            f"{who}'s restored copy does not hold the rows committed by the target: "
            f"{got} != {expected}"
        )
    return got


def _pgbackrest_restores(work: Path, target: Any, expected: dict[str, list[int]]) -> dict[str, Any]:
    """pgBackRest's restores to ``target``: archive-get async, then sync; each copy checked
    to hold exactly ``expected``, then stopped and removed."""
    import pgbackrest

    moment = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    out: dict[str, Any] = {"target": moment}
    for mode in ("async", "sync"):
        done = pgbackrest.restore_copy(work, work / f"pgbr-{mode}", moment, mode == "async")
        copy = done.pop("copy")
        try:
            done["rows"] = _check_rows(f"pgBackRest ({mode} archive-get)", copy, expected)
        finally:
            pgbackrest.stop_copy(copy)
        out[mode] = done
        print(f"postgres pgBackRest restore, {mode} archive-get: {done}", flush=True)
    return out


def _ratio(theirs: float | None, ours: float | None) -> float | None:
    return round(theirs / ours, 2) if theirs and ours else None


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    """The PGBACKREST ratios (backupflow's speed ÷ pgBackRest's: its time ÷ ours) and the
    stored-size ratio (its bytes ÷ ours) and worst backlogs."""
    base = results["base_backup"]
    both = results["pgbackrest_push"]["push-both"]
    restores = results["pgbackrest_restore"]
    return {
        "full": _ratio(base.get("pgbackrest_s"), base["ours_s"]),
        "push_p50": _ratio(both["pgbackrest-sync"].get("median_s"), both["ours"].get("median_s")),
        "push_p99": _ratio(both["pgbackrest-sync"].get("p99_s"), both["ours"].get("p99_s")),
        "restore": _ratio(restores["async"]["total_s"], results["restore_one_hour"]["total_s"]),
        "restore_vs_sync_get": _ratio(
            restores["sync"]["total_s"], results["restore_one_hour"]["total_s"]
        ),
        "stored_size": _ratio(base.get("pgbackrest_output_bytes"), base["ours_output_bytes"]),
        "worst_backlog": {
            "ours": results["pgbackrest_push"]["push-ours"]["worst_ready"],
            "both_sync": both["worst_ready"],
            "pgbackrest_sync": results["pgbackrest_push"]["push-sync"]["worst_ready"],
            "pgbackrest_async": results["pgbackrest_push"]["push-async"]["worst_ready"],
        },
    }


def _failed_pushes(timings: Path) -> list[str]:
    failed = []
    for line in timings.read_text().splitlines():
        who, phase, name, rc, _ns = line.split()
        if rc != "0":
            failed.append(f"{who} ({phase}) {Path(name).name}: exit {rc}")
    return failed


def run() -> dict[str, Any]:
    """Every PostgreSQL row; the cluster, the moto server and the work folder are removed."""
    import logging

    import pgbackrest

    from tests.support.pgcluster import Cluster, launcher, pg_workdir
    from tests.support.s3 import MotoServer, client_for, make_bucket

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.update(AWS)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    pgbr_missing = pgbackrest.missing()
    if pgbr_missing:
        print(f"pgBackRest rows skipped: {pgbr_missing}", flush=True)
    pgbr = pgbr_missing is None

    def tools(*names: str) -> str:
        return ",".join(n for n in names if pgbr or not n.startswith("pgbackrest"))

    work = pg_workdir("bf-pg-bench-")
    moto = MotoServer().start()
    cluster = None
    results: dict[str, Any] = {"cluster_mb_asked": PG_MB, "wal_mb_asked": WAL_MB}
    try:
        command = launcher(work)
        script = work / "archive-to-backupflow-and-pgbackrest"
        script.write_text(pgbackrest.ARCHIVE_SCRIPT)
        script.chmod(0o755)
        _chown(script)
        timings = work / "pushes.txt"
        timings.touch()
        _chown(timings)
        pgbackrest.set_mode(work, "fill", "ours")
        common = {
            "BENCH_LAUNCHER": str(command),
            "PYTHONPATH": os.environ["PYTHONPATH"],
            "BENCH_PUSH_TIMINGS": str(timings),
            "BENCH_ARCHIVE_MODE": str(work / "archive-mode"),
        }
        local_env = _tier_env({"url": str(_folder(work / "wal-local"))}, "pgbench")
        cluster = Cluster.create(
            work / "cluster",
            archive_command=f"{script} %p",
            settings={"max_wal_size": "4GB", "checkpoint_timeout": "30min"},
            env={**local_env, **common},
        )
        if pgbr:
            common.update(pgbackrest.setup(work, cluster))
            cluster.env.update(common)
        cluster.start()
        cluster.add_backup_role()
        if pgbr:
            pgbackrest.create_stanza(work)
        clock = time.perf_counter()
        _fill(cluster, PG_MB)
        cluster.execute("CHECKPOINT")
        results["fill_s"] = round(time.perf_counter() - clock, 1)
        _wait_archived(cluster)  # the base backups run alone, not beside the archiver
        results["fill_and_archive_s"] = round(time.perf_counter() - clock, 1)
        print(f"postgres: filled in {results['fill_s']} s", flush=True)
        results["wal_push_local"] = _push_stats(timings, "ours", "fill")
        print(f"postgres wal-push, local tier: {results['wal_push_local']}", flush=True)

        # 1. base backups (ours into a local folder tier the worker (root) owns); from here
        # on every segment goes to both archives, pgBackRest first (its backup waits for it)
        pgbackrest.set_mode(work, "base", tools("pgbackrest-sync", "ours"))
        full_env = _tier_env({"url": str(work / "repo-local")}, "pgbench")
        settings = _settings(full_env, cluster, work / "run-local", command)
        results["base_backup"] = _base_backups(cluster, settings, work, pgbr)
        print(f"postgres base backup: {results['base_backup']}", flush=True)
        if pgbr:  # pgBackRest's restore starts from its full at the hour's start, below
            results["pgbackrest_push"] = _push_phases(cluster, work, timings)

        # 2 + 3. an S3 tier on moto: the archive_command's tier, and the backups'
        bucket = "pg-bench"
        make_bucket(client_for("us-east-1", moto.url), bucket, "us-east-1")
        s3_env = _tier_env(
            {
                "url": f"s3://{bucket}/repo",
                "region": "us-east-1",
                "endpoint_url": moto.url,
                "addressing_style": "path",
            },
            "pgbench",
        )
        pgbackrest.set_mode(work, "restart", tools("pgbackrest-sync", "ours"))
        _restart(cluster, {**s3_env, **common})
        pgbackrest.set_mode(work, "hour", tools("ours", "pgbackrest-sync"), alternate=pgbr)
        settings = _settings(s3_env, cluster, work / "run-s3", command)
        clock = time.perf_counter()
        hour = _hour_of_wal(
            cluster, settings, WAL_MB * MiB, (lambda: pgbackrest.backup(work)) if pgbr else None
        )
        # the rows committed by the target (nothing writes between the last log backup
        # and here), then more rows after it, archived, which no restored copy may hold
        with cluster.connect() as conn:
            expected = pgbackrest.digest(conn)
        _insert_notes(cluster, MiB)
        after = int(cluster.execute("SELECT count(*) FROM notes"))
        last = str(cluster.execute("SELECT pg_walfile_name(pg_switch_wal())"))
        pgbackrest.wait_archived(cluster, last)
        results["hour_of_wal"] = {
            "seconds_to_make_and_archive": round(time.perf_counter() - clock, 1),
            "wal_bytes_generated": hour["wal_bytes_generated"],
            "log_backups": len(hour["logs"]),
            "log_backup_s_median": hour["log_backup_s_median"],
            "rows_at_target": expected,
            "notes_after_target": after,
        }
        if hour["other_full"]:
            results["hour_of_wal"]["pgbackrest_full"] = hour["other_full"]
        results["wal_push_s3"] = _push_stats(timings, "ours", "hour")
        print(f"postgres wal-push, S3 tier: {results['wal_push_s3']}", flush=True)
        results["restore_one_hour"] = _restore(settings, hour, work)
        copy = _start_installed(work / "restored")
        try:
            results["restore_one_hour"]["rows"] = _check_rows("backupflow", copy, expected)
        finally:
            pgbackrest.stop_copy(copy)
        print(f"postgres restore: {results['restore_one_hour']}", flush=True)
        if pgbr:
            target = hour["logs"][-1].restore_point
            results["pgbackrest_restore"] = _pgbackrest_restores(work, target, expected)
            results["pgbackrest_push"]["hour"] = {
                tool: _push_stats(timings, tool, "hour") for tool in ("ours", "pgbackrest-sync")
            }
            results["pgbackrest"] = _summary(results)
        failed = _failed_pushes(timings)
        if failed:
            results["failed_pushes"] = failed
            raise SystemExit(f"archive_command pushes failed: {failed[:5]}")
    finally:
        if cluster is not None:
            cluster.destroy()
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    return results


def print_table(results: dict[str, Any]) -> None:
    base = results["base_backup"]
    print()
    print(f"PostgreSQL, cluster of {base['cluster_bytes'] / MiB:.0f} MiB")
    print("| base backup | s | MB/s | output MiB | ratio |")
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| ours (full, local tier) | {base['ours_s']} | {base['ours_MBps']} | "
        f"{base['ours_output_bytes'] / MiB:.0f} | {base['ours_ratio']} |"
    )
    print(
        f"| pg_basebackup -Ft -z -X fetch | {base['pg_basebackup_z_s']} | "
        f"{base['pg_basebackup_z_MBps']} | {base['pg_basebackup_z_output_bytes'] / MiB:.0f} | "
        f"{base['pg_basebackup_z_ratio']} |"
    )
    print()
    print("| wal-push per 16 MiB segment | segments | median s | p99 s | max s |")
    print("| --- | --- | --- | --- | --- |")
    for label, key in (("local folder tier", "wal_push_local"), ("S3 tier (moto)", "wal_push_s3")):
        row = results[key]
        print(
            f"| {label} | {row['segments']} | {row.get('median_s')} | {row.get('p99_s')} | "
            f"{row.get('max_s')} |"
        )
    r = results["restore_one_hour"]
    print()
    print(
        f"restore to a target {r['wal_bytes_in_chain'] / MiB:.0f} MiB of WAL "
        f"({r['wal_files_in_chain']} files) after the base: {r['total_s']} s "
        f"(lay-down {r.get('base_laydown_s')}, verify + start {r['verify_and_start_s']}, "
        f"replay {r.get('wal_replay_s')}, amcheck {r.get('amcheck_s')}, "
        f"plan + install {r['download_plan_install_s']})"
    )
    if "pgbackrest" in results:
        print_pgbackrest(results)


def print_pgbackrest(results: dict[str, Any]) -> None:
    """pgBackRest beside ours: full backups, archive pushes at a fixed WAL rate, restores."""
    base = results["base_backup"]
    push = results["pgbackrest_push"]
    restores = results["pgbackrest_restore"]
    ours = results["restore_one_hour"]
    summary = results["pgbackrest"]
    print()
    print("| pgBackRest beside ours | ours | pgBackRest | pgBackRest's ÷ ours |")
    print("| --- | --- | --- | --- |")
    print(
        f"| full backup s (A B B A medians; pgBackRest process-max=2, zst) | {base['ours_s']} | "
        f"{base['pgbackrest_s']} | {summary['full']} |"
    )
    print(
        f"| full backup stored MiB | {base['ours_output_bytes'] / MiB:.1f} | "
        f"{base['pgbackrest_output_bytes'] / MiB:.1f} | {summary['stored_size']} |"
    )
    both = push["push-both"]
    for label, key in (("p50", "median_s"), ("p99", "p99_s")):
        print(
            f"| archive push {label} s per segment, one script, alternating (pgBackRest sync) | "
            f"{both['ours'].get(key)} | {both['pgbackrest-sync'].get(key)} | "
            f"{summary['push_' + label]} |"
        )
    alone = (push["push-ours"]["ours"], push["push-sync"]["pgbackrest-sync"])
    async_push = push["push-async"]["pgbackrest-async"]
    print(
        f"| archive push p50 / p99 s, each tool alone (sync; async) | "
        f"{alone[0].get('median_s')} / {alone[0].get('p99_s')} | "
        f"{alone[1].get('median_s')} / {alone[1].get('p99_s')}; "
        f"{async_push.get('median_s')} / {async_push.get('p99_s')} | |"
    )
    backlog = summary["worst_backlog"]
    print(
        f"| worst .ready backlog at {push['wal_rate_MiBps_asked']:g} MiB/s, alone "
        f"(sync; async) | {backlog['ours']} | {backlog['pgbackrest_sync']}; "
        f"{backlog['pgbackrest_async']} | |"
    )
    print(
        f"| restore to T + start + replay s (pgBackRest async get) | {ours['total_s']} | "
        f"{restores['async']['total_s']} (restore {restores['async']['restore_s']}, "
        f"replay {restores['async']['start_and_replay_s']}) | {summary['restore']} |"
    )
    print(
        f"| the same, pgBackRest sync get | {ours['total_s']} | "
        f"{restores['sync']['total_s']} (restore {restores['sync']['restore_s']}, "
        f"replay {restores['sync']['start_and_replay_s']}) | {summary['restore_vs_sync_get']} |"
    )


__all__ = ["missing", "print_pgbackrest", "print_table", "run"]
