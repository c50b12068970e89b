"""Settings: seed defaults, environment overrides, the seed's backup.conf, and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from backupflow.config import Job, load_settings
from backupflow.errors import ConfigError
from backupflow.schedules import JOB_DEPLOYMENTS, Schedule, deployment_schedules, disagreements

PASSWORD = "s3cr3t!Pa55"

BACKUP_CONF = f"""\
# /etc/workload-optimization/backup.conf (seed)
DB_SERVER=sql01
DB_USER=backup
DB_PASSWORD='{PASSWORD}'
DB_NAME=GanttDB
"""


def write_conf(tmp_path: Path, text: str = BACKUP_CONF) -> Path:
    path = tmp_path / "backup.conf"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("job", "schedule", "retention_days"),
    [
        ("database_full", "0 2 * * *", 30),
        ("database_diff", "0 */4 * * *", 7),
        ("database_log", "0 * * * *", 3),
        ("config", "0 3 * * *", 30),
        ("logs", "0 4 * * *", 14),
        ("uploads", "0 3 * * *", 30),
    ],
)
def test_default_jobs_reproduce_the_seed(job: str, schedule: str, retention_days: int) -> None:
    settings = load_settings()

    assert getattr(settings.jobs, job) == Job(schedule=schedule, retention_days=retention_days)


def test_default_places_reproduce_the_seed() -> None:
    settings = load_settings()

    assert settings.repository.primary.url == "/var/backups"
    assert settings.repository.secondary.url == "s3://workload-optimization-backups"
    assert settings.repository.dr.url == "s3://dr-workload-optimization-backups"
    assert settings.repository.dr.region != settings.repository.secondary.region
    assert settings.backup_log == Path("/var/log/workload-optimization/backup.log")
    assert settings.timezone == "Asia/Seoul"
    assert settings.pipeline.codec == "zstd"
    assert settings.database.missing_full == "promote"
    assert settings.database.password.get_secret_value() == ""


def test_environment_overrides_with_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUPFLOW_TIMEZONE", "UTC")
    monkeypatch.setenv("BACKUPFLOW_DATABASE__NAME", "gantt_staging")
    monkeypatch.setenv("BACKUPFLOW_DATABASE__PASSWORD", PASSWORD)
    monkeypatch.setenv("BACKUPFLOW_REPOSITORY__PRIMARY__URL", "/srv/backups")
    monkeypatch.setenv("BACKUPFLOW_PIPELINE__CODEC", "gzip")
    monkeypatch.setenv("BACKUPFLOW_PIPELINE__ZSTD_LEVEL", "7")

    settings = load_settings()

    assert settings.timezone == "UTC"
    assert settings.database.name == "gantt_staging"
    assert settings.database.password.get_secret_value() == PASSWORD
    assert settings.database.server == "localhost"  # untouched sibling keeps its default
    assert settings.repository.primary.url == "/srv/backups"
    assert settings.repository.secondary.url == "s3://workload-optimization-backups"
    assert settings.repository.secondary.region == "ap-northeast-2"  # sibling default kept
    assert settings.pipeline.codec == "gzip"
    assert settings.pipeline.zstd_level == 7


def test_environment_overrides_a_whole_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUPFLOW_JOBS__DATABASE_LOG__SCHEDULE", "*/15 * * * *")
    monkeypatch.setenv("BACKUPFLOW_JOBS__DATABASE_LOG__RETENTION_DAYS", "5")

    settings = load_settings()

    assert settings.jobs.database_log == Job(schedule="*/15 * * * *", retention_days=5)
    assert settings.jobs.database_full == Job(schedule="0 2 * * *", retention_days=30)


@pytest.mark.parametrize(
    ("variable", "value", "job", "expected"),
    [
        (
            "BACKUPFLOW_JOBS__DATABASE_FULL__SCHEDULE",
            "30 1 * * *",
            "database_full",
            Job(schedule="30 1 * * *", retention_days=30),
        ),
        (
            "BACKUPFLOW_JOBS__LOGS__RETENTION_DAYS",
            "60",
            "logs",
            Job(schedule="0 4 * * *", retention_days=60),
        ),
    ],
)
def test_environment_overrides_one_field_of_a_job(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, job: str, expected: Job
) -> None:
    monkeypatch.setenv(variable, value)

    settings = load_settings()

    assert getattr(settings.jobs, job) == expected


def test_keyword_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUPFLOW_DATABASE__NAME", "from_env")

    settings = load_settings(database={"name": "from_call"})

    assert settings.database.name == "from_call"


def test_seed_backup_conf_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BACKUPFLOW_CONFIG", str(write_conf(tmp_path)))

    settings = load_settings()

    assert settings.database.server == "sql01"
    assert settings.database.user == "backup"
    assert settings.database.name == "GanttDB"
    assert isinstance(settings.database.password, SecretStr)
    assert settings.database.password.get_secret_value() == PASSWORD


def test_backupflow_lines_in_the_config_file_are_read_and_env_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conf = write_conf(
        tmp_path,
        BACKUP_CONF + "BACKUPFLOW_TIMEZONE=Europe/Paris\nBACKUPFLOW_DATABASE__USER=fromfile\n",
    )
    monkeypatch.setenv("BACKUPFLOW_CONFIG", str(conf))
    monkeypatch.setenv("BACKUPFLOW_DATABASE__NAME", "from_env")

    settings = load_settings()

    assert settings.timezone == "Europe/Paris"
    assert settings.database.name == "from_env"
    assert settings.database.server == "sql01"
    assert settings.database.user == "fromfile"


def test_password_is_never_printed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BACKUPFLOW_CONFIG", str(write_conf(tmp_path)))

    settings = load_settings()

    assert PASSWORD not in str(settings)
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in settings.model_dump_json()
    assert PASSWORD not in str(settings.database)
    assert "**********" in str(settings.database)


def test_missing_config_file_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "backup.conf"
    monkeypatch.setenv("BACKUPFLOW_CONFIG", str(missing))

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert str(missing) in str(caught.value)
    assert "BACKUPFLOW_CONFIG" in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [
        ("BACKUPFLOW_TIMEZONE", "Mars/Base", "timezone"),
        ("BACKUPFLOW_PIPELINE__ZSTD_LEVEL", "99", "pipeline.zstd_level"),
        ("BACKUPFLOW_PIPELINE__CODEC", "lz4", "pipeline.codec"),
        ("BACKUPFLOW_DATABASE__NAME", "../etc", "database.name"),
        ("BACKUPFLOW_JOBS__DATABASE_FULL__SCHEDULE", "0 2 *", "jobs.database_full.schedule"),
        ("BACKUPFLOW_ORPHAN_GRACE_MINUTES", "-1", "orphan_grace_minutes"),
        ("BACKUPFLOW_JOBS__DATABASE_FULL__SCHEDULE", "99 * * * *", "jobs.database_full.schedule"),
        ("BACKUPFLOW_JOBS__DATABASE_LOG__SCHEDULE", "a b c d e", "jobs.database_log.schedule"),
        ("BACKUPFLOW_JOBS__LOGS__SCHEDULE", "0 25 * * *", "jobs.logs.schedule"),
        ("BACKUPFLOW_JOBS__CONFIG__SCHEDULE", "0 0 * 13 *", "jobs.config.schedule"),
        ("BACKUPFLOW_JOBS__UPLOADS__SCHEDULE", "@reboot", "jobs.uploads.schedule"),
        ("BACKUPFLOW_TIMEZONE", "../../etc/passwd", "timezone"),
        ("BACKUPFLOW_STAGING_DIR", "var/tmp/backupflow", "staging_dir"),
        ("BACKUPFLOW_BACKUP_LOG", "backup.log", "backup_log"),
        ("BACKUPFLOW_FILES__CONFIG__ROOT", "www/api", "files.config.root"),
        ("BACKUPFLOW_FAILOVER__HEALTH_URL", "file:///etc/passwd", "failover.health_url"),
        ("BACKUPFLOW_FAILOVER__RECORD_NAME", "api example", "failover.record_name"),
        ("BACKUPFLOW_DATABASE__DATABASES", '["gantt", "../x"]', "database.databases"),
        ("BACKUPFLOW_REPOSITORY__PRIMARY__URL", "ftp://backups", "repository.primary.url"),
    ],
)
def test_bad_value_is_one_sentence_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, setting: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    message = str(caught.value)
    assert f"invalid setting {setting}:" in message
    assert variable in message  # says which variable to fix
    assert "\n" not in message
    assert message.endswith(".")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"database": {"password": [PASSWORD]}}, id="not-a-string"),
        pytest.param({"database": {"password": {"value": PASSWORD}}}, id="a-mapping"),
    ],
)
def test_bad_password_value_is_not_echoed(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)

    message = str(caught.value)
    assert "database.password" in message
    assert PASSWORD not in message
    # the pydantic error (which shows the input) is not chained into tracebacks
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_error_elsewhere_in_backup_conf_does_not_echo_the_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conf = write_conf(tmp_path, BACKUP_CONF.replace("DB_NAME=GanttDB", "DB_NAME='Gantt DB!'"))
    monkeypatch.setenv("BACKUPFLOW_CONFIG", str(conf))

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert "database.name" in str(caught.value)
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BACKUPFLOW_DATABASE__DATABASES", "gantt, other"),
        ("BACKUPFLOW_RESTORE_ROOTS", "/srv/restores"),
        ("BACKUPFLOW_FILES__POST_RESTORE_HOOK", "pm2 reload ecosystem.config.js"),
        ("BACKUPFLOW_FILES__HOOK_ENV", PASSWORD),
        ("BACKUPFLOW_DATABASE", "{broken"),
    ],
)
def test_list_or_object_that_is_not_json_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    message = str(caught.value)
    assert "cannot be parsed" in message and "JSON" in message
    assert value not in message and PASSWORD not in message
    assert "\n" not in message and message.endswith(".")
    assert caught.value.exit_code == 3


@pytest.mark.parametrize(
    ("address", "record_type", "fits"),
    [
        ("not-an-ip;x", "A", False),
        ("::1", "A", False),
        ("192.0.2.10", "AAAA", False),
        ("192.0.2.10; rm -rf /", "A", False),
        ("standby.example.", "CNAME", True),
        ("192.0.2.10", "A", True),
        ("2001:db8::10", "AAAA", True),
    ],
)
def test_standby_address_must_fit_the_record_type(
    monkeypatch: pytest.MonkeyPatch, address: str, record_type: str, fits: bool
) -> None:
    monkeypatch.setenv("BACKUPFLOW_FAILOVER__STANDBY_ADDRESS", address)
    monkeypatch.setenv("BACKUPFLOW_FAILOVER__RECORD_TYPE", record_type)

    if fits:
        assert load_settings().failover.standby_address == address
        return
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "invalid setting failover" in str(caught.value)
    assert caught.value.exit_code == 3


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"DB_NAME=\xff\xfe\n", id="not-utf8"),
        pytest.param(b"DB_NAME=gantt\x00\n", id="nul-byte"),
        pytest.param(b"#" * ((1 << 20) + 1), id="over-1-MiB"),
    ],
)
def test_env_file_that_is_not_text_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes
) -> None:
    conf = tmp_path / "backup.conf"
    conf.write_bytes(content + f"DB_PASSWORD={PASSWORD}\n".encode())
    monkeypatch.setenv("BACKUPFLOW_CONFIG", str(conf))

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert str(conf) in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert caught.value.exit_code == 3


def test_env_file_that_is_a_folder_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BACKUPFLOW_CONFIG", str(tmp_path))

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert "not a readable file" in str(caught.value)


# Schedules: the settings are the source of truth; prefect.yaml copies them.

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def _project() -> dict[str, Any]:
    project: dict[str, Any] = yaml.safe_load(PREFECT_YAML.read_text())
    return project


def test_prefect_yaml_schedules_every_job_as_the_settings_say() -> None:
    settings = load_settings()
    schedules = deployment_schedules(_project())

    assert disagreements(settings, _project()) == []
    for deployment, job in JOB_DEPLOYMENTS.items():
        wanted = Schedule(getattr(settings.jobs, job).schedule, settings.timezone)
        assert schedules[deployment] == [wanted]
    assert {s.timezone for have in schedules.values() for s in have} == {"Asia/Seoul"}


def test_a_schedule_that_differs_from_prefect_yaml_is_named_with_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKUPFLOW_JOBS__DATABASE_LOG__SCHEDULE", "*/15 * * * *")

    problems = disagreements(load_settings(), _project())

    assert problems == [
        "deployment 'database-log' runs on '0 * * * *' in Asia/Seoul but "
        "BACKUPFLOW_JOBS__DATABASE_LOG__SCHEDULE and BACKUPFLOW_TIMEZONE say '*/15 * * * *' "
        "in Asia/Seoul."
    ]


def test_another_timezone_disagrees_with_every_scheduled_deployment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKUPFLOW_TIMEZONE", "UTC")

    problems = disagreements(load_settings(), _project())

    scheduled = [name for name, have in deployment_schedules(_project()).items() if have]
    assert len(problems) == len(scheduled) == 10
    assert all("UTC" in problem for problem in problems)


def test_a_job_deployment_missing_from_prefect_yaml_is_reported() -> None:
    project = _project()
    project["deployments"] = [d for d in project["deployments"] if d["name"] != "uploads"]

    assert disagreements(load_settings(), project) == [
        "prefect.yaml has no deployment 'uploads' for the job uploads."
    ]


def test_every_scheduled_deployment_says_its_time_zone_in_its_description() -> None:
    """The UI shows a cron without its zone; the description says it ("02:00 KST")."""
    document = yaml.safe_load((Path(__file__).parents[2] / "prefect.yaml").read_text())
    scheduled = [d for d in document["deployments"] if d.get("schedules")]
    assert scheduled
    for deployment in scheduled:
        zones = {s["timezone"] for s in deployment["schedules"]}
        assert zones == {"Asia/Seoul"}, deployment["name"]
        assert "KST" in deployment["description"], deployment["name"]
        assert "Asia/Seoul" in deployment["description"], deployment["name"]
