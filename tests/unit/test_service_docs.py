"""docs/service.md, the newcomer's path from `make serve` to a drill's RTO and RPO: the
artifact keys it names are the keys the flows write, its settings file loads as it says, its
addresses agree with deployments/serve.sh, and the README leads there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backupflow.config import DatabaseSettings, load_settings
from backupflow.reporting import artifact_key
from backupflow.settings_doc import env_name, rows

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "docs" / "service.md"
DATABASE = str(DatabaseSettings.model_fields["name"].default)


def _expected_keys() -> dict[str, str]:
    """Every key the guide's table names, computed as the flows compute it, with the literal
    that must start an ``artifact_key(...)`` call (or be a ``key=`` literal) in flows/."""
    db = DATABASE
    keys = {
        artifact_key("dr-drill", db): 'artifact_key("dr-drill", ',
        artifact_key("dr-drill", db, "summary"): '"summary")',
        artifact_key("restore", db): 'artifact_key("restore", name)',
        artifact_key("restore-system", db): 'artifact_key("restore-system", ',
        artifact_key("failover", db): 'artifact_key("failover", ',
        artifact_key("backup", "config", "config", "full"): 'artifact_key("backup", manifest',
        artifact_key("restore", "config"): 'artifact_key("restore", file_set)',
        "backup-health": 'key="backup-health"',
        artifact_key("verify", db): 'artifact_key("verify", ',
        artifact_key("retention", db, "primary"): 'artifact_key("retention", ',
        "backup-review": 'key="backup-review"',
    }
    for kind in ("full", "diff", "log"):
        keys[artifact_key("backup", "database", db, kind)] = 'artifact_key("backup", manifest'
    return keys


def _table_keys() -> list[str]:
    section = SERVICE.read_text().split("## Artifact keys", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M)


def test_the_drill_keys_are_the_real_ones() -> None:
    """The issue's complaint: the docs said `dr-drill-<database>`; the key is this one."""
    assert artifact_key("dr-drill", "gantt_workload") == "dr-drill-gantt-workload"
    assert "`dr-drill-gantt-workload`" in SERVICE.read_text()
    assert "`dr-drill-gantt-workload-summary`" in SERVICE.read_text()


def test_the_artifact_table_names_exactly_the_keys_the_flows_write() -> None:
    expected = _expected_keys()
    table = _table_keys()
    assert len(table) == len(set(table)), "a key is listed twice"
    assert set(table) == set(expected)


def test_each_documented_key_is_made_that_way_in_the_flows() -> None:
    source = "\n".join(p.read_text() for p in sorted((ROOT / "flows").glob("*.py")))
    missing = {key: made for key, made in _expected_keys().items() if made not in source}
    assert not missing, f"no flow writes these keys this way any more: {missing}"


def test_every_key_of_the_database_named_in_the_guide_is_a_real_key() -> None:
    text = SERVICE.read_text()
    assert "<database>" not in text, "name the real key, not a placeholder"
    named = set(re.findall(r"`([a-z0-9-]*gantt-workload[a-z0-9-]*)`", text))
    assert named and named <= set(_expected_keys()), named - set(_expected_keys())


def _settings_file(trial: Path) -> str:
    text = SERVICE.read_text()
    body = re.search(r'cat >"\$TRIAL/backupflow.env" <<EOF\n(.*?)\nEOF\n', text, re.S)
    assert body, "the guide lost its settings file"
    return body.group(1).replace("$TRIAL", str(trial))


def test_the_settings_file_names_only_real_settings() -> None:
    real = {env_name(path) for path, _model, _row in rows(type(load_settings()))}
    named = [line.split("=", 1)[0] for line in _settings_file(Path("/trial")).splitlines()]
    assert named and set(named) <= real, set(named) - real


def test_the_settings_file_loads_as_the_guide_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "backupflow.env"
    env_file.write_text(_settings_file(tmp_path) + "\n")
    env_file.chmod(0o600)
    monkeypatch.setenv("BACKUPFLOW_CONFIG", str(env_file))
    settings = load_settings()

    repo = settings.repository
    assert repo.primary.url == str(tmp_path / "backups")
    assert repo.secondary.url == "s3://workload-optimization-backups"
    assert repo.dr.url == "s3://dr-workload-optimization-backups"
    for tier in (repo.secondary, repo.dr):
        assert tier.endpoint_url == "http://127.0.0.1:5000"  # moto_server -p 5000 in the guide
        assert tier.addressing_style == "path"
    assert repo.dr.object_lock_mode == "GOVERNANCE"
    assert settings.database.sqlite_path == tmp_path / "app" / "gantt_workload.db"
    # The buckets the guide creates are the ones the settings use, in the same regions.
    text = SERVICE.read_text()
    for tier in (repo.secondary, repo.dr):
        bucket = tier.url.removeprefix("s3://")
        assert f'("{bucket}", "{tier.region}", ' in text
    assert '"dr-workload-optimization-backups", "ap-northeast-1", True)' in text


def test_the_guide_and_serve_sh_agree_on_the_api_address() -> None:
    serve = (ROOT / "deployments" / "serve.sh").read_text()
    port = re.search(r"PREFECT_SERVER_API_PORT:-(\d+)", serve)
    assert port
    text = SERVICE.read_text()
    assert f"export PREFECT_API_URL=http://127.0.0.1:{port.group(1)}/api" in text
    assert f"http://127.0.0.1:{port.group(1)}/artifacts/key/dr-drill-gantt-workload" in text
    assert "BACKUPFLOW_CONFIG" in serve  # serve.sh says which settings the worker runs with


def test_the_readme_leads_a_newcomer_to_the_guide() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run it as a service", 1)[1].split("\n## ", 1)[0]
    assert "(docs/service.md)" in section
    assert "export PREFECT_API_URL=http://127.0.0.1:4200/api" in section
    assert "make serve" in section
    assert "dr-drill-gantt-workload" in section
