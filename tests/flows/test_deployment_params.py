"""Class 10 (deployment parameters): whoever can start a deployment tries hostile values.

Every refusal is a ``ParameterError`` naming the parameter, raised before anything is read or
written: the test tree (backups, live database, log, outside folders) is byte-for-byte the
same afterwards.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from backupflow.config import Settings, use_settings
from backupflow.errors import ParameterError, RestoreTargetError
from backupflow.models import BackupKind
from flows.dr_drill import dr_drill
from flows.restore_database import restore_database
from flows.restore_system import restore_system
from tests.support.chain import content_digest, take_backup

Snapshot = dict[str, tuple[int, int, str]]


def _snapshot(root: Path) -> Snapshot:
    """Every entry under ``root``: mode, size and (files) content or (links) target."""
    found: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            if path.is_symlink():
                detail = "-> " + os.readlink(path)
            elif path.is_file():
                detail = path.read_bytes().hex()
            else:
                detail = ""
            found[str(path.relative_to(root))] = (st.st_mode, st.st_size, detail)
    return found


@pytest.fixture
def backed_up(settings: Settings, tmp_path: Path) -> Settings:
    """A live database with one full backup on every tier, and a folder outside the roots."""
    live = settings.database.sqlite_path
    live.parent.mkdir(parents=True)
    conn = sqlite3.connect(live)
    with conn:
        conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO tasks (name) VALUES (?)", [(f"t{i}",) for i in range(50)])
    conn.close()
    take_backup(settings, BackupKind.FULL)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.db").write_bytes(b"someone else's file")
    os.symlink(outside, live.parent / "escape")  # a link inside an allowed root, leading out
    os.symlink(outside / "victim.db", live.parent / "victim-link.db")
    return settings


def _refused(
    settings: Settings, tmp_path: Path, call: Callable[[], Any], *fragments: str
) -> ParameterError:
    """``call`` raises a ParameterError with ``fragments`` and changes nothing on disk."""
    before = _snapshot(tmp_path)
    with use_settings(settings), pytest.raises(ParameterError) as caught:
        call()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message
    assert _snapshot(tmp_path) == before
    return caught.value


# -- restore-database: into ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("into", "replace", "fragments"),
    [
        ("restored.db", False, ("into must be an absolute path", "'restored.db'")),
        ("./app/restored.db", True, ("into must be an absolute path",)),
        ("{tmp}/outside/new.db", False, ("into", "not under an allowed restore folder")),
        ("{tmp}/outside/victim.db", True, ("into", "not under an allowed restore folder")),
        ("{tmp}/app/../outside/victim.db", True, ("not under an allowed restore folder",)),
        ("{tmp}/app/escape/new.db", False, ("not under an allowed restore folder",)),
        ("{tmp}/app/escape/victim.db", True, ("not under an allowed restore folder",)),
        ("{tmp}/app/victim-link.db", True, ("not under an allowed restore folder",)),
        ("", True, ("into is empty",)),
        ("   ", True, ("into is empty",)),
        ("{tmp}/app/x\0.db", False, ("into is not a usable path",)),
        ("/" + "a/" * 2100 + "x.db", False, ("into is not a usable path",)),
    ],
    ids=[
        "relative",
        "relative-dot-with-replace",
        "outside-roots",
        "replace-a-foreign-file",
        "dotdot-out-of-a-root",
        "through-a-link-leading-out",
        "replace-through-a-link",
        "final-link-leading-out",
        "empty-with-replace-is-not-the-live-database",
        "blank",
        "nul-byte",
        "overlong",
    ],
)
def test_restore_database_refuses_hostile_into(
    backed_up: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    into: str,
    replace: bool,
    fragments: tuple[str, ...],
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative path would otherwise land here
    live = content_digest(backed_up.database.sqlite_path)
    _refused(
        backed_up,
        tmp_path,
        lambda: restore_database(into=into.replace("{tmp}", str(tmp_path)), replace=replace),
        *fragments,
    )
    assert content_digest(backed_up.database.sqlite_path) == live
    assert (tmp_path / "outside" / "victim.db").read_bytes() == b"someone else's file"


def test_a_link_inside_the_roots_is_not_a_target(backed_up: Settings, tmp_path: Path) -> None:
    """A link that stays inside the roots is still a link we did not make."""
    app = backed_up.database.sqlite_path.parent
    (app / "other.db").write_bytes(b"another database")
    os.symlink(app / "other.db", app / "alias.db")
    _refused(
        backed_up,
        tmp_path,
        lambda: restore_database(into=str(app / "alias.db"), replace=True),
        "into",
        "is a link",
    )


def test_into_under_a_configured_restore_root_is_accepted(
    backed_up: Settings, tmp_path: Path
) -> None:
    extra = tmp_path / "restores"
    allowed = backed_up.model_copy(update={"restore_roots": [extra]})
    with use_settings(allowed):
        report = restore_database(into=str(extra / "copy.db"))
    assert report.outcome is not None
    assert content_digest(extra / "copy.db") == content_digest(backed_up.database.sqlite_path)


def test_replace_without_into_is_the_explicit_live_restore(backed_up: Settings) -> None:
    live = backed_up.database.sqlite_path
    digest = content_digest(live)
    with use_settings(backed_up):
        with pytest.raises(RestoreTargetError, match="already exists"):
            restore_database(into=str(live))  # the live database needs replace
        report = restore_database(replace=True)
    assert report.target == live and report.outcome is not None
    assert report.outcome.kept_aside and content_digest(live) == digest


# -- restore-database: database names ----------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../gantt",
        "..",
        ".",
        "a/b",
        "/etc",
        "-rf",
        "",
        "gantt\0",
        "x" * 129,
        "gantt; DROP DATABASE gantt",
        "gantt]",
        "n'ame",
    ],
)
def test_restore_database_refuses_hostile_database_names(
    backed_up: Settings, tmp_path: Path, name: str
) -> None:
    error = _refused(
        backed_up,
        tmp_path,
        lambda: restore_database(database=name, dry_run=True),
        "from the database parameter is not allowed",
    )
    assert error.exit_code == 2


# -- target times --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "fragment"),
    [
        (datetime(1, 1, 1), "out of range"),
        (datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(hours=5))), "out of range"),
        (datetime(1999, 12, 31, 23, 59, tzinfo=UTC), "before 2000"),
        (datetime(1970, 1, 1, tzinfo=UTC), "before 2000"),
        (datetime(9999, 1, 1), "later than now"),
        (datetime.now(UTC) + timedelta(minutes=5), "later than now"),
    ],
    ids=["year-1", "year-9999-overflows", "1999", "epoch", "year-9999", "five-minutes-ahead"],
)
def test_restore_database_refuses_absurd_target_times(
    backed_up: Settings, tmp_path: Path, moment: datetime, fragment: str
) -> None:
    _refused(
        backed_up,
        tmp_path,
        lambda: restore_database(target_time=moment, dry_run=True),
        "target_time",
        fragment,
    )


def test_a_local_time_the_clocks_skip_is_refused(backed_up: Settings, tmp_path: Path) -> None:
    new_york = backed_up.model_copy(update={"timezone": "America/New_York"})
    _refused(
        new_york,
        tmp_path,
        lambda: restore_database(target_time=datetime(2025, 3, 9, 2, 30), dry_run=True),
        "target_time 2025-03-09T02:30:00 does not exist in America/New_York",
    )


def test_restore_system_refuses_a_bad_target_time_before_restoring(
    backed_up: Settings, tmp_path: Path
) -> None:
    _refused(
        backed_up,
        tmp_path,
        lambda: restore_system(source="dr", target_time=datetime(1999, 1, 1, tzinfo=UTC)),
        "target_time",
        "before 2000",
    )


# -- dr-drill: scratch ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scratch", "fragments"),
    [
        ("drill.db", ("scratch must be an absolute path",)),
        ("{tmp}/outside/drill.db", ("scratch", "not under an allowed restore folder")),
        ("{tmp}/app/escape/drill.db", ("scratch", "not under an allowed restore folder")),
        ("", ("scratch is empty",)),
    ],
    ids=["relative", "outside-roots", "through-a-link", "empty"],
)
def test_dr_drill_refuses_hostile_scratch(
    backed_up: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scratch: str,
    fragments: tuple[str, ...],
) -> None:
    monkeypatch.chdir(tmp_path)
    _refused(
        backed_up,
        tmp_path,
        lambda: dr_drill(scratch=scratch.replace("{tmp}", str(tmp_path))),
        *fragments,
    )


def test_dr_drill_never_restores_over_or_drops_the_live_database(backed_up: Settings) -> None:
    live = backed_up.database.sqlite_path
    digest = content_digest(live)
    with use_settings(backed_up), pytest.raises(RestoreTargetError, match="already exists"):
        dr_drill(scratch=str(live))
    assert content_digest(live) == digest


def test_dr_drill_refuses_a_bad_target_time(backed_up: Settings, tmp_path: Path) -> None:
    _refused(
        backed_up,
        tmp_path,
        lambda: dr_drill(target_time=datetime(1, 1, 1)),
        "target_time",
        "out of range",
    )


# -- SQL Server: into and scratch are database names -------------------------------------


@pytest.fixture
def sqlserver(backed_up: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """SQL Server settings on a worker where any connection attempt fails the test."""

    def no_connection(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a refused parameter must not reach the server")

    monkeypatch.setattr("backupflow.engines.mssql.connection.odbc_connect", no_connection)
    database = backed_up.database.model_copy(update={"engine": "sqlserver"})
    return backed_up.model_copy(update={"database": database})


@pytest.mark.parametrize(
    "into",
    [
        "../../../etc/cron.d/x",
        "/var/opt/mssql/data/gantt.mdf",
        "\\\\attacker.example\\share\\x",
        "gantt]; DROP DATABASE gantt; --",
        "o'brien",
        "",
    ],
)
def test_sqlserver_into_must_be_a_database_name(
    sqlserver: Settings, tmp_path: Path, into: str
) -> None:
    _refused(sqlserver, tmp_path, lambda: restore_database(into=into, replace=True), "into")


def test_sqlserver_drill_scratch_must_be_a_database_name(
    sqlserver: Settings, tmp_path: Path
) -> None:
    _refused(
        sqlserver,
        tmp_path,
        lambda: dr_drill(scratch="../x"),
        "from the scratch parameter is not allowed",
    )


def test_bootstrap_refuses_to_deploy_a_schedule_prefect_yaml_does_not_have(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The settings are the schedules' source of truth: an override that prefect.yaml does not
    carry would be ignored by the scheduler, so the bootstrap stops before it touches the API
    (which here is a closed port: reaching it would be a different error)."""
    from deployments.bootstrap import main

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("BACKUPFLOW_JOBS__DATABASE_LOG__SCHEDULE", "*/15 * * * *")

    assert main() == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "deployment 'database-log' runs on '0 * * * *'" in err
    assert "BACKUPFLOW_JOBS__DATABASE_LOG__SCHEDULE" in err
    assert "edit prefect.yaml and the setting together" in err
