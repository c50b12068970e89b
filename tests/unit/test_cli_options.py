"""Command-line option checks: restore times, one-line messages, paths and undo folders."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from backupflow.config import load_settings
from backupflow.errors import ParameterError, RestoreTargetError
from backupflow_app.cli_options import (
    check_database_option,
    check_undo_folder,
    one_line,
    parse_target_time,
    restore_path,
)

NOW = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
SEOUL = "Asia/Seoul"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-26T10:00:00+09:00", datetime(2026, 11, 26, 1, 0, tzinfo=UTC)),
        ("2026-11-26T09:30:00", datetime(2026, 11, 26, 0, 30, tzinfo=UTC)),  # read in Seoul
        ("2026-11-25", datetime(2026, 11, 24, 15, 0, tzinfo=UTC)),
        ("2000-01-01T00:00:00Z", datetime(2000, 1, 1, tzinfo=UTC)),
    ],
)
def test_a_good_time_is_read_in_the_settings_timezone(value: str, expected: datetime) -> None:
    moment = parse_target_time(value, SEOUL, now=NOW)

    assert moment.tzinfo is not None
    assert moment.astimezone(UTC) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("\t\n", "is empty"),
        ("yesterday", "not an ISO-8601 time"),
        ("2026-02-30", "not an ISO-8601 time"),
        ("2026-11-26T10:00:00+24:00", "not an ISO-8601 time"),
        ("2026-11-26" + "0" * 10_000, "not an ISO-8601 time"),
        ("0001-01-01T00:00:00", "out of range"),  # Seoul is ahead of UTC: before year 1
        ("9999-12-31T23:59:59-12:00", "out of range"),  # after year 9999 in UTC
        ("0001-01-01T00:00:00+00:00", "before 2000"),
        ("1999-12-31T23:59:59Z", "before 2000"),
        ("2000-01-01T08:59:59", "before 2000"),  # Seoul: 1999-12-31T23:59:59Z
        ("2026-11-26T01:00:01Z", "1 s later than now"),
        ("2026-11-26T02:00:00Z", "60 min later than now"),
        ("2026-11-27T01:00:00Z", "24 h later than now"),
        ("9999-12-31T23:59:59", "days later than now"),
    ],
)
def test_a_bad_time_is_one_sentence(value: str, says: str) -> None:
    with pytest.raises(ParameterError) as caught:
        parse_target_time(value, SEOUL, now=NOW)

    message = str(caught.value)
    assert says in message
    assert message.startswith("--at ") and message.endswith(".")
    assert len(message) < 300 and "\n" not in message


def test_now_itself_is_not_in_the_future() -> None:
    assert parse_target_time("2026-11-26T01:00:00Z", SEOUL, now=NOW) == datetime(
        2026, 11, 26, 1, 0, tzinfo=UTC
    )


def test_the_option_name_is_the_one_given() -> None:
    with pytest.raises(ParameterError, match=r"^target_time is empty"):
        parse_target_time("", SEOUL, now=NOW, option="target_time")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("two\nlines", "two lines"),
        ("tab\tand  spaces ", "tab and spaces"),
        ("\x1b[2Jclear", "\\x1b[2Jclear"),
        ("right\u202eto-left", "right\\u202eto-left"),
        ("bytes \udcff", "bytes \\udcff"),
        ("bell\x07", "bell\\x07"),
        ("日本語", "日本語"),
    ],
)
def test_one_line_escapes_what_a_terminal_would_obey(text: str, shown: str) -> None:
    assert one_line(text) == shown


def test_one_line_is_bounded() -> None:
    assert len(one_line("x" * 100_000)) == 2000


@pytest.mark.parametrize("name", ["", "../../etc/x", "a b", "x'; DROP", "\\\\host\\share", "."])
def test_database_option_follows_the_name_rule(name: str) -> None:
    with pytest.raises(ParameterError, match="is not a database name"):
        check_database_option(name, "--database")


def test_database_option_accepts_a_name() -> None:
    assert check_database_option("gantt_copy-2.bak", "--into") == "gantt_copy-2.bak"


def test_relative_path_is_read_against_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(restore_roots=[tmp_path / "restores"])
    (tmp_path / "restores").mkdir()
    monkeypatch.chdir(tmp_path / "restores")

    assert restore_path("copy.db", settings) == tmp_path / "restores" / "copy.db"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParameterError, match="is not under an allowed restore folder"):
        restore_path("copy.db", settings)


def _aside(root: Path, name: str, record: object) -> Path:
    folder = root / f".backupflow-aside-{name}"
    folder.mkdir(parents=True)
    (folder / "undo.json").write_text(json.dumps(record))
    return folder


def test_undo_folder_of_this_root_is_accepted(tmp_path: Path) -> None:
    folder = _aside(tmp_path, "1", {"created": ["a"], "replaced": ["b/c"]})

    assert check_undo_folder(str(folder), tmp_path, "undo.json") == folder


@pytest.mark.parametrize(
    "record",
    [
        {},
        [],
        {"created": "a", "replaced": []},
        {"created": [], "replaced": [1]},
        {"created": [["a"]], "replaced": []},
        {"created": []},
        None,
    ],
)
def test_undo_record_of_the_wrong_shape_is_refused(tmp_path: Path, record: object) -> None:
    folder = _aside(tmp_path, "1", record)

    with pytest.raises(RestoreTargetError, match="undo record"):
        check_undo_folder(str(folder), tmp_path, "undo.json")


def test_undo_folder_elsewhere_or_linked_is_refused(tmp_path: Path) -> None:
    root, other = tmp_path / "root", tmp_path / "other"
    foreign = _aside(other, "1", {"created": [], "replaced": []})
    root.mkdir()
    os.symlink(foreign, root / ".backupflow-aside-2")
    plain = root / "config"
    plain.mkdir()
    (plain / "undo.json").write_text('{"created": [], "replaced": []}')

    for folder, says in [
        (foreign, "not a folder kept aside"),
        (root / ".backupflow-aside-2", "is a link"),
        (plain, "not a folder kept aside"),
        (root / ".backupflow-aside-3", "No such file"),
    ]:
        with pytest.raises(ParameterError, match=says):
            check_undo_folder(str(folder), root, "undo.json")


def test_tz_aware_input_keeps_its_offset() -> None:
    moment = parse_target_time("2026-11-26T05:00:00+05:00", SEOUL, now=NOW)

    assert moment.utcoffset() == timezone(timedelta(hours=5)).utcoffset(None)
