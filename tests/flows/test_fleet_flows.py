"""The fleet's own flows under the Prefect harness: the restore test of a site, fleet health
(worst first, two storage requests per series and tier, what the orchestrator knows), fleet
verify (a forged manifest names its site) and the fleet review."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate

from backupflow.backup_run import DatabaseSubject, run_backup
from backupflow.config import KeySettings
from backupflow.engines import open_engine
from backupflow.fleet import load_fleet
from backupflow.keys import GeneratedKeys, generate_keys
from backupflow.steps import DirectSteps
from backupflow.storage import open_tiers
from flows.fleet_health import FleetHealthError, fleet_health
from flows.fleet_review import fleet_review
from flows.fleet_verify import fleet_verify
from flows.restore_test import restore_test

SITES = ("alpha", "beta")


def _rows(key: str) -> list[dict[str, Any]]:
    artifact = Artifact.get(key)
    assert artifact is not None, key
    rows: list[dict[str, Any]] = json.loads(str(artifact.data))
    return rows


def _crypto(keys: GeneratedKeys) -> KeySettings:
    return KeySettings(
        recipients=[keys.recipient],
        identities=keys.identity,
        signing_key=keys.signing_key,
        verify_keys=[keys.verify_key],
    )


@pytest.fixture
def fleet_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    keys = {site: generate_keys() for site in SITES}
    sites = []
    for index, site in enumerate(SITES):
        db = tmp_path / site / "app.db"
        db.parent.mkdir()
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT)")
            rows = [(f"{site}-{i}",) for i in range(100 + 50 * index)]
            conn.executemany("INSERT INTO tasks (name) VALUES (?)", rows)
        conn.close()
        sites.append(
            {
                "name": site,
                "file_sets": [],
                "staging_dir": str(tmp_path / site / "staging"),
                "backup_log": str(tmp_path / site / "backup.log"),
                "restore_roots": [str(tmp_path / site)],
                "database": {"engine": "sqlite", "name": "gantt", "sqlite_path": str(db)},
                "crypto": {
                    "recipients": [keys[site].recipient],
                    "verify_keys": [keys[site].verify_key],
                },
            }
        )
    document = {
        "defaults": {
            "timezone": "Asia/Seoul",
            "repository": {
                t: {"url": str(tmp_path / "tiers" / t)} for t in ("primary", "secondary", "dr")
            },
        },
        "sites": sites,
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("BACKUPFLOW_FLEET", str(path))
    for site in load_fleet(path).sites:
        settings = site.settings.model_copy(update={"crypto": _crypto(keys[site.name])})
        run_backup(
            DatabaseSubject(open_engine(settings), settings), open_tiers(settings), DirectSteps()
        )
    return {"path": path, "keys": keys, "tmp": tmp_path}


async def _poll_queues(names: list[str]) -> None:
    """What a worker does: poll its queues (the API records when)."""
    async with get_client() as client:
        with contextlib.suppress(Exception):  # made by an earlier test of this session
            await client.create_work_pool(WorkPoolCreate(name="backupflow", type="process"))
        for name in names:
            with contextlib.suppress(Exception):
                await client.create_work_queue(name=name, work_pool_name="backupflow")
        await client.get_scheduled_flow_runs_for_work_pool("backupflow", work_queue_names=names)


def test_a_restore_test_then_fleet_health_worst_first(
    fleet_file: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # alpha's host runs its restore test (its own identity, its own site)
    monkeypatch.setenv("BACKUPFLOW_SITE", "alpha")
    for name, value in (
        ("BACKUPFLOW_CRYPTO__IDENTITIES", fleet_file["keys"]["alpha"].identity),
        ("BACKUPFLOW_CRYPTO__SIGNING_KEY", fleet_file["keys"]["alpha"].signing_key),
    ):
        monkeypatch.setenv(name, value)
    rows = restore_test()
    assert rows[0]["result"] == "passed" and rows[0]["chain_bytes"] > 0
    history = _rows("alpha-restore-test")
    assert history[0]["result"] == "passed" and history[0]["rto_seconds"] > 0
    for name in (
        "BACKUPFLOW_SITE",
        "BACKUPFLOW_CRYPTO__IDENTITIES",
        "BACKUPFLOW_CRYPTO__SIGNING_KEY",
    ):
        monkeypatch.delenv(name)

    # beta's backups are gone from one tier: stale there; both sites' workers poll.
    for manifest in (fleet_file["tmp"] / "tiers" / "dr" / "beta").rglob("*.manifest.json"):
        manifest.unlink()
    asyncio.run(_poll_queues(list(SITES)))
    with pytest.raises(FleetHealthError, match=r"1 of 2 sites need attention: beta \(stale"):
        fleet_health()
    table = _rows("fleet-health")
    assert [r["site"] for r in table] == ["beta", "alpha"]
    assert table[0]["state"] == "stale" and "database/gantt in dr: no backup" in table[0]["detail"]
    assert table[1]["state"] == "ok" and table[1]["recovery_age_minutes"] < 10
    assert table[1]["predicted_restore_minutes"] != "—"  # from alpha's restore test
    description = Artifact.get("fleet-health").description  # type: ignore[union-attr]
    # two requests per series and tier: 2 sites x 1 series x 3 tiers, less beta's empty dr
    assert "11 storage requests" in str(description), description


def test_fleet_verify_names_the_site_with_a_forged_manifest(fleet_file: dict[str, Any]) -> None:
    rows = fleet_verify(read_data_percent=100)
    assert [(r["site"], r["findings"]) for r in rows] == [("alpha", 0), ("beta", 0)]
    # beta's host (beta's key) plants a manifest in alpha's folder, signed by itself
    forged_from = next((fleet_file["tmp"] / "tiers" / "primary" / "beta").rglob("*.manifest.json"))
    target = (
        fleet_file["tmp"]
        / "tiers"
        / "primary"
        / "alpha"
        / forged_from.relative_to(fleet_file["tmp"] / "tiers" / "primary" / "beta")
    )
    target.write_bytes(forged_from.read_bytes())
    with pytest.raises(Exception, match="verify found problems on 1 of 2 sites: alpha"):
        fleet_verify(read_data_percent=0)
    rows = _rows("fleet-verify")
    assert rows[0]["site"] == "alpha" and rows[0]["findings"] >= 1 and rows[1]["findings"] == 0


def test_the_fleet_review_lists_every_site(fleet_file: dict[str, Any]) -> None:
    markdown = fleet_review()
    assert "| alpha |" in markdown and "| beta |" in markdown
    assert "none on record" in markdown  # no drill yet
    artifact = Artifact.get("fleet-review")
    assert artifact is not None and "| beta |" in str(artifact.data)


def test_a_failed_restore_test_fails_its_run_and_is_on_record(
    fleet_file: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.restore_test import RestoreTestError

    monkeypatch.setenv("BACKUPFLOW_SITE", "beta")
    monkeypatch.setenv("BACKUPFLOW_CRYPTO__IDENTITIES", fleet_file["keys"]["beta"].identity)
    # beta's stored data is damaged in the tier its restore tests read
    damaged = [
        path
        for path in (fleet_file["tmp"] / "tiers" / "primary" / "beta").rglob("*")
        if path.is_file() and ".manifest" not in path.name and "keys" not in path.parts
    ]
    assert damaged
    for path in damaged:
        path.write_bytes(b"\0" * max(1, path.stat().st_size))
    with pytest.raises(RestoreTestError, match="1 of 1 restore tests failed: gantt"):
        restore_test()
    row = _rows("beta-restore-test")[0]
    assert row["result"] == "failed" and row["reason"] not in ("", "—")
    assert "\n" not in row["reason"]
