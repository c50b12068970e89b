"""What the Prefect UI shows before and around a run: the run form's help text (each
parameter's description in the schema ``prefect deploy`` stores) and run names that say what
the run does, never Prefect's random two-word names."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import prefect.runtime.flow_run
import pytest
import yaml
from prefect import Flow
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema

from backupflow.config import Settings, use_settings
from backupflow.reporting import local_and_utc, recovery_point, recovery_time, short_chain
from flows.adopt_backups import adopt_backups
from flows.backup_review import backup_review
from flows.dr_drill import dr_drill
from flows.failover import failover
from flows.prune_backups import prune_backups
from flows.replicate_backups import replicate_backups
from flows.restore_database import restore_database
from flows.restore_files import restore_files
from flows.restore_system import restore_system
from flows.verify_backups import verify_backups

ROOT = Path(__file__).resolve().parents[2]


def _deployed() -> list[tuple[str, str]]:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return [(d["name"], d["entrypoint"]) for d in config["deployments"]]


def _flow(entrypoint: str, monkeypatch: pytest.MonkeyPatch) -> Flow[Any, Any]:
    monkeypatch.chdir(ROOT)  # entrypoints are relative to the project, as for prefect deploy
    return load_flow_from_entrypoint(entrypoint)


@pytest.mark.parametrize(("name", "entrypoint"), _deployed(), ids=[n for n, _ in _deployed()])
def test_every_parameter_of_every_deployed_flow_has_help_text(
    name: str, entrypoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schema is what ``prefect deploy`` stores for the run form (its parameter_schema of
    the flow loaded from the entrypoint); every property carries a description."""
    schema = parameter_schema(_flow(entrypoint, monkeypatch)).model_dump()
    missing = [p for p, spec in schema["properties"].items() if not spec.get("description")]
    assert not missing, f"{name}: no help text in the run form for {', '.join(missing)}"


def test_the_run_form_help_is_the_docstring_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = parameter_schema(_flow("flows/restore_database.py:restore_database", monkeypatch))
    target = schema.model_dump()["properties"]["target_time"]["description"]
    assert "Leave it empty for the latest" in target and "timezone" in target


def test_the_flow_that_is_not_deployed_has_help_text_too() -> None:
    properties = parameter_schema(adopt_backups).model_dump()["properties"]
    assert properties and all(spec.get("description") for spec in properties.values())


@pytest.mark.parametrize(
    ("name", "entrypoint"),
    [
        pytest.param(
            name,
            entrypoint,
            id=name,
        )
        for name, entrypoint in _deployed()
    ],
)
def test_every_deployed_flow_names_its_runs(
    name: str, entrypoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a flow_run_name Prefect gives a run a random name (``portable-cockle``)."""
    assert _flow(entrypoint, monkeypatch).flow_run_name, f"{name} runs get random names"


SEOUL_MINUTE = r"\d{4}-\d\d-\d\dT\d\d:\d\d\+09:00"
CASES: list[tuple[Flow[Any, Any], dict[str, Any], str]] = [
    (
        restore_database,
        {"target_time": datetime.fromisoformat("2026-11-26T18:08:30+09:00")},
        r"restore-database-to-2026-11-26T18:08\+09:00",
    ),
    # as a deployment passes it: a string, in UTC
    (
        restore_database,
        {"target_time": "2026-11-26T09:08:00Z"},
        r"restore-database-to-2026-11-26T18:08\+09:00",
    ),
    # without an offset it is read in the settings' timezone, as the flow reads it
    (
        restore_database,
        {"target_time": "2026-11-26T09:08:00"},
        r"restore-database-to-2026-11-26T09:08\+09:00",
    ),
    (
        restore_database,
        {"target_time": None, "database": "sales"},
        r"restore-database-sales-latest",
    ),
    (restore_database, {"dry_run": True}, r"restore-database-latest-dry-run"),
    (restore_files, {"file_set": "uploads"}, r"restore-files-uploads-latest"),
    (restore_files, {}, r"restore-files-config-latest"),
    (restore_system, {"source": "dr", "dry_run": True}, r"restore-system-dr-latest-dry-run"),
    (dr_drill, {}, r"dr-drill-dr-latest"),
    (
        dr_drill,
        {"source": "secondary", "target_time": "2026-11-01T02:00:00+09:00"},
        r"dr-drill-secondary-to-2026-11-01T02:00\+09:00",
    ),
    (failover, {"dry_run": False}, rf"failover-{SEOUL_MINUTE}"),
    (verify_backups, {}, rf"verify-backups-{SEOUL_MINUTE}"),
    (
        prune_backups,
        {"tiers": ["dr"], "dry_run": True},
        rf"prune-backups-dr-{SEOUL_MINUTE}-dry-run",
    ),
    (replicate_backups, {}, rf"replicate-backups-{SEOUL_MINUTE}"),
    (adopt_backups, {"category": "config"}, rf"adopt-backups-config-{SEOUL_MINUTE}"),
    (adopt_backups, {}, rf"adopt-backups-database-{SEOUL_MINUTE}"),
    (backup_review, {"days": 92}, rf"backup-review-{SEOUL_MINUTE}"),
    # a time the flow will refuse still gives a name (the flow says what is wrong)
    (restore_database, {"target_time": "0001-01-01T00:00:00+09:00"}, r"restore-database-to-.+"),
    (dr_drill, {"target_time": "not a time"}, r"dr-drill-dr-to-not_a_time"),
]


@pytest.mark.parametrize(("flow", "parameters", "expected"), CASES)
def test_run_names_say_what_the_run_does(
    flow: Flow[Any, Any],
    parameters: dict[str, Any],
    expected: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(prefect.runtime.flow_run.FIELDS, "parameters", lambda: parameters)
    naming = flow.flow_run_name
    assert callable(naming)
    with use_settings(settings):  # Asia/Seoul
        name = naming()
    assert re.fullmatch(expected, name), name


def test_the_backup_runs_keep_their_names() -> None:
    from flows.backup_database import backup_database
    from flows.backup_files import backup_files

    assert backup_database.flow_run_name == "backup-database-{kind}"
    assert backup_files.flow_run_name == "backup-files-{file_set}"


AT = datetime(2026, 11, 26, 9, 8, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "zone", "shown"),
    [
        (AT, "Asia/Seoul", "2026-11-26 18:08:03+09:00 (09:08:03 UTC)"),
        (
            AT - timedelta(hours=9, minutes=30),
            "Asia/Seoul",
            "2026-11-26 08:38:03+09:00 (2026-11-25 23:38:03 UTC)",
        ),
        (AT, "UTC", "2026-11-26 09:08:03+00:00 (09:08:03 UTC)"),
        (AT, "America/St_Johns", "2026-11-26 05:38:03-03:30 (09:08:03 UTC)"),
        (None, "Asia/Seoul", "—"),
    ],
)
def test_times_are_shown_local_with_the_offset_and_in_utc(
    moment: datetime | None, zone: str, shown: str
) -> None:
    assert local_and_utc(moment, zone) == shown


def test_rto_and_rpo_follow_docs_objectives() -> None:
    created = AT
    verified = AT + timedelta(minutes=7)
    point = AT - timedelta(minutes=40)
    assert recovery_time(created, verified) == timedelta(minutes=7)
    # latest: the run's start minus the restore point
    assert recovery_point(point, None, created) == timedelta(minutes=40)
    # a time target: the target minus the restore point, whenever the restore runs
    assert recovery_point(point, point + timedelta(seconds=3), created) == timedelta(seconds=3)
    # a backup taken after the run was created: nothing lost
    assert recovery_point(AT + timedelta(seconds=5), None, created) == timedelta(0)


def test_chains_are_shortened_to_first_last_and_count() -> None:
    assert short_chain(["a-full", "b-diff", "c-log", "d-log"]) == "a-full … d-log (4 backups)"
    assert short_chain(["a-full"]) == "a-full (1 backup)"
    assert short_chain([]) == "—"


TIMED = [
    "flows/restore_database.py:restore_database",
    "flows/restore_files.py:restore_files",
    "flows/restore_system.py:restore_system",
    "flows/dr_drill.py:dr_drill",
]


@pytest.mark.parametrize("entrypoint", TIMED, ids=[e.rsplit(":", 1)[1] for e in TIMED])
def test_the_run_form_reads_a_time_typed_in_seoul_as_seoul_time(
    entrypoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form shows a text box (no date-time picker, which would send 18:12 as 18:12Z), and
    18:12 typed by an operator in Seoul restores to 09:12Z, as the help text says."""
    from backupflow.parameters import check_target_time

    flow = _flow(entrypoint, monkeypatch)
    spec = parameter_schema(flow).model_dump()["properties"]["target_time"]
    assert "format" not in str(spec) and {"type": "string"} in spec["anyOf"]
    assert "timezone" in spec["description"]
    # What the server does with the form's text before the flow runs, then the flow itself.
    given = flow.validate_parameters({"target_time": "2026-12-07 18:12"})["target_time"]
    now = datetime.fromisoformat("2026-12-08T00:00:00+00:00")
    read = check_target_time(given, "Asia/Seoul", now)
    assert read is not None
    assert read.astimezone(UTC).isoformat() == "2026-12-07T09:12:00+00:00"
    assert flow.validate_parameters({"target_time": None})["target_time"] is None
