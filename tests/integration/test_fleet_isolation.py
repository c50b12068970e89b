"""Fleet isolation, in-process: a compromised site cannot forge, overwrite or prune another
site's backups (issue 25).

Two sites of one fleet file, ``alpha`` and ``beta``, each a SQLite database named ``gantt``,
share three tiers: a folder (primary) and two S3 buckets in moto (secondary, dr); each site
gets its own folder or prefix in each (``<url>/<site>``).  Each signs with its own key
(``generate_keys()``), and the fleet file lists each site's verify key under that site only.
A worker's settings come from ``load_settings()`` with ``BACKUPFLOW_FLEET``/``BACKUPFLOW_SITE``
and the host's secrets in its environment; alpha's restore host takes alpha's settings from
the fleet file (``load_fleet``) plus alpha's identity.

The attacker is beta's host: beta's settings and secrets, repointed at alpha's folders (what
a misconfigured or malicious beta does).  Backups, restores, prunes and verifies run through
the core's one run (``run_backup``, ``run_restore`` with ``DirectSteps``, ``prune_series``,
``verify``), the very code the flows run, without Prefect.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from backupflow.backup import clean_interrupted
from backupflow.catalog import Catalog, manifest_key
from backupflow.config import Settings, load_settings
from backupflow.engines import open_engine
from backupflow.errors import BackupflowError
from backupflow.fleet import load_fleet
from backupflow.keys import GeneratedKeys, generate_keys
from backupflow.leftovers import clean_leftovers
from backupflow.maintenance import heal_tiers, prune_series
from backupflow.models import BackupKind, Category, Manifest
from backupflow.retention import RetentionPolicy, prune_tier
from backupflow.series import all_series
from backupflow.steps import DirectSteps
from backupflow.storage import Tier, open_tiers
from backupflow.storage.base import get_bytes, put_bytes
from backupflow.tiers import locate
from backupflow.verify import Series, verify
from backupflow.verify.report import FOREIGN_MANIFEST
from backupflow_app import cli
from tests.support.chain import restore, take_backup
from tests.support.forge import plant_signed
from tests.support.s3 import MotoServer, client_for, make_bucket

SITES = ("alpha", "beta")
TIERS = ("primary", "secondary", "dr")
REGIONS = {"secondary": "ap-northeast-2", "dr": "ap-northeast-1"}
GANTT = Series(Category.DATABASE, "gantt")
LOG = logging.getLogger("test-fleet-isolation")

Rows = list[tuple[Any, ...]]


def _rows(path: Path) -> Rows:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, name FROM tasks ORDER BY id").fetchall()
    finally:
        conn.close()


def _add_rows(path: Path, site: str, start: int, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany(
            "INSERT INTO tasks (name) VALUES (?)",
            [(f"{site}-task-{i}",) for i in range(start, start + count)],
        )
    conn.close()


@dataclass
class Estate:
    """The fleet as the test sees it."""

    tmp: Path
    fleet_file: Path
    keys: dict[str, GeneratedKeys]
    buckets: dict[str, str]
    moto: MotoServer
    monkeypatch: pytest.MonkeyPatch

    def db(self, site: str) -> Path:
        return self.tmp / site / "app" / "gantt.db"

    def host_env(self, site: str) -> dict[str, str]:
        """What a site's host has: the fleet file, its site, and its own secrets."""
        return {
            "BACKUPFLOW_FLEET": str(self.fleet_file),
            "BACKUPFLOW_SITE": site,
            "BACKUPFLOW_CRYPTO__SIGNING_KEY": self.keys[site].signing_key,
            "BACKUPFLOW_CRYPTO__IDENTITIES": self.keys[site].identity,
        }

    def worker(self, site: str) -> Settings:
        """A site's worker settings, as its worker loads them (load_settings with its env)."""
        with self.monkeypatch.context() as env:
            for name, value in self.host_env(site).items():
                env.setenv(name, value)
            return load_settings()

    def restore_host(self, site: str) -> Settings:
        """The site's settings from the fleet file alone, plus the site's identity (a
        restore host holds no signing key)."""
        settings = load_fleet(self.fleet_file).site(site).settings
        crypto = settings.crypto.model_copy(
            update={"identities": SecretStr(self.keys[site].identity)}
        )
        return settings.model_copy(update={"crypto": crypto})

    def hostile(self) -> Settings:
        """Beta's worker settings and secrets, pointed at alpha's folder in every tier."""
        beta = self.worker("beta")
        alpha = load_fleet(self.fleet_file).site("alpha").settings.repository
        repository = beta.repository.model_copy(update={t: getattr(alpha, t) for t in TIERS})
        return beta.model_copy(update={"repository": repository})

    def objects(self, site: str) -> dict[tuple[str, str], bytes]:
        """Every object in the site's folder or prefix of every tier, by (tier, key)."""
        found: dict[tuple[str, str], bytes] = {}
        for path in (self.tmp / "tiers" / "primary" / site).rglob("*"):
            if path.is_file():
                found[("primary", str(path.relative_to(self.tmp)))] = path.read_bytes()
        s3 = client_for("us-east-1", self.moto.url)
        for tier, bucket in self.buckets.items():
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{site}/")
            for page in pages:
                for item in page.get("Contents", []):
                    body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                    found[(tier, item["Key"])] = body
        return found

    def all_keys(self) -> set[tuple[str, str]]:
        """Every object of every site in every tier (keys only)."""
        keys = {("primary", str(p)) for p in (self.tmp / "tiers").rglob("*") if p.is_file()}
        s3 = client_for("us-east-1", self.moto.url)
        for tier, bucket in self.buckets.items():
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys |= {(tier, item["Key"]) for item in page.get("Contents", [])}
        return keys


@pytest.fixture
def estate(tmp_path: Path, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Estate:
    keys = {site: generate_keys() for site in SITES}
    buckets = {tier: f"fleet-{tier}-{uuid.uuid4().hex[:10]}" for tier in REGIONS}
    for tier, bucket in buckets.items():
        make_bucket(client_for(REGIONS[tier], moto_server.url), bucket, REGIONS[tier])
    repository: dict[str, Any] = {"primary": {"url": str(tmp_path / "tiers" / "primary")}}
    for tier, bucket in buckets.items():
        repository[tier] = {
            "url": f"s3://{bucket}",
            "region": REGIONS[tier],
            "endpoint_url": moto_server.url,
            "addressing_style": "path",
        }
    repository["request_attempts"] = 1
    sites = [
        {
            "name": site,
            "file_sets": [],
            "staging_dir": str(tmp_path / site / "staging"),
            "backup_log": str(tmp_path / site / "backup.log"),
            "restore_roots": [str(tmp_path / site)],
            "orphan_grace_minutes": 0,
            "database": {
                "engine": "sqlite",
                "name": "gantt",
                "sqlite_path": str(tmp_path / site / "app" / "gantt.db"),
            },
            "crypto": {
                "recipients": [keys[site].recipient],
                "verify_keys": [keys[site].verify_key],
            },
        }
        for site in SITES
    ]
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(
        yaml.safe_dump({"version": 1, "defaults": {"repository": repository}, "sites": sites})
    )
    return Estate(tmp_path, fleet_file, keys, buckets, moto_server, monkeypatch)


@dataclass
class Backups:
    """Alpha's backups, the rows alpha's database held at its latest, and beta's backup."""

    alpha: list[Manifest]
    alpha_rows: Rows
    beta: Manifest
    beta_rows: Rows


@pytest.fixture
def backups(estate: Estate) -> Backups:
    """Alpha: a full, a differential and a log backup, each of more rows; beta: a full
    backup of its own, other rows, in its own folders."""
    alpha = estate.worker("alpha")
    made = []
    for index, kind in enumerate((BackupKind.FULL, BackupKind.DIFF, BackupKind.LOG)):
        _add_rows(estate.db("alpha"), "alpha", index * 100, 100 + index)
        made.append(take_backup(alpha, kind))
    _add_rows(estate.db("beta"), "beta", 0, 77)
    beta = take_backup(estate.worker("beta"), BackupKind.FULL)
    return Backups(made, _rows(estate.db("alpha")), beta, _rows(estate.db("beta")))


def _restore_rows(settings: Settings, into: Path, tiers: list[Tier] | None = None) -> Rows:
    _plan, outcome = restore(settings, None, into, tiers=tiers)
    return _rows(outcome.target)


def _tier(tiers: list[Tier], name: str) -> Tier:
    return next(t for t in tiers if t.name == name)


def _one_sentence(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message, message


# -- 1. forge -------------------------------------------------------------------------------


def test_beta_forging_into_alpha_folders_is_never_restored_and_is_named_foreign(
    estate: Estate, backups: Backups, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    hostile = estate.hostile()
    before = estate.objects("alpha")
    # a) beta's worker, repointed, backs its own database up into alpha's folders
    with pytest.raises(BackupflowError) as refused:
        take_backup(hostile, BackupKind.FULL)
    # it is stored (beta holds tier credentials), but beta sees alpha's backups as foreign
    # and prunes nothing
    _one_sentence(str(refused.value))
    assert "signed by no trusted key" in str(refused.value)
    assert "nothing was pruned" in str(refused.value)
    # b) beta copies its own signed manifest (and data) into alpha's secondary prefix
    beta_tiers = open_tiers(estate.worker("beta"))
    into = _tier(open_tiers(hostile), "secondary").storage
    source = _tier(beta_tiers, "secondary").storage
    for key in [manifest_key(backups.beta), *(o.key for o in backups.beta.objects)]:
        put_bytes(into, key, get_bytes(source, key))
    after = estate.objects("alpha")
    forged = {
        (tier, key) for (tier, key) in set(after) - set(before) if key.endswith(".manifest.json")
    }
    assert {tier for tier, _key in forged} == set(TIERS) and len(forged) == 4
    # nothing alpha had was replaced
    assert all(after[k] == data for k, data in before.items())

    # alpha's restore host restores alpha's rows, from every tier and from "auto"
    host = estate.restore_host("alpha")
    tiers = open_tiers(host)
    assert _restore_rows(host, estate.tmp / "alpha" / "auto.db") == backups.alpha_rows
    for tier in tiers:
        rows = _restore_rows(host, estate.tmp / "alpha" / f"{tier.name}.db", [tier])
        assert rows == backups.alpha_rows != backups.beta_rows
    # the catalog lists alpha's backups only and names each forged manifest as untrusted
    holdings = locate(tiers, "database", "gantt")
    assert set(holdings.entries) == {m.id for m in backups.alpha}
    for where, key in forged:
        name = key.rsplit("/", 1)[-1]
        assert any(name in p and "signed by no trusted key" in p for p in holdings.problems), (
            where,
            holdings.problems,
        )
    # verify (as alpha's restore host) reports each as a foreign manifest in its tier
    report = verify(tiers, [GANTT], now=datetime.now(UTC) + timedelta(hours=2))
    foreign = [f for f in report.findings if f.kind == FOREIGN_MANIFEST]
    for where, key in forged:
        name = key.rsplit("/", 1)[-1]
        assert any(f.tier == where and name in f.detail for f in foreign), (where, foreign)
    # what the operator sees: `backupflow catalog` on alpha's restore host
    for name, value in {**estate.host_env("alpha"), "BACKUPFLOW_CRYPTO__SIGNING_KEY": ""}.items():
        monkeypatch.setenv(name, value)
    assert cli.run(["catalog", "--json"]) == 1
    out, err = capsys.readouterr()
    listed = json.loads(out)
    assert {row["id"] for row in listed["backups"]} == {m.id for m in backups.alpha}
    flat = " ".join(err.split())
    assert "signed by no trusted key" in flat and "Traceback" not in out + err


# -- 2. overwrite ---------------------------------------------------------------------------


def test_beta_overwriting_an_alpha_object_is_refused_and_alpha_restores_elsewhere(
    estate: Estate, backups: Backups
) -> None:
    hostile = open_tiers(estate.hostile())
    log = backups.alpha[-1]
    record = log.object("data")
    # beta writes its own data (encrypted to beta) over alpha's log data in the primary
    # folder and the secondary bucket, cut to the very size alpha's manifest records
    beta_data = get_bytes(
        _tier(open_tiers(estate.worker("beta")), "secondary").storage,
        backups.beta.object("data").key,
    )
    forged = (beta_data * (record.size // len(beta_data) + 1))[: record.size]
    for name in ("primary", "secondary"):
        put_bytes(_tier(hostile, name).storage, record.key, forged)

    host = estate.restore_host("alpha")
    tiers = open_tiers(host)
    into = estate.tmp / "alpha" / "from-secondary.db"
    with pytest.raises(BackupflowError) as refused:
        restore(host, None, into, tiers=[_tier(tiers, "secondary")])
    message = str(refused.value)
    _one_sentence(message)
    assert f"no tier holds a usable copy of backup {log.id}" in message
    assert "secondary" in message and "damaged" in message
    assert not into.exists()  # nothing of beta's was installed
    # alpha's restore of its latest state reads that backup from the one good copy (dr)
    _plan, outcome = restore(host, None, estate.tmp / "alpha" / "auto.db")
    assert _rows(outcome.target) == backups.alpha_rows
    assert outcome.tiers_used[log.id] == "dr"


def test_beta_rewriting_an_alpha_manifest_with_its_own_key_is_refused(
    estate: Estate, backups: Backups
) -> None:
    hostile = open_tiers(estate.hostile())
    primary = _tier(hostile, "primary")
    full = backups.alpha[0]
    # beta replaces alpha's full backup in the primary tier: beta's data at alpha's key, and
    # alpha's manifest rewritten to match it, signed with beta's key
    beta_primary = _tier(open_tiers(estate.worker("beta")), "primary").storage
    beta_record = backups.beta.object("data")
    put_bytes(primary.storage, full.object("data").key, get_bytes(beta_primary, beta_record.key))
    objects = tuple(
        o.model_copy(update={"size": beta_record.size, "sha256": beta_record.sha256})
        if o.role == "data"
        else o
        for o in full.objects
    )
    key = plant_signed(
        primary.storage, full.model_copy(update={"objects": objects}), primary.keyring
    )
    assert key == manifest_key(full)

    host = estate.restore_host("alpha")
    tiers = open_tiers(host)
    with pytest.raises(BackupflowError) as refused:
        Catalog(_tier(tiers, "primary").storage, _tier(tiers, "primary").keyring).load_key(key)
    _one_sentence(str(refused.value))
    assert "signed by no trusted key" in str(refused.value)
    # from the primary tier alone no backup of alpha's chain can be restored: refused
    into = estate.tmp / "alpha" / "from-primary.db"
    with pytest.raises(BackupflowError) as no_restore:
        restore(host, None, into, tiers=[_tier(tiers, "primary")])
    _one_sentence(str(no_restore.value))
    assert "no full backup of gantt" in str(no_restore.value)
    assert not into.exists()
    # verify names it, in its tier; the other tiers restore alpha's rows
    report = verify(tiers, [GANTT], now=datetime.now(UTC) + timedelta(hours=2))
    assert any(
        f.kind == FOREIGN_MANIFEST and f.tier == "primary" and key.rsplit("/", 1)[-1] in f.detail
        for f in report.findings
    ), report.findings
    assert _restore_rows(host, estate.tmp / "alpha" / "auto.db") == backups.alpha_rows
    for name in ("secondary", "dr"):
        rows = _restore_rows(host, estate.tmp / "alpha" / f"{name}.db", [_tier(tiers, name)])
        assert rows == backups.alpha_rows


# -- 3. prune -------------------------------------------------------------------------------


def test_beta_pruning_and_cleaning_alpha_folders_deletes_nothing_of_alpha(
    estate: Estate, backups: Backups
) -> None:
    # a second full, so that retention has something of alpha's it would delete
    _add_rows(estate.db("alpha"), "alpha", 1000, 30)
    second = take_backup(estate.worker("alpha"), BackupKind.FULL)
    alpha_rows = _rows(estate.db("alpha"))
    later = datetime.now(UTC) + timedelta(days=400)
    eager = RetentionPolicy({kind: 1 for kind in BackupKind}, min_fulls=1)
    # with alpha's own trust, that retention would delete alpha's first chain (the control)
    alpha_tiers = open_tiers(estate.restore_host("alpha"))
    for tier in alpha_tiers:
        plan, _none = prune_tier(tier, Category.DATABASE, "gantt", eager, now=later, dry_run=True)
        assert {e.id for e in plan.deletions} == {m.id for m in backups.alpha}
    before = estate.objects("alpha")

    hostile = estate.hostile()
    assert hostile.orphan_grace_minutes == 0
    tiers = open_tiers(hostile)
    # the prune flow's own steps, tier by tier and series by series (prune_backups._prune)
    for tier in tiers:
        for series in all_series(hostile):
            plan, report = prune_series(tier, series.category, series.name, hostile, LOG)
            assert plan.decisions == () and report is not None and report.deleted == []
    # worst case: retention as eager as it gets, 400 days on, orphans with no grace
    for tier in tiers:
        plan, report = prune_tier(tier, Category.DATABASE, "gantt", eager, now=later, dry_run=False)
        assert report is not None and report.deleted == [] and report.failed == []
        assert (
            clean_interrupted(
                tier.storage, Category.DATABASE, "gantt", now=later, grace=timedelta(0)
            )
            == []
        )
    # a beta backup's healing (replicate, clean left-overs) over alpha's folders
    healing = heal_tiers(tiers, Category.DATABASE, "gantt", hostile, DirectSteps())
    assert healing.copied == []
    clean_leftovers(open_engine(hostile), hostile, LOG)

    assert estate.objects("alpha") == before  # every object, byte for byte
    host = estate.restore_host("alpha")
    for tier in open_tiers(host):
        rows = _restore_rows(host, estate.tmp / "alpha" / f"pruned-{tier.name}.db", [tier])
        assert rows == alpha_rows
    assert second.id in locate(alpha_tiers, "database", "gantt").entries


# -- 4. routing -----------------------------------------------------------------------------


def test_each_worker_serves_its_own_site_and_a_run_for_alpha_on_beta_is_refused(
    estate: Estate, backups: Backups, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    fleet = load_fleet(estate.fleet_file)
    for site in SITES:
        settings = fleet.site(site).settings
        worker = estate.worker(site)
        assert worker.repository == settings.repository
        assert settings.repository.primary.url.endswith(f"/primary/{site}")
        for tier, bucket in estate.buckets.items():
            assert getattr(settings.repository, tier).url == f"s3://{bucket}/{site}"
        assert settings.crypto.verify_keys == [estate.keys[site].verify_key]
    # each site's backups are in its own folders only, and alpha lists none of beta's
    alpha_ids = {m.id for m in backups.alpha}
    holdings = locate(open_tiers(estate.restore_host("alpha")), "database", "gantt")
    assert set(holdings.entries) == alpha_ids and holdings.problems == []
    assert not [key for _tier, key in estate.objects("alpha") if backups.beta.id in key]
    assert [key for _tier, key in estate.objects("beta") if backups.beta.id in key]

    for name, value in {**estate.host_env("beta"), "BACKUPFLOW_RUN_SITE": "beta"}.items():
        monkeypatch.setenv(name, value)
    assert load_settings().site == "beta"  # beta's own runs are served
    monkeypatch.setenv("BACKUPFLOW_RUN_SITE", "alpha")
    keys = estate.all_keys()
    logs = {site: (estate.tmp / site / "backup.log").read_bytes() for site in SITES}
    databases = {site: estate.db(site).read_bytes() for site in SITES}
    into = estate.tmp / "beta" / "stolen.db"
    for args in (
        ["backup", "database"],
        ["backup", "database", "--type", "log"],
        ["restore", "database", "--latest", "--into", str(into)],
        ["prune"],
    ):
        assert cli.run(args) == 3, args
        out, err = capsys.readouterr()
        flat = " ".join(err.split())
        assert "this run is for the site 'alpha' but this host serves 'beta'" in flat, err
        assert err.strip().count("\n") == 0 and "Traceback" not in out + err
    assert estate.all_keys() == keys
    assert not into.exists()
    assert {site: (estate.tmp / site / "backup.log").read_bytes() for site in SITES} == logs
    assert {site: estate.db(site).read_bytes() for site in SITES} == databases
