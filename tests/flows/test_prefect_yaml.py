"""prefect.yaml deploys to a real Prefect server with the seed's schedules."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import get_client

ROOT = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]


def _prefect(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


async def _deployments() -> dict[str, tuple[list[str], list[str], dict[str, object]]]:
    async with get_client() as client:
        found = {}
        for deployment in await client.read_deployments():
            crons = [str(getattr(s.schedule, "cron", "")) for s in deployment.schedules]
            zones = [str(getattr(s.schedule, "timezone", "")) for s in deployment.schedules]
            found[deployment.name] = (crons, zones, dict(deployment.parameters))
        return found


def test_prefect_yaml_deploys_every_job_with_its_schedule(
    prefect_server: str, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(tmp_path),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    pool = _prefect(["work-pool", "create", "backupflow", "--type", "process"], env)
    assert pool.returncode == 0 or "already exists" in pool.stdout + pool.stderr, pool.stderr
    deployed = _prefect(["--no-prompt", "deploy", "--all"], env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    found = asyncio.run(_deployments())
    assert found["database-full"][0] == ["0 2 * * *"]
    assert found["database-diff"][0] == ["0 */4 * * *"]
    assert found["database-log"][0] == ["0 * * * *"]
    assert {zone for name in ("database-full", "database-log") for zone in found[name][1]} == {
        "Asia/Seoul"
    }
    assert found["database-diff"][2] == {"kind": "diff"}
    assert found["restore-database"][0] == []
