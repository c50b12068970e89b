"""The documentation a newcomer reads: a short README, links that lead somewhere, a module
map that names every module, a configuration reference that is the settings' own, and a
deployment table that says what prefect.yaml says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from backupflow.config import Settings
from backupflow.settings_doc import env_name, render, rows

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
#: Documents another branch writes; linked from here before they land.

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    lines = path.read_text().splitlines()
    return {_slug(line.lstrip("#")) for line in lines if line.startswith("#")}


def test_the_readme_stays_under_ten_kilobytes() -> None:
    size = len(README.read_bytes())
    assert size <= 10 * 1024, f"README.md is {size} bytes; move detail into docs/"


def test_the_readme_shows_the_test_command_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = README.read_text()
    assert re.search(r"^make test\b", ci, re.M)
    assert re.search(r"```sh\n(?:.*\n)*?make test\b", readme), "the README lost `make test`"
    assert "make demo" in readme
    assert "make serve" in readme


@pytest.mark.parametrize("document", _documents(), ids=lambda p: p.name)
def test_every_link_leads_to_a_file_and_heading_that_exist(document: Path) -> None:
    for target in LINK.findall(document.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        name, _, anchor = target.partition("#")
        path = (document.parent / name).resolve() if name else document
        assert path.exists(), f"{document.name} links to {target}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{document.name} links to a missing #{anchor}"


def _modules(package: Path) -> list[str]:
    found = [p.name for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    found += [p.name + "/" for p in package.iterdir() if (p / "__init__.py").is_file()]
    return sorted(found)


@pytest.mark.parametrize("package", ["src/backupflow", "src/backupflow_app"])
def test_the_module_map_names_every_module(package: str) -> None:
    readme = README.read_text()
    missing = [
        name
        for name in _modules(ROOT / package)
        if f"`{name}`" not in readme and f"`{name.rstrip('/')}`" not in readme
    ]
    assert not missing, f"README.md's module map lacks {missing}"


def test_the_configuration_reference_is_the_settings_own() -> None:
    committed = (DOCS / "configuration.md").read_text()
    assert committed == render(), (
        "docs/configuration.md is stale: run "
        "`python -m backupflow.settings_doc > docs/configuration.md`"
    )


def _fields(model: type[BaseModel], path: str = "") -> list[tuple[str, str | None]]:
    found = []
    for name, field in model.model_fields.items():
        found.append((path + name, field.description))
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            found += _fields(nested, f"{path}{name}.")
    return found


def test_every_setting_has_a_description() -> None:
    missing = [name for name, description in _fields(Settings) if not description]
    assert not missing, f"settings without a description: {missing}"


def test_the_reference_lists_every_setting_with_its_variable_and_default() -> None:
    text = (DOCS / "configuration.md").read_text()
    leaves = list(rows(Settings))

    assert len(leaves) > 100
    for path, _model, _row in leaves:
        assert f"| `{env_name(path)}` |" in text
    dr_url = "`s3://dr-workload-optimization-backups`"
    assert f"| `BACKUPFLOW_REPOSITORY__DR__URL` | string | {dr_url} |" in text
    assert "| `BACKUPFLOW_JOBS__DATABASE_LOG__SCHEDULE` | string | `0 * * * *` |" in text
    assert "| `BACKUPFLOW_PIPELINE__ZSTD_LEVEL` | integer | `3` | >= 1, <= 19 |" in text


def test_a_secret_is_named_a_secret_and_its_value_never_shown() -> None:
    text = render(Settings)
    line = next(x for x in text.splitlines() if "`BACKUPFLOW_DATABASE__PASSWORD`" in x)
    assert "**secret**" in line and "secret, not shown" in line
    assert "Also `DB_PASSWORD` in the env-file." in line


def test_a_secret_default_would_not_leak_into_the_reference() -> None:
    from pydantic import Field, SecretStr

    class Leaky(BaseModel):
        token: SecretStr = Field(default=SecretStr("hunter2-secret"), description="A token.")

    text = render(Leaky)
    assert "hunter2" not in text
    assert "secret, not shown" in text


def _deployment_table() -> dict[str, str]:
    """docs/operations.md's deployment table: deployment name -> its schedule cell."""
    text = (DOCS / "operations.md").read_text()
    table = text.split("### Deployments", 1)[1].split("\n\n", 2)[1]
    found = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        found[cells[0].strip("`").split("/", 1)[1]] = cells[-1]
    return found


def test_the_deployment_table_says_what_prefect_yaml_says() -> None:
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    table = _deployment_table()

    assert set(table) == {d["name"] for d in project["deployments"]}
    for deployment in project["deployments"]:
        cell = table[deployment["name"]]
        crons = [s["cron"] for s in deployment.get("schedules", [])]
        if crons:
            assert [f"`{c}`" for c in crons] == re.findall(r"`[^`]+`", cell), deployment["name"]
        else:
            assert cell == "by hand", deployment["name"]
