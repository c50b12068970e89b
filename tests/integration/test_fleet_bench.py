"""The fleet benchmark cannot rot: ``make test`` runs ``bench/fleet.py --quick`` (a real
Prefect server, a moto S3 server, two sites) and checks its FLEET line: the bootstrap's rerun
wrote nothing, fleet health stayed within two storage requests per series and tier, and the
storm lost no run.  Times are printed, not asserted (``make bench`` holds them to their
bounds at a hundred sites)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLEET = re.compile(
    r"FLEET sites=(\d+) bootstrap_s=([\d.]+) rerun_s=([\d.]+) health_s=([\d.]+) "
    r"health_requests=(\d+) budget=(\d+) storm=(\d+) storm_p99_s=([\d.]+) "
    r"storm_done_s=([\d.]+) storm_lost=(\d+) server_peak_mib=(\d+)"
)


@pytest.mark.timeout(900)
def test_the_fleet_bench_runs_and_keeps_its_budgets() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fleet.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    found = FLEET.search(done.stdout)
    assert found, output[-4000:]
    sites, requests, budget, storm, lost = (int(found.group(i)) for i in (1, 5, 6, 7, 10))
    assert sites == 2 and storm == 2
    assert 0 < requests <= budget == 2 * 3 * sites  # one database series, three tiers
    assert lost == 0
    assert "rerun of 2 sites" in done.stdout and "0 deployments created, 0 updated" in done.stdout
