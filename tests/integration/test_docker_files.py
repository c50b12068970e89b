"""docker/: the compose files, the image and the init scripts, checked without Docker.

These machines have no Docker engine and the tests have no network, and the compose
specification's JSON schema is not available offline (nor vendored), so this is a focused
structural check of what the issue asked for: the bootstrap runs, both buckets are created
(DR with Object Lock), the Prefect server's database is on a volume, restart policies and
health checks, start-up order by conditions, SQL Server's non-root user owns its backup
folder, the database exists on a fresh server, a `.dockerignore`, and every file a compose
file or the Dockerfile names exists.  Where Docker runs, `docker compose -f docker/compose.yaml
config` is the stronger check.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from backupflow.config import Settings, load_settings
from backupflow.settings_doc import env_name, rows

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILES = [DOCKER / "compose.yaml", DOCKER / "compose.test.yaml"]

#: Top-level and service keys of the compose specification (the ones a typo would miss).
TOP_LEVEL = {"name", "services", "volumes", "networks", "configs", "secrets", "include"}
SERVICE_KEYS = {
    "annotations", "attach", "build", "blkio_config", "cap_add", "cap_drop", "cgroup",
    "cgroup_parent", "command", "configs", "container_name", "cpu_count", "cpu_percent",
    "cpu_shares", "cpu_quota", "cpu_period", "cpu_rt_period", "cpu_rt_runtime", "cpus",
    "cpuset", "credential_spec", "depends_on", "deploy", "develop", "device_cgroup_rules",
    "devices", "dns", "dns_opt", "dns_search", "domainname", "entrypoint", "env_file",
    "environment", "expose", "extends", "external_links", "extra_hosts", "group_add",
    "healthcheck", "hostname", "image", "init", "ipc", "isolation", "labels", "links",
    "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness",
    "memswap_limit", "network_mode", "networks", "oom_kill_disable", "oom_score_adj", "pid",
    "pids_limit", "platform", "ports", "post_start", "pre_stop", "privileged", "profiles",
    "pull_policy", "read_only", "restart", "runtime", "scale", "secrets", "security_opt",
    "shm_size", "stdin_open", "stop_grace_period", "stop_signal", "storage_opt", "sysctls",
    "tmpfs", "tty", "ulimits", "user", "userns_mode", "uts", "volumes", "volumes_from",
    "working_dir",
}  # fmt: skip
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period",
                    "start_interval", "disable"}  # fmt: skip
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def _services(path: Path) -> dict[str, dict[str, Any]]:
    return dict(_load(path)["services"])


def _one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def _depends(service: dict[str, Any]) -> dict[str, str]:
    """depends_on as {service: condition}; the long form is required here."""
    found = service.get("depends_on", {})
    assert isinstance(found, dict), "use depends_on's long form, with a condition"
    return {name: entry["condition"] for name, entry in found.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    return [tuple(m.split(":")[:2]) for m in service.get("volumes", [])]  # type: ignore[misc]


@pytest.fixture(params=COMPOSE_FILES, ids=lambda p: p.name)
def compose(request: pytest.FixtureRequest) -> Path:
    return Path(request.param)


def test_only_keys_of_the_compose_specification(compose: Path) -> None:
    data = _load(compose)
    unknown = {k for k in data if k not in TOP_LEVEL and not k.startswith("x-")}
    assert not unknown, f"{compose.name}: unknown top-level keys {unknown}"
    for name, service in data["services"].items():
        assert set(service) <= SERVICE_KEYS, f"{name}: {set(service) - SERVICE_KEYS}"
        assert "image" in service or "build" in service, name
        if "healthcheck" in service:
            check = service["healthcheck"]
            assert set(check) <= HEALTHCHECK_KEYS, f"{name}: {set(check) - HEALTHCHECK_KEYS}"
            for key in ("interval", "timeout", "start_period"):
                assert key not in check or DURATION.match(check[key]), f"{name}.{key}"
            assert isinstance(check["retries"], int), name


def test_every_service_restarts_or_is_a_one_shot_and_long_runners_report_health(
    compose: Path,
) -> None:
    for name, service in _services(compose).items():
        assert service.get("restart") in ("no", "unless-stopped", "always"), name
        if _one_shot(service):
            assert "healthcheck" not in service, name
            continue
        check = service.get("healthcheck")
        assert check, f"{name} runs for good but has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_start_up_order_waits_on_health_or_completion(compose: Path) -> None:
    services = _services(compose)
    for name, service in services.items():
        for target, condition in _depends(service).items():
            assert target in services, f"{name} depends on a missing {target}"
            assert condition in CONDITIONS, f"{name} -> {target}: {condition}"
            if _one_shot(services[target]):
                assert condition == "service_completed_successfully", f"{name} -> {target}"
            else:
                assert condition == "service_healthy", f"{name} -> {target}"
                assert "healthcheck" in services[target], target

    def reaches(start: str, seen: tuple[str, ...]) -> None:
        for target in _depends(services[start]):
            assert target not in seen, f"a dependency cycle through {(*seen, target)}"
            reaches(target, (*seen, target))

    for name in services:
        reaches(name, (name,))


def test_every_file_and_volume_named_exists(compose: Path) -> None:
    data = _load(compose)
    declared = set(data.get("volumes") or {})
    for name, service in data["services"].items():
        for source, _target in _mounts(service):
            if source.startswith("${"):
                continue  # a host path the operator chooses
            if source.startswith((".", "/")):
                if source.startswith("./") and "mssql-backup" in source:
                    continue  # a bind-mount folder Docker creates (compose.test.yaml)
                assert (compose.parent / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
        build = service.get("build")
        if build:
            context = compose.parent / build["context"]
            assert (context / build["dockerfile"]).is_file(), name
        for entry in service.get("env_file", []):
            assert entry.get("required") is False or (compose.parent / entry["path"]).exists()


def test_secrets_come_from_the_environment_and_ports_stay_on_loopback(compose: Path) -> None:
    text = compose.read_text()
    for secret in ("MSSQL_SA_PASSWORD", "MINIO_ROOT_PASSWORD"):
        for line in text.splitlines():
            if re.match(rf"\s*{secret}:", line):
                assert re.search(rf"\$\{{{secret}:\?", line), line
    for name, service in _services(compose).items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


# --- what issue 15 asked of docker/compose.yaml ------------------------------------------------

SERVICES = _services(DOCKER / "compose.yaml")
VOLUMES = set(_load(DOCKER / "compose.yaml")["volumes"])


def test_the_prefect_server_keeps_its_database_on_a_volume() -> None:
    prefect = SERVICES["prefect"]
    home = prefect["environment"]["PREFECT_HOME"]
    on_home = [source for source, target in _mounts(prefect) if target == home]
    assert on_home and on_home[0] in VOLUMES, (
        "the server's PREFECT_HOME (its SQLite database) must be a named volume"
    )
    assert prefect["environment"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_the_bootstrap_runs_before_the_worker() -> None:
    bootstrap = SERVICES["bootstrap"]
    assert bootstrap["command"] == ["python", "deployments/bootstrap.py"]
    assert (ROOT / "deployments" / "bootstrap.py").is_file()
    assert _depends(bootstrap) == {"prefect": "service_healthy"}
    assert bootstrap["environment"]["PREFECT_API_URL"] == "http://prefect:4200/api"
    worker = _depends(SERVICES["worker"])
    for one_shot in ("bootstrap", "buckets", "mssql-setup"):
        assert worker[one_shot] == "service_completed_successfully"
    # The worker serves the pool the bootstrap creates and prefect.yaml deploys to.
    pool = SERVICES["worker"]["command"][SERVICES["worker"]["command"].index("--pool") + 1]
    bootstrap_source = (ROOT / "deployments" / "bootstrap.py").read_text()
    assert f'"BACKUPFLOW_WORK_POOL", "{pool}"' in bootstrap_source
    assert f"name: {pool}" in (ROOT / "prefect.yaml").read_text()


def test_both_buckets_are_created_the_dr_one_with_object_lock() -> None:
    defaults = Settings().repository
    buckets = SERVICES["buckets"]
    script = DOCKER / "init" / "create-buckets.sh"
    assert buckets["entrypoint"][-1] == "/init/create-buckets.sh"
    assert ("./init/create-buckets.sh", "/init/create-buckets.sh") in _mounts(buckets)
    commands = [shlex.split(line) for line in script.read_text().splitlines() if "mc mb" in line]
    made = {c[-1].removeprefix("local/"): "--with-lock" in c for c in commands}
    secondary = defaults.secondary.url.removeprefix("s3://")
    dr = defaults.dr.url.removeprefix("s3://")
    assert made == {secondary: False, dr: True}
    assert all("--ignore-existing" in c for c in commands), "the script must be idempotent"
    assert _depends(buckets) == {"minio": "service_healthy"}
    worker = SERVICES["worker"]["environment"]
    assert worker["BACKUPFLOW_REPOSITORY__DR__OBJECT_LOCK_MODE"] in ("GOVERNANCE", "COMPLIANCE")


def test_sql_servers_non_root_user_owns_the_backup_folder() -> None:
    init = SERVICES["mssql-init"]
    mssql = SERVICES["mssql"]
    backup_volume = next(s for s, t in _mounts(mssql) if t == "/var/opt/mssql/backup")
    init_target = next(t for s, t in _mounts(init) if s == backup_volume)
    command = " ".join(init["command"])
    assert re.search(rf"chown -R 10001(:\d+)? [^&]*{re.escape(init_target)}", command), command
    assert _depends(mssql) == {"mssql-init": "service_completed_successfully"}
    # The worker sees the same folder where the settings say it does.
    worker_dir = str(Settings().database.worker_backup_dir)
    assert (backup_volume, worker_dir) in _mounts(SERVICES["worker"])


def test_the_default_database_is_created_on_a_fresh_server() -> None:
    setup = SERVICES["mssql-setup"]
    name = setup["environment"]["DATABASE"]
    assert name == SERVICES["worker"]["environment"]["BACKUPFLOW_DATABASE__NAME"]
    assert name == Settings().database.name
    shell = (DOCKER / "init" / "create-database.sh").read_text()
    sql = (DOCKER / "init" / "create-database.sql").read_text()
    assert '-v DATABASE="$DATABASE"' in shell and "-i /init/create-database.sql" in shell
    assert "-S mssql" in shell  # the compose service's name
    assert "IF DB_ID(N'$(DATABASE)') IS NULL" in sql and "CREATE DATABASE [$(DATABASE)]" in sql
    assert "SET RECOVERY FULL" in sql  # log backups need it
    assert _depends(setup) == {"mssql": "service_healthy"}
    for _source, target in _mounts(setup):
        assert target.startswith("/init/")


def test_the_worker_environment_is_real_settings_that_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = {env_name(path) for path, _model, _row in rows(Settings)}
    environment = SERVICES["worker"]["environment"]
    # BACKUPFLOW_PROJECT_DIR is prefect.yaml's (the worker's working directory), not a setting.
    named = {k for k in environment if k.startswith("BACKUPFLOW_")} - {"BACKUPFLOW_PROJECT_DIR"}
    assert named <= real, named - real
    for key, value in environment.items():
        if key.startswith("BACKUPFLOW_") and key != "BACKUPFLOW_PROJECT_DIR":
            monkeypatch.setenv(key, re.sub(r"\$\{[^}]*\}", "from-the-environment", str(value)))
    monkeypatch.delenv("BACKUPFLOW_CONFIG", raising=False)
    settings = load_settings()
    assert settings.database.engine == "sqlserver"
    assert settings.database.server == "mssql"
    assert settings.repository.dr.endpoint_url == "http://minio:9000"


def test_the_build_context_leaves_out_the_virtualenv_and_caches() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".venv", ".git", "bench/out", ".pytest_cache", ".mypy_cache", "**/__pycache__"):
        assert needed in ignored, f".dockerignore lacks {needed}"
    copied = [
        part
        for line in (DOCKER / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
        for part in line.split()[1:-1]
    ]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"the Dockerfile copies a missing {source}"
        assert source not in ignored, f".dockerignore drops {source}, which the image needs"
