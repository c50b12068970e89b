"""The benchmark cannot rot: ``make test`` runs every scenario of ``make bench`` on small
inputs (``bench/run.py --quick``: seconds, PostgreSQL and pgBackRest rows included) and
checks that each produced its row, that the output ends with the LIMIT line and then the
PGBACKREST line scripts read, and that every restored PostgreSQL copy (ours and
pgBackRest's, async and sync archive-get) held exactly the rows committed by the target.
Speeds are not asserted here (timings on a busy test machine mean nothing); request budgets
are, because they do not depend on the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need
from tests.support.pgcluster import pg_missing

ROOT = Path(__file__).resolve().parents[2]
#: The bench needs these besides Python: the standard-tool chain and the seed's way.
TOOLS = ("zstd", "age", "sha256sum", "gzip", "gunzip", "tee", "sync")
ROWS = {
    "CPU ceiling: pipeline to /dev/null",
    "backup to local tier",
    "restore from local tier",
    "backup to local tier, age-encrypted",
    "restore from local tier, age-encrypted",
    "backup to local + 2 S3 tiers",
    "restore from S3 (DR)",
    "memory: backup of 4x the input to local tier",
}
NUMBER = r"(\d+\.\d\d)"
PGBACKREST = re.compile(
    rf"PGBACKREST full={NUMBER} push_p50={NUMBER} push_p99={NUMBER} restore={NUMBER}"
)
LIMIT = re.compile(
    r"LIMIT local_backup=(\d+\.\d\d) local_restore=(\d+\.\d\d) "
    r"local_backup_encrypted=(\d+\.\d\d) local_restore_encrypted=(\d+\.\d\d)"
)


def _aws() -> str | None:
    local = ROOT / ".venv-awscli" / "bin" / "aws"
    return shutil.which("aws") or (str(local) if local.exists() else None)


@pytest.mark.timeout(900)
def test_every_bench_scenario_produces_its_row(tmp_path: Path) -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    need(not missing, f"the bench's command-line tools {missing} (make bootstrap installs them)")
    aws = _aws()
    need(aws is not None, "the AWS CLI for the seed's way (make test installs .venv-awscli)")
    reason = pg_missing()
    need(reason is None, f"the bench's PostgreSQL rows: {reason}")
    need(
        shutil.which("pgbackrest") is not None,
        "pgBackRest for the bench's pgBackRest rows (make bootstrap installs Debian's pgbackrest)",
    )
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "BACKUPFLOW_"))}
    env.update(BENCH_OUT=str(out), BENCH_AWS=str(aws))

    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=850,
    )

    tail = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, tail
    *_, limit_line, pgbackrest_line = done.stdout.strip().splitlines()
    assert LIMIT.fullmatch(limit_line), tail
    ratios = PGBACKREST.fullmatch(pgbackrest_line)
    assert ratios, tail
    assert all(float(r) > 0 for r in ratios.groups()), pgbackrest_line
    results = json.loads((out / "results.json").read_text())
    rows = {row["scenario"]: row for row in results["rows"]}
    assert set(rows) == ROWS
    for row in rows.values():
        assert row["ours_s"] > 0 and row["ours_rss_MiB"] > 0, row
    for label in ROWS - {"memory: backup of 4x the input to local tier"}:
        assert rows[label]["ref_s"] > 0 and rows[label]["ratio"] > 0, rows[label]
    assert set(results["limit"]) == {
        "local_backup",
        "local_restore",
        "local_backup_encrypted",
        "local_restore_encrypted",
    }
    assert results["peak_rss_MiB"]["32 MiB"] < 256
    planning = results["planning"]
    assert planning["listed"] == planning["backups"] == 300
    assert planning["restore_plan_steps"] > 0 and planning["retention_deletions"] > 0
    assert planning["restore_plan_requests"] <= 20
    assert planning["retention_plan_requests"] <= 15
    pg = results["postgres"]
    assert pg["base_backup"]["ours_s"] > 0 and pg["base_backup"]["pg_basebackup_z_s"] > 0
    for tier in ("wal_push_local", "wal_push_s3"):
        assert pg[tier]["segments"] > 0 and pg[tier]["failed"] == 0, pg[tier]
    assert pg["restore_one_hour"]["wal_files_in_chain"] > 0
    assert pg["restore_one_hour"]["total_s"] > 0
    # every restored copy holds exactly the rows committed by the target (count and hash sum
    # of every table), not the rows inserted and archived after it
    expected = pg["hour_of_wal"]["rows_at_target"]
    assert 0 < expected["notes"][0] < pg["hour_of_wal"]["notes_after_target"]
    assert pg["restore_one_hour"]["rows"] == expected
    for mode in ("async", "sync"):
        restored = pg["pgbackrest_restore"][mode]
        assert restored["rows"] == expected and restored["total_s"] > 0, restored
    summary = pg["pgbackrest"]
    assert summary["stored_size"] > 0
    assert set(summary["worst_backlog"]) == {
        "ours",
        "both_sync",
        "pgbackrest_sync",
        "pgbackrest_async",
    }
    both = pg["pgbackrest_push"]["push-both"]
    for tool in ("ours", "pgbackrest-sync"):
        assert both[tool]["segments"] > 0 and both[tool]["failed"] == 0, both[tool]
        assert len(both[tool]["samples_s"]) == both[tool]["segments"]
    assert len(pg["base_backup"]["pgbackrest_samples"]) == 2
