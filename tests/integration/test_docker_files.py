"""docker/: the compose files, the image and the init scripts, checked without Docker.

These machines have no Docker engine and the tests have no network, and the compose
specification's JSON schema is not available offline (nor vendored), so this is a focused
structural check of what the issue asked for: the bootstrap runs, both buckets are created
(DR with Object Lock), the Prefect server's database is on a volume, restart policies and
health checks, start-up order by conditions, SQL Server's non-root user owns its backup
folder, the database exists on a fresh server, a `.dockerignore`, and every file a compose
file or the Dockerfile names exists.  Issue 25 adds: the Prefect API behind basic auth in
every compose file that runs a server (the secret only from a variable), the fleet's file
(docker/compose.fleet.yaml: one worker per site on its own queue, env-file and volumes), and
an image installed from requirements.lock in pip's hash-checking mode.  Where Docker runs,
`docker compose -f docker/compose.yaml config` is the stronger check.
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
COMPOSE_FILES = [
    DOCKER / "compose.yaml",
    DOCKER / "compose.test.yaml",
    DOCKER / "compose.fleet.yaml",
]

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


# --- issue 25: the API behind basic auth, the fleet, the image from the lock -----------------

#: The compose files that run a Prefect server, and so its clients.
SERVER_FILES = [path for path in COMPOSE_FILES if "prefect" in _services(path)]
FROM_VARIABLE = re.compile(r"^\$\{PREFECT_API_AUTH_STRING:\?[^}]+\}$")
LOCK = ROOT / "requirements.lock"


def _locked(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)", LOCK.read_text(), re.MULTILINE)
    assert match, f"requirements.lock does not pin {name}"
    return match.group(1)


@pytest.mark.parametrize("path", SERVER_FILES, ids=lambda p: p.name)
def test_the_prefect_api_needs_the_auth_string_from_a_variable(path: Path) -> None:
    services = _services(path)
    server = services["prefect"]
    assert FROM_VARIABLE.match(server["environment"]["PREFECT_SERVER_API_AUTH_STRING"])
    # The server runs the prefect version every client has.
    assert server["image"] == f"prefecthq/prefect:{_locked('prefect')}-python3.11"
    clients = {n: s for n, s in services.items() if "PREFECT_API_URL" in s.get("environment", {})}
    # Every service of the backupflow image talks to the API.
    assert {n for n, s in services.items() if "build" in s} <= set(clients)
    assert len(clients) >= 2
    for name, service in clients.items():
        value = service["environment"].get("PREFECT_API_AUTH_STRING")
        assert value and FROM_VARIABLE.match(value), f"{name}: PREFECT_API_AUTH_STRING {value!r}"
    # No line of the file holds a literal auth string.
    for line in path.read_text().splitlines():
        if re.match(r"\s*PREFECT_(SERVER_)?API_AUTH_STRING:", line):
            assert FROM_VARIABLE.match(line.split(":", 1)[1].strip()), line


def test_the_server_health_check_needs_no_auth_string() -> None:
    """The compose health checks GET /api/health without credentials: the pinned prefect
    (the one installed here) leaves it open while the rest of the API asks for the string."""
    import asyncio

    import httpx
    import prefect
    from prefect.server.api.server import create_api_app
    from prefect.settings import PREFECT_SERVER_API_AUTH_STRING, temporary_settings

    assert prefect.__version__ == _locked("prefect")

    async def statuses() -> list[int]:
        transport = httpx.ASGITransport(app=create_api_app(final=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return [
                (await client.get("/health")).status_code,
                (await client.get("/admin/version")).status_code,
                (await client.get("/admin/version", auth=("admin", "not-it"))).status_code,
                (await client.get("/admin/version", auth=("admin", "s3cret"))).status_code,
            ]

    with temporary_settings({PREFECT_SERVER_API_AUTH_STRING: "admin:s3cret"}):
        assert asyncio.run(statuses()) == [200, 401, 401, 200]
    for path in SERVER_FILES:
        check = " ".join(_services(path)["prefect"]["healthcheck"]["test"])
        assert "127.0.0.1:4200/api/health" in check and "AUTH" not in check, path.name


FLEET = _services(DOCKER / "compose.fleet.yaml")
SITE_WORKERS = {n: s for n, s in FLEET.items() if "BACKUPFLOW_SITE" in s.get("environment", {})}
FLEET_FILE_IN_IMAGE = "/opt/backupflow/docker/fleet.example.yaml"
FLEET_EXAMPLE = DOCKER / "fleet.example.yaml"


def test_the_fleet_runs_one_worker_per_site_each_with_its_own_env_file_and_volumes() -> None:
    assert set(SITE_WORKERS) == {"worker-seoul", "worker-tokyo"}
    sites = [s["environment"]["BACKUPFLOW_SITE"] for s in SITE_WORKERS.values()]
    assert sorted(sites) == ["seoul", "tokyo"]
    env_files = [entry["path"] for s in SITE_WORKERS.values() for entry in s["env_file"]]
    assert sorted(env_files) == ["./site-seoul.env", "./site-tokyo.env"]
    gitignored = (ROOT / ".gitignore").read_text().splitlines()
    dockerignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "/docker/*.env" in gitignored and "*.env" in dockerignored
    own: dict[str, set[str]] = {}
    for name, service in SITE_WORKERS.items():
        assert service["command"] == ["backupflow", "worker"], name
        assert service["environment"]["BACKUPFLOW_FLEET"] == FLEET_FILE_IN_IMAGE
        assert _depends(service) == {
            "prefect": "service_healthy",
            "bootstrap": "service_completed_successfully",
        }
        own[name] = {source for source, _t in _mounts(service) if not source.startswith(".")}
        assert len(own[name]) >= 2, f"{name}: its own volumes for its data and folder tier"
    seoul, tokyo = own.values()
    assert not seoul & tokyo, f"the sites share volumes {seoul & tokyo}"
    # The fleet's own jobs have a worker too, which writes to no site's tier.
    fleet_worker = FLEET["worker-fleet"]
    assert fleet_worker["command"] == ["backupflow", "worker", "--fleet-jobs"]
    for source, _target in _mounts(fleet_worker):
        if source in seoul | tokyo:
            assert any(
                m.startswith(f"{source}:") and m.endswith(":ro") for m in fleet_worker["volumes"]
            ), source


def test_the_fleet_bootstrap_deploys_the_fleet_file_every_worker_reads() -> None:
    bootstrap = FLEET["bootstrap"]
    assert bootstrap["command"] == ["python", "deployments/bootstrap.py"]
    assert bootstrap["environment"]["BACKUPFLOW_FLEET"] == FLEET_FILE_IN_IMAGE
    assert "BACKUPFLOW_SITE" not in bootstrap["environment"]
    assert "env_file" not in bootstrap, "the bootstrap needs no site's secrets"
    for name, service in FLEET.items():
        if "build" in service:
            targets = {target: source for source, target in _mounts(service)}
            assert targets.get(FLEET_FILE_IN_IMAGE) == "./fleet.example.yaml", name


def test_every_queue_of_the_fleet_file_has_its_worker() -> None:
    """docker/fleet.example.yaml and this compose file agree: each site a worker on the
    site's own queue, its database and folder tier on that worker's volumes."""
    from backupflow.fleet import load_fleet

    fleet = load_fleet(FLEET_EXAMPLE)
    by_site = {s["environment"]["BACKUPFLOW_SITE"]: s for s in SITE_WORKERS.values()}
    assert {site.name for site in fleet.sites} == set(by_site)
    queues = [fleet.site(name).queue for name in by_site]
    assert len(set(queues)) == len(queues) and fleet.queue not in queues
    served = set(queues)
    for site in fleet.sites:
        assert site.test_queue in served, f"{site.name}'s restore tests go to no worker"
        targets = [target for _source, target in _mounts(by_site[site.name])]
        settings = site.settings
        wanted = [settings.staging_dir]
        if settings.database.engine == "sqlite":
            wanted.append(Path(settings.database.sqlite_path).parent)
        primary = settings.repository.primary.url
        if "://" not in primary:
            wanted.append(Path(primary))
        for folder in wanted:
            assert any(Path(folder).is_relative_to(t) for t in targets), (site.name, folder)


def test_the_image_installs_the_locked_versions_with_hashes() -> None:
    lines = [
        line.strip()
        for line in (DOCKER / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    installs = [line for line in lines if "pip install" in line]
    assert installs == [
        "RUN pip install --no-cache-dir --require-hashes -r requirements.lock",
        "RUN pip install --no-cache-dir --no-deps .",
    ]
    assert "COPY requirements.lock ./" in lines
    assert lines.index("COPY requirements.lock ./") < lines.index(installs[0])
    assert LOCK.is_file() and "--hash=sha256:" in LOCK.read_text()
    assert "-e " not in LOCK.read_text() and "file://" not in LOCK.read_text()
