"""Every consulted tier's state reaches the result: ok, empty, unreachable (with the storage's
own cause) or denied.  "No backups" is said only when every consulted tier answered and held
none; otherwise the error names the tiers that could not be read, and why.

The DR tier is an S3 bucket whose endpoint is a closed port on loopback: the connection is
refused at once, as when the DR site's endpoint is down.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from backupflow.config import Settings
from backupflow.engines import open_engine
from backupflow.errors import NoBackupError
from backupflow.models import BackupKind, Category
from backupflow.restore import load_plan
from backupflow.restore_run import run_restore
from backupflow.steps import DirectSteps
from backupflow.storage import TierName, open_tiers
from backupflow.storage.s3_errors import translate_s3_error
from backupflow.tiers import TierState, locate, tier_state
from backupflow_app import cli
from tests.support.chain import content_digest, take_backup

REFUSED = "Could not connect to the endpoint URL"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def with_dr_down(settings: Settings) -> Settings:
    """The same settings with the DR tier an S3 bucket whose endpoint refuses connections."""
    dr = settings.repository.dr.model_copy(
        update={
            "url": "s3://dr-workload/backups",
            "region": "ap-northeast-1",
            "endpoint_url": f"http://127.0.0.1:{closed_port()}",
            "addressing_style": "path",
        }
    )
    repository = settings.repository.model_copy(update={"dr": dr, "request_attempts": 1})
    return settings.model_copy(update={"repository": repository})


@pytest.fixture
def dr_down(settings: Settings, aws_env: None) -> Settings:
    return with_dr_down(settings)


def _seed(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO tasks (name) VALUES (?)", [(f"t{i}",) for i in range(50)])
    conn.close()


def _restore(settings: Settings, source: tuple[TierName, ...] | None, into: Path) -> object:
    tiers = open_tiers(settings, source) if source else open_tiers(settings)
    return run_restore(
        open_engine(settings),
        tiers,
        settings.database.name,
        DirectSteps(),
        target_time=None,
        into=into,
        dry_run=True,
    )


def test_each_tier_says_what_it_answered(dr_down: Settings) -> None:
    _seed(dr_down.database.sqlite_path)
    tiers = open_tiers(dr_down)
    take_backup(dr_down, BackupKind.FULL, tiers=[t for t in tiers if t.name == "primary"])

    holdings = locate(tiers, Category.DATABASE.value, "gantt")

    states = {name: state.state for name, state in holdings.states.items()}
    assert states == {"primary": "ok", "secondary": "empty", "dr": "unreachable"}
    assert REFUSED in holdings.states["dr"].cause
    assert [s.tier for s in holdings.unread] == ["dr"]
    assert any("tier dr is unreachable" in p and REFUSED in p for p in holdings.problems)


def test_a_restore_from_an_unreachable_tier_names_it_and_the_cause(
    dr_down: Settings, tmp_path: Path
) -> None:
    with pytest.raises(NoBackupError) as raised:
        _restore(dr_down, ("dr",), tmp_path / "r.db")
    message = str(raised.value)
    assert "tier dr is unreachable" in message and REFUSED in message
    assert "there are no backups" not in message
    assert len(message.splitlines()) == 1


def test_auto_names_the_tiers_that_could_not_be_read(dr_down: Settings, tmp_path: Path) -> None:
    with pytest.raises(NoBackupError) as raised:
        _restore(dr_down, None, tmp_path / "r.db")
    message = str(raised.value)
    assert "no backups of gantt were found in tier(s) primary, secondary" in message
    assert "tier dr is unreachable" in message and REFUSED in message
    assert "there are no backups" not in message


def test_no_backups_only_when_every_tier_answered_empty(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(NoBackupError, match="there are no backups of gantt in this repository"):
        _restore(settings, None, tmp_path / "r.db")


def test_a_plan_that_reaches_its_point_still_carries_the_unreachable_tier(
    dr_down: Settings, tmp_path: Path
) -> None:
    live = dr_down.database.sqlite_path
    _seed(live)
    up = [t for t in open_tiers(dr_down) if t.name != "dr"]
    take_backup(dr_down, BackupKind.FULL, tiers=up)

    report = run_restore(
        open_engine(dr_down),
        open_tiers(dr_down),
        "gantt",
        DirectSteps(),
        target_time=None,
        into=tmp_path / "restored.db",
    )

    assert content_digest(tmp_path / "restored.db") == content_digest(live)
    assert report.outcome is not None and set(report.outcome.tiers_used.values()) == {"primary"}
    assert any("tier dr is unreachable" in p and REFUSED in p for p in report.problems)
    loaded = load_plan(open_tiers(dr_down), open_engine(dr_down), "gantt", None, report.plan.now)
    assert loaded.tier_states["dr"].state == "unreachable"
    assert loaded.tier_states["primary"] == TierState("primary", "ok")
    assert loaded.tier_states["secondary"] == TierState("secondary", "ok")


def test_a_refused_credential_is_denied_not_unreachable() -> None:
    refused = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "ListObjectsV2"
    )
    try:
        raise translate_s3_error(refused, bucket="dr-workload", operation="ListObjectsV2") from (
            refused
        )
    except Exception as exc:  # the StorageError a tier raises, its cause chained
        state = tier_state("dr", exc)
    assert state.state == "denied" and "was denied (AccessDenied)" in state.cause
    assert state.describe().startswith("tier dr is denied (")


def test_catalog_of_an_unreachable_tier_names_it_and_the_cause(
    dr_down: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "cli_settings", lambda *, for_flows=True: dr_down)

    with pytest.raises(SystemExit) as leaving:
        cli.main(["catalog", "--tier", "dr"])

    out, err = capsys.readouterr()
    flat = " ".join(err.split())
    assert leaving.value.code == 1
    assert "tier dr is unreachable" in flat and REFUSED in flat
    assert "Traceback" not in out + err

    with pytest.raises(SystemExit):
        cli.main(["catalog", "--json"])
    listed = capsys.readouterr().out
    tiers = {t["tier"]: t for t in json.loads(listed)["tiers"]}
    assert tiers["primary"]["state"] == "empty" and tiers["dr"]["state"] == "unreachable"
    assert REFUSED in tiers["dr"]["cause"]
