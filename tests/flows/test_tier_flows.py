"""Backups reach three tiers (a folder and two S3 buckets in two regions, served by moto over
HTTP); a tier lost mid-run is named and backfilled; any single tier restores the database."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupflow.backuplog import BackupLog
from backupflow.catalog import Catalog
from backupflow.config import Settings, use_settings
from backupflow.errors import ObjectLockedError, TierError
from backupflow.models import BackupKind, Category
from backupflow.progress import report_progress
from backupflow.storage import open_tier
from flows.backup_database import backup_database
from flows.replicate_backups import replicate_backups
from flows.restore_database import restore_database
from tests.support.chain import content_digest
from tests.support.s3 import MotoServer, client_for, make_bucket

SECONDARY_REGION = "ap-northeast-2"
DR_REGION = "ap-northeast-1"


@pytest.fixture
def servers(aws_env: None) -> Iterator[tuple[MotoServer, MotoServer]]:
    """Two S3 endpoints on loopback: one for the secondary tier, one for DR."""
    secondary, dr = MotoServer().start(), MotoServer().start()
    try:
        yield secondary, dr
    finally:
        secondary.stop()
        dr.stop()


@pytest.fixture
def s3_settings(
    settings: Settings, servers: tuple[MotoServer, MotoServer]
) -> tuple[Settings, dict[str, Any]]:
    secondary, dr = servers
    suffix = uuid.uuid4().hex[:10]
    buckets = {"secondary": f"workload-{suffix}", "dr": f"dr-workload-{suffix}"}
    make_bucket(client_for(SECONDARY_REGION, secondary.url), buckets["secondary"], SECONDARY_REGION)
    make_bucket(client_for(DR_REGION, dr.url), buckets["dr"], DR_REGION, lock=True)
    common = {"addressing_style": "path", "storage_class": "STANDARD_IA"}
    repository = settings.repository.model_copy(
        update={
            "secondary": settings.repository.secondary.model_copy(
                update={
                    "url": f"s3://{buckets['secondary']}/backups",
                    "region": SECONDARY_REGION,
                    "endpoint_url": secondary.url,
                    **common,
                }
            ),
            "dr": settings.repository.dr.model_copy(
                update={
                    "url": f"s3://{buckets['dr']}",
                    "region": DR_REGION,
                    "endpoint_url": dr.url,
                    "object_lock_mode": "GOVERNANCE",
                    "object_lock_days": 1,
                    **common,
                }
            ),
            "part_bytes": 5 << 20,
            "request_attempts": 1,
        }
    )
    return settings.model_copy(update={"repository": repository}), buckets


def _seed(path: Path, rows: int = 20_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE workload (id INTEGER PRIMARY KEY, who TEXT, hours REAL)")
        conn.executemany(
            "INSERT INTO workload (who, hours) VALUES (?, ?)",
            [(f"eng{i % 40}", i % 8) for i in range(rows)],
        )
    conn.close()


def _change(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(sql)
    conn.close()


def _ids(settings: Settings, tier: str) -> list[str]:
    storage = open_tier(tier, settings).storage  # type: ignore[arg-type]
    return [e.id for e in Catalog(storage).entries(Category.DATABASE, settings.database.name)]


def test_chain_reaches_all_tiers_and_dr_alone_restores_it(
    s3_settings: tuple[Settings, dict[str, Any]], tmp_path: Path
) -> None:
    settings, _buckets = s3_settings
    live = settings.database.sqlite_path
    _seed(live)
    with use_settings(settings):
        ids = [backup_database(kind=BackupKind.FULL)[0].id]
        _change(live, "UPDATE workload SET hours = hours + 1 WHERE id % 7 = 0")
        ids.append(backup_database(kind=BackupKind.DIFF)[0].id)
        _change(live, "DELETE FROM workload WHERE id % 11 = 0")
        ids.append(backup_database(kind=BackupKind.LOG)[0].id)
        for tier in ("primary", "secondary", "dr"):
            assert _ids(settings, tier) == ids, tier

        shutil.rmtree(settings.repository.primary.url)  # the primary site is lost
        report = restore_database(into=str(live.parent / "from-dr.db"), source="dr")
        assert report.outcome is not None
        assert set(report.outcome.tiers_used.values()) == {"dr"}
        assert content_digest(live.parent / "from-dr.db") == content_digest(live)

        auto = restore_database(into=str(live.parent / "auto.db"))
        assert auto.outcome is not None
        assert set(auto.outcome.tiers_used.values()) == {"secondary"}
        assert content_digest(live.parent / "auto.db") == content_digest(live)

    dr = open_tier("dr", settings)
    manifest, _tier = next(
        (Catalog(dr.storage, dr.keyring).load(e), e)
        for e in Catalog(dr.storage, dr.keyring).entries(Category.DATABASE, "gantt")
    )
    with pytest.raises(ObjectLockedError, match="Object Lock"):
        dr.storage.delete(manifest.objects[0].key)
    assert dr.storage.stat(manifest.objects[0].key).size == manifest.objects[0].size


def test_a_tier_lost_mid_run_is_named_and_backfilled_by_the_next_run(
    s3_settings: tuple[Settings, dict[str, Any]], servers: tuple[MotoServer, MotoServer]
) -> None:
    settings, _buckets = s3_settings
    secondary_server, _dr = servers
    live = settings.database.sqlite_path
    _seed(live)
    cut = []

    def lose_secondary(_bytes: int) -> None:
        if not cut:  # the first bytes reach the primary tier: now the secondary goes away
            cut.append(True)
            secondary_server.stop()

    with use_settings(settings):
        with report_progress(lose_secondary), pytest.raises(TierError, match="secondary") as err:
            backup_database(kind=BackupKind.FULL)[0]
        assert "primary, dr" in str(err.value)
        missing_id = BackupLog(settings.backup_log).read()[-1]["id"]
        assert BackupLog(settings.backup_log).read()[-1]["status"] == "incomplete"
        assert _ids(settings, "primary") == [missing_id]
        assert _ids(settings, "dr") == [missing_id]

        secondary_server.start()  # back, on the same port
        assert _ids(settings, "secondary") == []
        _change(live, "UPDATE workload SET hours = 0 WHERE id < 10")
        log = backup_database(kind=BackupKind.LOG)[0]
        assert _ids(settings, "secondary") == [missing_id, log.id]

        again = replicate_backups()  # idempotent: nothing left to copy
        assert again.copied == []


def test_a_damaged_copy_is_reported_and_the_next_tier_restores(
    s3_settings: tuple[Settings, dict[str, Any]],
    servers: tuple[MotoServer, MotoServer],
    tmp_path: Path,
) -> None:
    settings, buckets = s3_settings
    live = settings.database.sqlite_path
    _seed(live)
    with use_settings(settings):
        full = backup_database(kind=BackupKind.FULL)[0]
        shutil.rmtree(settings.repository.primary.url)
        data = full.object("data")
        raw = client_for(SECONDARY_REGION, servers[0].url)
        key = f"backups/{data.key}"
        body = bytearray(raw.get_object(Bucket=buckets["secondary"], Key=key)["Body"].read())
        body[len(body) // 2] ^= 0xFF
        raw.put_object(Bucket=buckets["secondary"], Key=key, Body=bytes(body))

        report = restore_database(into=str(live.parent / "r.db"))
    assert report.outcome is not None
    assert report.outcome.tiers_used == {full.id: "dr"}
    assert any("secondary copy of backup" in p and data.key in p for p in report.problems)
    assert content_digest(live.parent / "r.db") == content_digest(live)
