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
SLICES = 6
ARCHIVE_TIMEOUT = 60.0
AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}

TIMER = """#!/bin/sh
# archive_command for the bench: backupflow wal-push %p, its wall time logged in ns.
start=$(date +%s%N)
"$BENCH_LAUNCHER" wal-push "$1"
rc=$?
end=$(date +%s%N)
echo "$1 $rc $((end - start))" >> "$BENCH_PUSH_TIMINGS"
exit $rc
"""


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


def _push_stats(timings: Path) -> dict[str, Any]:
    """Median and p99 seconds of the 16 MiB segments' pushes (not .history/.backup)."""
    seconds = []
    failed = 0
    if timings.exists():
        for line in timings.read_text().splitlines():
            name, rc, ns = line.split()
            if len(Path(name).name) != 24:
                continue
            if rc != "0":
                failed += 1
                continue
            seconds.append(int(ns) / 1e9)
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


def _base_backups(cluster: Any, settings: Any, work: Path) -> dict[str, Any]:
    from backupflow.models import BackupKind
    from tests.support.chain import take_backup

    started = time.perf_counter()
    manifest = take_backup(settings, BackupKind.FULL)
    ours_s = time.perf_counter() - started
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
    return {
        "cluster_bytes": base.raw_size,
        "ours_s": round(ours_s, 2),
        "ours_MBps": round(cluster_mb / ours_s, 1),
        "ours_output_bytes": stored,
        "ours_ratio": round(base.raw_size / stored, 2),
        "pg_basebackup_z_s": round(theirs_s, 2),
        "pg_basebackup_z_MBps": round(cluster_mb / theirs_s, 1),
        "pg_basebackup_z_output_bytes": theirs_bytes,
        "pg_basebackup_z_ratio": round(base.raw_size / theirs_bytes, 2),
        "speedup": round(theirs_s / ours_s, 2),
    }


def _hour_of_wal(cluster: Any, settings: Any, wal_bytes: int) -> dict[str, Any]:
    """A base, then ``wal_bytes`` of WAL in six slices (pgbench for a few seconds, then bulk
    inserts up to the slice's volume), a log backup after each."""
    from backupflow.models import BackupKind
    from tests.support.chain import take_backup

    full = take_backup(settings, BackupKind.FULL)
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


def run() -> dict[str, Any]:
    """Every PostgreSQL row; the cluster, the moto server and the work folder are removed."""
    import logging

    from tests.support.pgcluster import Cluster, launcher, pg_workdir
    from tests.support.s3 import MotoServer, client_for, make_bucket

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.update(AWS)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    work = pg_workdir("bf-pg-bench-")
    moto = MotoServer().start()
    cluster = None
    results: dict[str, Any] = {"cluster_mb_asked": PG_MB, "wal_mb_asked": WAL_MB}
    try:
        command = launcher(work)
        timer = work / "timed-push"
        timer.write_text(TIMER)
        timer.chmod(0o755)
        _chown(timer)
        local_timings = work / "push-local.txt"
        local_timings.touch()
        _chown(local_timings)
        s3_timings = work / "push-s3.txt"
        s3_timings.touch()
        _chown(s3_timings)
        common = {"BENCH_LAUNCHER": str(command), "PYTHONPATH": os.environ["PYTHONPATH"]}
        local_env = _tier_env({"url": str(_folder(work / "wal-local"))}, "pgbench")
        cluster = Cluster.create(
            work / "cluster",
            archive_command=f"{timer} %p",
            settings={"max_wal_size": "4GB", "checkpoint_timeout": "30min"},
            env={**local_env, **common, "BENCH_PUSH_TIMINGS": str(local_timings)},
        )
        cluster.start()
        cluster.add_backup_role()
        clock = time.perf_counter()
        _fill(cluster, PG_MB)
        cluster.execute("CHECKPOINT")
        results["fill_s"] = round(time.perf_counter() - clock, 1)
        _wait_archived(cluster)  # the base backups run alone, not beside the archiver
        results["fill_and_archive_s"] = round(time.perf_counter() - clock, 1)
        print(f"postgres: filled in {results['fill_s']} s", flush=True)

        # 1. base backups (ours into a local folder tier the worker (root) owns)
        full_env = _tier_env({"url": str(work / "repo-local")}, "pgbench")
        settings = _settings(full_env, cluster, work / "run-local", command)
        results["base_backup"] = _base_backups(cluster, settings, work)
        print(f"postgres base backup: {results['base_backup']}", flush=True)

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
        _restart(cluster, {**s3_env, **common, "BENCH_PUSH_TIMINGS": str(s3_timings)})
        results["wal_push_local"] = _push_stats(local_timings)
        print(f"postgres wal-push, local tier: {results['wal_push_local']}", flush=True)
        settings = _settings(s3_env, cluster, work / "run-s3", command)
        clock = time.perf_counter()
        hour = _hour_of_wal(cluster, settings, WAL_MB * MiB)
        results["hour_of_wal"] = {
            "seconds_to_make_and_archive": round(time.perf_counter() - clock, 1),
            "wal_bytes_generated": hour["wal_bytes_generated"],
            "log_backups": len(hour["logs"]),
            "log_backup_s_median": hour["log_backup_s_median"],
        }
        results["wal_push_s3"] = _push_stats(s3_timings)
        print(f"postgres wal-push, S3 tier: {results['wal_push_s3']}", flush=True)
        results["restore_one_hour"] = _restore(settings, hour, work)
        print(f"postgres restore: {results['restore_one_hour']}", flush=True)
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


__all__ = ["missing", "print_table", "run"]
