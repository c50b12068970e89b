"""The wheel: built from this repository, it holds the core and the app layer only (the flows
and tasks travel inside the app layer), and once installed it runs without the repository.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import need

REPO = Path(__file__).resolve().parents[2]


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from the repository (with the venv's hatchling when it has one,
    else in an isolated build environment, which needs hatchling from the package index)."""
    out = tmp_path_factory.mktemp("wheel")
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    built = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        *isolation,
        "-w",
        str(out),
        str(REPO),
        cwd=out,
    )
    if built.returncode != 0 and not isolation:
        need(False, f"pip cannot get hatchling to build the wheel: {built.stderr[-300:]}")
    assert built.returncode == 0, built.stderr
    [path] = out.glob("backupflow-*.whl")
    return path


def test_the_wheel_claims_no_generic_top_level_names(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"backupflow", "backupflow_app", wheel.name.split("-py3")[0] + ".dist-info"}
    layers = {name for name in names if name.startswith("backupflow_app/layers/")}
    for folder in ("flows", "tasks"):
        for module in (REPO / folder).glob("*.py"):
            assert f"backupflow_app/layers/{folder}/{module.name}" in layers
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "backupflow = backupflow_app.entry:main" in text


def test_the_installed_wheel_runs_without_the_repository(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    installed = _run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-index",
        "--target",
        str(site),
        str(wheel),
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr
    assert not (site / "flows").exists() and not (site / "tasks").exists()
    # The venv's own packages supply the dependencies; ``-S`` keeps its .pth files (the
    # editable install's points at a checkout) from adding anything else to the path.
    dependencies = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    env = {
        "PYTHONPATH": ":".join([str(site), *dependencies]),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    python = [sys.executable, "-S", "-P"]

    helped = _run(*python, "-m", "backupflow_app", "--help", cwd=tmp_path, env=env)
    assert helped.returncode == 0, helped.stderr
    assert "restore" in helped.stdout and "backup" in helped.stdout

    script = (
        "import json, sys\n"
        "import backupflow, backupflow_app\n"
        "import flows.backup_database, tasks.steps\n"
        "print(json.dumps({'path': sys.path, 'files': [m.__file__ for m in (backupflow,"
        " backupflow_app, flows.backup_database, tasks.steps)]}))\n"
    )
    imported = _run(*python, "-c", script, cwd=tmp_path, env=env)
    assert imported.returncode == 0, imported.stderr
    seen = json.loads(imported.stdout.strip().splitlines()[-1])
    for file in seen["files"]:
        assert Path(file).is_relative_to(site), file
    layers = site / "backupflow_app" / "layers"
    for entry in seen["path"]:
        here = Path(entry or tmp_path)
        if entry in dependencies:  # the venv's own site-packages (it may sit in the checkout)
            assert not (here / "flows").exists() and not (here / "tasks").exists(), entry
            continue
        assert not here.is_relative_to(REPO), entry
        if here != layers:  # no checkout's flows on the path, whichever repository it is
            assert not (here / "flows" / "backup_database.py").exists(), entry
