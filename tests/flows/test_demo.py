"""The demo as a newcomer runs it (``backupflow demo``, a process of its own, no Prefect API
configured, a fresh ``PREFECT_HOME``): it passes, says RTO and RPO against the objectives
after a DR drill and a health check, and prints none of the temporary server's noise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from backupflow_app.demo_drill import duration

ROOT = Path(__file__).resolve().parents[2]

#: What a quiet demo never prints.
NOISE = ("Failed to send telemetry", "database is locked", "Traceback", "| ERROR")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    home = tmp_path_factory.mktemp("prefect-home")
    workdir = tmp_path_factory.mktemp("demo") / "run"
    # Nothing of the test session's Prefect set-up: the app must quiet the server itself.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "BACKUPFLOW_", "AWS_")) and k != "DO_NOT_TRACK"
    }
    env["PREFECT_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return subprocess.run(
        [sys.executable, "-m", "backupflow_app", "demo", "--workdir", str(workdir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_demo_passes(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "demo passed" in demo.stdout
    assert "refused as expected" in demo.stdout


def test_the_demo_says_rto_and_rpo_of_a_dr_drill_and_the_health_check(
    demo: subprocess.CompletedProcess[str],
) -> None:
    out = demo.stdout
    assert "DR drill from the DR tier alone passed" in out
    assert re.search(r"RTO [\d.]+ (s|min) \(objective 4 h\)", out), out
    assert re.search(r"RPO [\d.]+ (s|min) \(objective 1 h\)", out), out
    # seconds, or minutes when a busy host made the demo take over a minute
    health = re.search(
        r"health check ok: (\d+) job/tier pairs.*RPO right now is [\d.]+ (s|min)", out
    )
    assert health, out
    assert int(health.group(1)) == 18  # 3 database jobs and 3 file sets, in 3 tiers
    # The drill comes before the disaster, the health check after the primary was healed.
    assert out.index("DR drill from") < out.index("disaster:") < out.index("healing:")


def test_the_demo_prints_no_server_noise_and_no_error_line(
    demo: subprocess.CompletedProcess[str],
) -> None:
    both = demo.stdout + demo.stderr
    found = [noise for noise in NOISE if noise in both]
    assert not found, f"the demo printed {found}:\n{demo.stderr[-3000:]}"


@pytest.mark.parametrize(
    ("delta", "said"),
    [
        (timedelta(hours=4), "4 h"),
        (timedelta(hours=1), "1 h"),
        (timedelta(seconds=2.634), "2.63 s"),
        (timedelta(minutes=3, seconds=30), "3.5 min"),
        (timedelta(hours=1, minutes=30), "1.50 h"),
    ],
)
def test_durations_read_as_an_operator_says_them(delta: timedelta, said: str) -> None:
    assert duration(delta) == said


def test_any_entry_into_the_app_turns_the_temporary_servers_analytics_off() -> None:
    """Not only ``backupflow`` (cli.main): importing the app (the demo from Python, a notebook)
    is enough, and an operator's own choice is kept."""
    code = "import os, backupflow_app.demo; print(os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'])"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_ANALYTICS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    said = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert said.stdout.strip() == "false"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "true"
    said = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert said.stdout.strip() == "true"
