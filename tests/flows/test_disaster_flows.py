"""Disaster recovery: a whole-system rebuild from the DR tier alone, and failover with a DNS
switch against moto's Route 53."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort

from backupflow.config import FailoverSettings, Settings, use_settings
from backupflow.errors import ConfigError
from backupflow.failover import FailoverError
from backupflow.models import BackupKind
from flows.backup_database import backup_database
from flows.backup_files import backup_files
from flows.failover import failover
from flows.restore_system import restore_system
from tests.support.chain import content_digest
from tests.support.trees import make_api_tree, tree

PRIMARY_IP, STANDBY_IP = "192.0.2.10", "198.51.100.20"


@pytest.fixture
def sites(settings: Settings, tmp_path: Path) -> tuple[Settings, Settings]:
    """The primary site (backed up), and the standby host that has nothing yet."""
    site_a = tmp_path / "site-a"
    make_api_tree(site_a / "api")
    live = site_a / "app" / "gantt.db"
    live.parent.mkdir(parents=True)
    conn = sqlite3.connect(live)
    with conn:
        conn.execute("CREATE TABLE workload (id INTEGER PRIMARY KEY, who TEXT, hours REAL)")
        conn.executemany(
            "INSERT INTO workload (who, hours) VALUES (?, ?)",
            [(f"eng{i % 9}", i % 8) for i in range(2000)],
        )
    conn.close()

    def at(root: Path, db: Path, hook_record: Path) -> Settings:
        files = settings.files.model_copy(
            update={
                "config": settings.files.config.model_copy(update={"root": root}),
                "logs": settings.files.logs.model_copy(update={"root": root}),
                "uploads": settings.files.uploads.model_copy(update={"root": root}),
                "post_restore_hook": [
                    sys.executable,
                    "-c",
                    f"import pathlib; pathlib.Path({str(hook_record)!r}).write_text('reloaded')",
                ],
                "post_restore_cwd": tmp_path,
            }
        )
        database = settings.database.model_copy(update={"sqlite_path": db})
        return settings.model_copy(update={"files": files, "database": database})

    primary = at(site_a / "api", live, tmp_path / "hook-a.txt")
    standby = at(
        tmp_path / "site-b" / "api",
        tmp_path / "site-b" / "app" / "gantt.db",
        tmp_path / "hook-b.txt",
    )
    with use_settings(primary):
        backup_database(kind=BackupKind.FULL)
        conn = sqlite3.connect(live)
        with conn:
            conn.execute("UPDATE workload SET hours = 0 WHERE id < 50")
        conn.close()
        backup_database(kind=BackupKind.LOG)
        backup_files(file_set="config")
        backup_files(file_set="uploads")
    # The primary site is gone: only the DR tier is left.
    shutil.rmtree(tmp_path / "backups")
    shutil.rmtree(tmp_path / "secondary")
    return primary, standby


def test_whole_system_restore_from_the_dr_tier_alone(
    sites: tuple[Settings, Settings], tmp_path: Path
) -> None:
    primary, standby = sites
    with use_settings(standby):
        plan = restore_system(source="dr", dry_run=True)
        assert not standby.database.sqlite_path.exists()
        assert not standby.files.config.root.exists()
        assert [s["step"] for s in plan.steps] == [
            "database (plan)",
            "config (plan)",
            "uploads (plan)",
        ]
        report = restore_system(source="dr")
    assert content_digest(standby.database.sqlite_path) == content_digest(
        primary.database.sqlite_path
    )
    for prefixes in (("config/", ".env"), ("uploads/",)):
        assert tree(standby.files.config.root, prefixes=prefixes) == tree(
            primary.files.config.root, prefixes=prefixes
        )
    assert (tmp_path / "hook-b.txt").read_text() == "reloaded"
    assert [s["result"] for s in report.steps] == ["ok"] * 4
    # what the UI shows first: result, RTO so far, RPO, target, restore point (docs/objectives.md)
    artifact = Artifact.get(f"restore-system-{standby.database.name}")
    assert artifact is not None
    rows = json.loads(str(artifact.data))
    assert [list(row)[:5] for row in rows] == [
        ["result", "rto_so_far_s", "rpo_s", "target", "restore_point"]
    ] * 4
    assert rows[0]["target"] == "latest" and "+09:00 (" in rows[0]["restore_point"]
    assert report.restore_point is not None
    # RPO for the latest state: the run's start minus the restore point
    rpo = (report.started - report.restore_point).total_seconds()
    assert rows[0]["rpo_s"] == round(rpo, 1) and rpo > 0
    assert [r["rto_so_far_s"] for r in rows] == sorted(r["rto_so_far_s"] for r in rows)
    assert [run.name for run in _runs("restore-system", 2)] == [
        "restore-system-dr-latest",
        "restore-system-dr-latest-dry-run",
    ]


def _runs(flow_name: str, limit: int) -> list[FlowRun]:
    """The newest runs of ``flow_name`` as the Prefect API returns them, newest first."""
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=limit,
        )


@pytest.fixture
def route53(aws_env: None) -> Iterator[tuple[Any, str]]:
    with mock_aws():
        client = boto3.client("route53")
        zone = client.create_hosted_zone(Name="workload.example.", CallerReference="t")
        zone_id = zone["HostedZone"]["Id"].split("/")[-1]
        client.change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={
                "Changes": [
                    {
                        "Action": "CREATE",
                        "ResourceRecordSet": {
                            "Name": "api.workload.example.",
                            "Type": "A",
                            "TTL": 60,
                            "ResourceRecords": [{"Value": PRIMARY_IP}],
                        },
                    }
                ]
            },
        )
        yield client, zone_id


@pytest.fixture
def health() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(state["status"])
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/health"
    try:
        yield state
    finally:
        server.shutdown()


def _record(client: Any, zone: str) -> list[str]:
    sets = client.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return [
        r["Value"]
        for s in sets
        if s["Name"] == "api.workload.example." and s["Type"] == "A"
        for r in s["ResourceRecords"]
    ]


def _failover_settings(standby: Settings, zone: str, url: str) -> Settings:
    return standby.model_copy(
        update={
            "failover": FailoverSettings(
                hosted_zone_id=zone,
                record_name="api.workload.example",
                standby_address=STANDBY_IP,
                health_url=url,
                health_attempts=2,
                health_interval_seconds=0.1,
            )
        }
    )


def test_failover_switches_dns_only_after_a_verified_restore(
    sites: tuple[Settings, Settings], route53: tuple[Any, str], health: dict[str, Any]
) -> None:
    primary, standby = sites
    client, zone = route53
    settings = _failover_settings(standby, zone, health["url"])
    with use_settings(settings):
        dry = failover(dry_run=True)
        assert _record(client, zone) == [PRIMARY_IP] and not settings.database.sqlite_path.exists()
        assert any(f"{PRIMARY_IP} -> {STANDBY_IP}" in s["detail"] for s in dry.steps)
        report = failover()
    assert _record(client, zone) == [STANDBY_IP]
    names = [run.name for run in _runs("failover", 2)]
    assert re.fullmatch(r"failover-\d{4}-\d\d-\d\dT\d\d:\d\d\+09:00", names[0])
    assert re.fullmatch(r"failover-\d{4}-\d\d-\d\dT\d\d:\d\d\+09:00-dry-run", names[1])
    assert list(report.steps[0])[:2] == ["result", "step"]
    assert [s["step"] for s in report.steps] == [
        "pre-flight",
        "whole-system restore",
        "DNS switch",
        "health probe",
    ]
    assert content_digest(settings.database.sqlite_path) == content_digest(
        primary.database.sqlite_path
    )


def test_a_broken_chain_stops_the_failover_before_anything_is_touched(
    sites: tuple[Settings, Settings],
    route53: tuple[Any, str],
    health: dict[str, Any],
    tmp_path: Path,
) -> None:
    _primary, standby = sites
    client, zone = route53
    full_manifest = sorted((tmp_path / "dr" / "database").rglob("*-full-*.manifest.json"))[0]
    full_manifest.unlink()  # the chain is broken in the DR tier
    with (
        use_settings(_failover_settings(standby, zone, health["url"])),
        pytest.raises(FailoverError, match="pre-flight"),
    ):
        failover()
    assert _record(client, zone) == [PRIMARY_IP]
    assert not standby.database.sqlite_path.exists()


def test_an_unreachable_tier_stops_the_failover(
    sites: tuple[Settings, Settings],
    route53: tuple[Any, str],
    health: dict[str, Any],
    tmp_path: Path,
) -> None:
    _primary, standby = sites
    client, zone = route53
    shutil.rmtree(tmp_path / "dr")
    with (
        use_settings(_failover_settings(standby, zone, health["url"])),
        pytest.raises(FailoverError, match="pre-flight"),
    ):
        failover()
    assert _record(client, zone) == [PRIMARY_IP]


def test_a_failed_health_probe_is_reported(
    sites: tuple[Settings, Settings], route53: tuple[Any, str], health: dict[str, Any]
) -> None:
    _primary, standby = sites
    client, zone = route53
    health["status"] = 503
    with (
        use_settings(_failover_settings(standby, zone, health["url"])),
        pytest.raises(FailoverError, match="HTTP 503"),
    ):
        failover()
    assert _record(client, zone) == [STANDBY_IP]  # traffic moved; the probe said it is unwell


def _zone(client: Any, zone: str) -> list[tuple[str, str, list[str]]]:
    sets = client.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return sorted((s["Name"], s["Type"], [r["Value"] for r in s["ResourceRecords"]]) for s in sets)


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_a_misspelt_record_stops_the_failover_before_the_restore(
    sites: tuple[Settings, Settings],
    route53: tuple[Any, str],
    health: dict[str, Any],
    dry_run: bool,
) -> None:
    """Class 11: the UPSERT used to create the misspelt record and report success."""
    _primary, standby = sites
    client, zone = route53
    settings = _failover_settings(standby, zone, health["url"])
    typo = settings.model_copy(
        update={
            "failover": settings.failover.model_copy(update={"record_name": "apl.workload.example"})
        }
    )
    before = _zone(client, zone)
    with use_settings(typo), pytest.raises(FailoverError, match="has no A record named apl"):
        failover(dry_run=dry_run)
    assert _zone(client, zone) == before
    assert not standby.database.sqlite_path.exists()  # nothing was restored either
    assert not standby.files.config.root.exists()


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"standby_address": "not-an-ip;x"}, "not an IPv4 address"),
        ({"record_type": "AAAA"}, "not an IPv6 address"),
        ({"health_url": "file:///etc/passwd"}, "BACKUPFLOW_FAILOVER__HEALTH_URL"),
    ],
    ids=["address-not-an-ip", "ipv4-for-aaaa", "file-health-url"],
)
def test_failover_settings_that_skipped_validation_change_nothing(
    sites: tuple[Settings, Settings],
    route53: tuple[Any, str],
    health: dict[str, Any],
    changes: dict[str, Any],
    fragment: str,
) -> None:
    """Settings built in code (model_copy) skip pydantic's checks; the flow checks again."""
    _primary, standby = sites
    client, zone = route53
    settings = _failover_settings(standby, zone, health["url"])
    hostile = settings.model_copy(update={"failover": settings.failover.model_copy(update=changes)})
    before = _zone(client, zone)
    with use_settings(hostile), pytest.raises(ConfigError, match=fragment):
        failover()
    assert _zone(client, zone) == before
    assert not standby.database.sqlite_path.exists()
