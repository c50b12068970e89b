"""The fleet's bootstrap against the harness's API: every deployment routed to its site's
queue with its schedule, nothing written on a rerun, a changed site updated alone, a site that
left removed with its automation (and said), and the limits the plan asks for."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import get_client

from backupflow.fleet import FLEET_TAG, load_fleet
from backupflow_app.fleet_deploy import AUTOMATION_PREFIX, FleetDeployReport, deploy_fleet


def _fleet_file(tmp_path: Path, sites: list[dict[str, Any]]) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "fleet": {"queue": "deploy-test-fleet", "pool": "deploy-test"},
                "defaults": {"timezone": "Asia/Seoul"},
                "sites": sites,
            }
        )
    )
    return path


def _deploy(path: Path) -> FleetDeployReport:
    async def run() -> FleetDeployReport:
        async with get_client() as client:
            return await deploy_fleet(client, load_fleet(path))

    return asyncio.run(run())


async def _state() -> tuple[dict[str, Any], set[str], dict[str, int]]:
    async with get_client() as client:
        flows = {str(f.id): f.name for f in await client.read_flows(limit=200)}
        deployments = {
            f"{flows[str(d.flow_id)]}/{d.name}": d
            for d in await client.read_deployments(limit=200)
            if FLEET_TAG in d.tags and d.work_pool_name == "deploy-test"
        }
        automations = {a.name for a in await client.read_automations()}
        limits = {
            limit.name: limit.limit
            for limit in await client.read_global_concurrency_limits(limit=200)
        }
    return deployments, automations, limits


def test_the_fleet_bootstrap_is_idempotent_and_removes_departed_sites(tmp_path: Path) -> None:
    east = {"name": "dep-east", "database": {"engine": "sqlite", "name": "gantt"}}
    west = {"name": "dep-west", "queue": "dep-west-host", "file_sets": ["config"]}
    path = _fleet_file(tmp_path, [east, west])
    first = _deploy(path)
    assert first.created > 0 and first.updated == 0
    deployments, automations, limits = asyncio.run(_state())
    full = deployments["backup-database/dep-east-full"]
    assert (full.work_queue_name, full.parameters) == ("dep-east", {"kind": "full"})
    assert full.schedules[0].schedule.cron == "0 2 * * *"  # type: ignore[union-attr]
    assert full.schedules[0].schedule.timezone == "Asia/Seoul"  # type: ignore[union-attr]
    assert full.job_variables["env"]["BACKUPFLOW_RUN_SITE"] == "dep-east"
    assert deployments["backup-files/dep-west-config"].work_queue_name == "dep-west-host"
    assert "backup-files/dep-west-uploads" not in deployments
    assert deployments["fleet-health/fleet"].work_queue_name == "deploy-test-fleet"
    assert {f"{AUTOMATION_PREFIX}dep-east", f"{AUTOMATION_PREFIX}dep-west"} <= automations
    assert limits["backupflow-database-dep-east"] == 1 and limits["backupflow-uploads-dr"] == 4

    again = _deploy(path)
    assert (again.created, again.updated, again.removed, again.automations, again.limits) == (
        0,
        0,
        [],
        0,
        0,
    )

    west["jobs"] = {"config": {"schedule": "30 3 * * *", "retention_days": 30}}
    changed = _deploy(_fleet_file(tmp_path, [east, west]))
    assert (changed.created, changed.updated) == (0, 1)
    deployments, _, _ = asyncio.run(_state())
    config = deployments["backup-files/dep-west-config"]
    assert [s.schedule.cron for s in config.schedules] == ["30 3 * * *"]  # type: ignore[union-attr]

    gone = _deploy(_fleet_file(tmp_path, [east]))
    assert gone.removed and all("dep-west" in name for name in gone.removed)
    assert any("removed (site dep-west left the fleet)" in line for line in gone.lines)
    assert any(f"automation {AUTOMATION_PREFIX}dep-west removed" in line for line in gone.lines)
    deployments, automations, _ = asyncio.run(_state())
    assert not [name for name in deployments if "dep-west" in name]
    assert f"{AUTOMATION_PREFIX}dep-west" not in automations
    assert "backup-database/dep-east-full" in deployments
