"""The fleet file: sites validated by the settings models, one sentence per problem naming the
site and field, no secrets, shared tiers split per site, and the plan of deployments and
limits the bootstrap carries out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backupflow.config import load_settings
from backupflow.errors import ConfigError
from backupflow.fleet import (
    FLEET_TAG,
    drill_cron,
    fleet_of_one,
    load_fleet,
    plan_deployments,
    plan_limits,
    restore_test_pairs,
)

FLEET = """\
version: 1
fleet: {queue: estate, tier_upload_slots: 3}
defaults:
  timezone: Asia/Seoul
  repository: {secondary: {url: s3://estate-backups}, dr: {url: s3://estate-dr/fleet/}}
  jobs: {database_log: {schedule: "5 * * * *", retention_days: 3}}
sites:
  - name: seoul
    database: {engine: sqlite, name: gantt, sqlite_path: /srv/seoul/gantt.db}
  - name: tokyo
    queue: tokyo-db
    file_sets: [config]
    database: {engine: postgres, name: reports}
    repository: {primary: {url: /data/tokyo-backups}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def test_sites_inherit_the_defaults_and_split_shared_tiers(tmp_path: Path) -> None:
    fleet = load_fleet(_write(tmp_path, FLEET))
    seoul, tokyo = fleet.sites
    assert (fleet.queue, fleet.tier_upload_slots) == ("estate", 3)
    assert seoul.settings.timezone == tokyo.settings.timezone == "Asia/Seoul"
    assert seoul.settings.jobs.database_log.schedule == "5 * * * *"
    assert seoul.settings.jobs.database_full.schedule == "0 2 * * *"  # the seed's default
    # Shared tiers get a folder per site; a site's own tier is used as it is.
    assert seoul.settings.repository.secondary.url == "s3://estate-backups/seoul"
    assert tokyo.settings.repository.dr.url == "s3://estate-dr/fleet/tokyo"
    assert seoul.settings.repository.primary.url == "/var/backups/seoul"
    assert tokyo.settings.repository.primary.url == "/data/tokyo-backups"
    assert (seoul.queue, tokyo.queue) == ("seoul", "tokyo-db")
    assert seoul.settings.site == "seoul" and tokyo.file_sets == ("config",)


def test_the_fleet_file_alone_decides_not_this_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUPFLOW_TIMEZONE", "UTC")
    monkeypatch.setenv("BACKUPFLOW_DATABASE__NAME", "other")
    seoul = load_fleet(_write(tmp_path, FLEET)).sites[0]
    assert (seoul.settings.timezone, seoul.settings.database.name) == ("Asia/Seoul", "gantt")


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("sites: []\n", "must list at least one site"),
        ("sites:\n  - {name: Seoul}\n", "site 1's name must be 1 to 40 lowercase"),
        ("sites:\n  - {name: a}\n  - {name: a}\n", "the site name 'a' is listed twice"),
        ("sites:\n  - {name: a, database: {engine: oracle}}\n", "site 'a' field database.engine"),
        ("sites:\n  - {name: a, jobs: {config: {schedule: 'bad'}}}\n", "site 'a' field jobs"),
        ("sites:\n  - {name: a, file_sets: [photos]}\n", "site 'a' field file_sets"),
        ("sites:\n  - {name: a, queue: 'Q 1'}\n", "site 'a' field queue"),
        ("colour: red\nsites:\n  - {name: a}\n", "unknown key 'colour'"),
        ("fleet: {tier_upload_slots: 0}\nsites:\n  - {name: a}\n", "fleet.tier_upload_slots"),
        ("fleet: {queue: a}\nsites:\n  - {name: a}\n", "the fleet's queue 'a' is also site"),
        ("version: 2\nsites:\n  - {name: a}\n", "has version 2"),
        ("sites: [\n", "is not valid YAML at line"),
        ("- a\n", "must be a mapping"),
        ("sites: " + "[" * 5000 + "]" * 5000 + "\n", "is nested too deeply to read"),
    ],
)
def test_bad_fleet_files_get_one_sentence(tmp_path: Path, text: str, sentence: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_fleet(_write(tmp_path, text))
    message = str(caught.value)
    assert sentence in message, message
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize(
    "secret",
    [
        "database: {password: hunter2}",
        "crypto: {signing_key: bfsign1abc}",
        "crypto: {wal_signing_key: bfsign1abc}",
        "crypto: {identities: AGE-SECRET-KEY-1X}",
    ],
)
@pytest.mark.parametrize("where", ["defaults", "site"])
def test_a_secret_in_the_fleet_file_is_refused_without_echoing_it(
    tmp_path: Path, secret: str, where: str
) -> None:
    text = (
        f"defaults: {{{secret}}}\nsites:\n  - {{name: a}}\n"
        if where == "defaults"
        else f"sites:\n  - {{name: a, {secret}}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_fleet(_write(tmp_path, text))
    message = str(caught.value)
    assert "is a secret, which a fleet file may not hold" in message
    assert "hunter2" not in message and "bfsign1abc" not in message and "AGE-" not in message


def test_the_file_is_read_bounded_and_never_a_fifo(tmp_path: Path) -> None:
    big = _write(tmp_path, "sites:\n  - {name: a}\n" + "#" * (1 << 20))
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_fleet(big)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_fleet(fifo)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_fleet(tmp_path / "missing.yaml")


def test_a_worker_loads_its_site_beneath_its_own_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, FLEET)
    monkeypatch.setenv("BACKUPFLOW_FLEET", str(path))
    monkeypatch.setenv("BACKUPFLOW_SITE", "tokyo")
    monkeypatch.setenv("BACKUPFLOW_DATABASE__USER", "from-the-host")
    settings = load_settings()
    assert settings.site == "tokyo" and settings.database.name == "reports"
    assert settings.database.user == "from-the-host"  # the host's env-file and environment win
    assert settings.repository.secondary.url == "s3://estate-backups/tokyo"
    # A run routed to the wrong host is refused before it touches anything.
    monkeypatch.setenv("BACKUPFLOW_RUN_SITE", "seoul")
    with pytest.raises(ConfigError, match="this run is for the site 'seoul' but this host"):
        load_settings()
    monkeypatch.setenv("BACKUPFLOW_RUN_SITE", "tokyo")
    assert load_settings().site == "tokyo"
    monkeypatch.setenv("BACKUPFLOW_SITE", "osaka")
    with pytest.raises(ConfigError, match="lists no site 'osaka'"):
        load_settings()


def test_a_single_installation_is_a_fleet_of_one() -> None:
    settings = load_settings()
    fleet = fleet_of_one(settings)
    assert [s.name for s in fleet.sites] == ["default"]
    assert fleet.sites[0].settings is settings


def test_the_plan_routes_each_site_to_its_queue_with_its_schedules(tmp_path: Path) -> None:
    fleet = load_fleet(_write(tmp_path, FLEET))
    specs = plan_deployments(fleet)
    names = {s.full_name: s for s in specs}
    full = names["backup-database/seoul-full"]
    assert (full.queue, full.cron, full.timezone, full.parameters) == (
        "seoul",
        "0 2 * * *",
        "Asia/Seoul",
        {"kind": "full"},
    )
    assert full.env["BACKUPFLOW_RUN_SITE"] == "seoul"
    assert full.env["BACKUPFLOW_CONCURRENCY_LIMIT"] == "backupflow-database-seoul"
    assert "BACKUPFLOW_SITE" not in full.env  # the worker's own says which site its host serves
    assert names["backup-database/seoul-log"].cron == "5 * * * *"
    assert "backup-database/tokyo-diff" not in names  # PostgreSQL takes no differentials
    assert "backup-files/tokyo-uploads" not in names and "backup-files/tokyo-config" in names
    assert all(s.queue == "tokyo-db" for s in specs if s.site == "tokyo")
    assert names["fleet-health/fleet"].queue == "estate"
    assert all(FLEET_TAG in s.tags for s in specs)
    assert len({s.full_name for s in specs}) == len(specs)
    assert restore_test_pairs(specs) == [
        ("seoul", "backup-database/seoul-full", "restore-test/seoul"),
        ("tokyo", "backup-database/tokyo-full", "restore-test/tokyo"),
    ]
    # Fingerprints change with what is deployed, and only then.
    again = {s.full_name: s.fingerprint(fleet.pool) for s in plan_deployments(fleet)}
    assert again == {s.full_name: s.fingerprint(fleet.pool) for s in specs}
    assert full.fingerprint("other-pool") != full.fingerprint(fleet.pool)


def test_limits_one_database_backup_per_site_and_a_cap_per_tier(tmp_path: Path) -> None:
    limits = plan_limits(load_fleet(_write(tmp_path, FLEET)))
    assert limits == {
        "backupflow-database-seoul": 1,
        "backupflow-database-tokyo": 1,
        "backupflow-uploads-primary": 3,
        "backupflow-uploads-secondary": 3,
        "backupflow-uploads-dr": 3,
    }


def test_drills_rotate_so_every_site_is_drilled_each_quarter() -> None:
    from datetime import datetime

    from cronsim import CronSim

    start = datetime(2027, 1, 1)
    days = set()
    for index in range(84):
        cron = drill_cron(index)
        runs = CronSim(cron, start)
        first = [next(runs) for _ in range(4)]
        # one drill in each quarter of the year
        assert sorted((moment.month - 1) // 3 for moment in first) == [0, 1, 2, 3], cron
        days.add((first[0].month, first[0].day))
    assert len(days) == 84  # no two of the first 84 sites on the same day


def test_a_host_of_several_small_sites_takes_each_run_as_its_own_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUPFLOW_FLEET", str(_write(tmp_path, FLEET)))
    monkeypatch.setenv("BACKUPFLOW_SITE", "seoul,tokyo")
    with pytest.raises(ConfigError, match="this host serves several sites"):
        load_settings()  # a command by hand must say which
    monkeypatch.setenv("BACKUPFLOW_RUN_SITE", "tokyo")
    settings = load_settings()
    assert (settings.site, settings.database.name) == ("tokyo", "reports")
    monkeypatch.setenv("BACKUPFLOW_RUN_SITE", "osaka")
    with pytest.raises(ConfigError, match="this run is for the site 'osaka' but this host"):
        load_settings()
    monkeypatch.delenv("BACKUPFLOW_RUN_SITE")
    assert load_settings(site="seoul").database.name == "gantt"  # the worker's own check
