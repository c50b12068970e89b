"""T-SQL text and SQL Server path rules, table-driven (issue 12, class 7); no I/O."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

import pytest

from backupflow.engines.mssql import paths, tsql
from backupflow.errors import CatalogError, EngineError


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("GanttDB", "[GanttDB]"),
        ("a]b", "[a]]b]"),
        ("]]", "[]]]]]"),
        ("x]; DROP DATABASE y;--", "[x]]; DROP DATABASE y;--]"),
    ],
)
def test_class7_identifiers_are_bracket_quoted(text: str, quoted: str) -> None:
    assert tsql.name(text) == quoted


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain", "N'plain'"),
        ("O'Brien", "N'O''Brien'"),
        ("'; DROP DATABASE x;--", "N'''; DROP DATABASE x;--'"),
        ("\\\\host\\share", "N'\\\\host\\share'"),
        ("日本語", "N'日本語'"),
    ],
)
def test_class7_literals_double_every_quote(text: str, quoted: str) -> None:
    assert tsql.literal(text) == quoted


def test_class7_restore_statement_quotes_both_sides_of_every_move() -> None:
    statement = tsql.restore_statement(
        "Gantt]Copy",
        "/var/opt/mssql/backup/restore_x.bak",
        "full",
        moves=[("O'Brien/Data", "/var/opt/mssql/data/GanttCopy_O_Brien_Data.mdf")],
        replace=True,
    )
    assert statement == (
        "RESTORE DATABASE [Gantt]]Copy] FROM DISK = N'/var/opt/mssql/backup/restore_x.bak' "
        "WITH FILE = 1, NORECOVERY, CHECKSUM, "
        "MOVE N'O''Brien/Data' TO N'/var/opt/mssql/data/GanttCopy_O_Brien_Data.mdf', REPLACE;"
    )


@pytest.mark.parametrize(
    "name",
    [
        "GanttDB_full_20261126T000000_abcdef.bak",
        "restore_20261126T000001Z-log-000001.trn",
        "a..b_full_20261126T000000_abcdef.bak",  # the name rule allows a..b: one component
    ],
)
def test_class7_plain_file_names_are_accepted(name: str) -> None:
    assert paths.check_file_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../x.bak", "a/b.bak", "a\\b.bak", ".hidden.bak", "..bak", "x\x00.bak", 7],
)
def test_class7_file_names_with_separators_or_dots_are_refused(name: object) -> None:
    with pytest.raises(EngineError, match="plain file name"):
        paths.check_file_name(name)


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("/var/opt/mssql/data", PurePosixPath("/var/opt/mssql/data")),
        ("/var/opt/mssql/data/", PurePosixPath("/var/opt/mssql/data")),
        ("D:\\SQLData\\", PureWindowsPath("D:\\SQLData")),
        ("C:/Program Files/MSSQL/DATA", PureWindowsPath("C:\\Program Files\\MSSQL\\DATA")),
    ],
)
def test_class7_absolute_server_folders_are_accepted(folder: str, expected: object) -> None:
    assert paths.check_server_folder(folder, "server_data_dir") == expected


@pytest.mark.parametrize(
    "folder",
    [
        "\\\\attacker.example\\share",
        "//attacker.example/share",
        "\\/attacker.example/share",
        "\\\\?\\C:\\data",
        "\\\\.\\pipe\\x",
        "relative/data",
        "data",
        "C:data",
        "\\data",
        "..\\..\\x",
        "/var/opt/../../etc",
        "C:\\data\\..\\..\\Windows",
        "/var/opt/mssql\\..\\x",
        "C:\\data:stream",
        "/data\n/x",
        "",
        "/" + "x" * 260,
    ],
)
def test_class7_shares_relative_and_dotdot_folders_are_refused(folder: str) -> None:
    with pytest.raises(ValueError, match="server_data_dir") as caught:
        paths.check_server_folder(folder, "server_data_dir")
    assert "\n" not in str(caught.value)


def test_class7_a_share_is_allowed_only_where_asked_for() -> None:
    pure = paths.check_server_folder("\\\\nas\\backups", "x", allow_share=True)
    assert paths.server_file(pure, "a.bak") == "\\\\nas\\backups\\a.bak"
    with pytest.raises(ValueError, match="not allowed"):
        paths.check_server_folder("\\\\nas\\backups\\..\\..\\x", "x", allow_share=True)


@pytest.mark.parametrize(
    ("kind", "physical", "suffix"),
    [
        ("D", "/var/opt/mssql/data/a.mdf", ".mdf"),
        ("D", "C:\\Data\\b.NDF", ".ndf"),
        ("D", "\\\\attacker.example\\share\\x.ldf", ".mdf"),  # a data file is never .ldf
        ("D", "/etc/passwd", ".mdf"),
        ("D", "x.exe", ".mdf"),
        ("D", "", ".mdf"),
        ("L", "/var/opt/mssql/data/a.ldf", ".ldf"),
        ("L", "..\\..\\x.mdf", ".ldf"),
        ("S", "/var/opt/mssql/data/fs", ""),
        ("F", "C:\\ftdata\\cat.mdf", ""),
    ],
)
def test_class7_only_a_known_suffix_survives_from_a_physical_name(
    kind: str, physical: str, suffix: str
) -> None:
    (item,) = paths.manifest_files(
        [{"logical": "f", "physical": physical, "type": kind}], "20261126T000000Z-full-000001"
    )
    assert item == paths.ManifestFile("f", kind, suffix)


def test_class7_move_targets_are_in_the_chosen_folders_with_safe_unique_names() -> None:
    files = [
        paths.ManifestFile("Data/1", "D", ".mdf"),
        paths.ManifestFile("Data'1", "D", ".ndf"),
        paths.ManifestFile("DATA_1", "D", ".ndf"),
        paths.ManifestFile("x" * 200, "D", ".ndf"),
        paths.ManifestFile("fs", "S", ""),
        paths.ManifestFile("Log]", "L", ".ldf"),
    ]
    moves = paths.move_targets(
        files, "Copy", PureWindowsPath("D:\\Data"), PurePosixPath("/var/opt/mssql/log")
    )
    assert moves == [
        ("Data/1", "D:\\Data\\Copy_Data_1.mdf"),
        ("Data'1", "D:\\Data\\Copy_Data_1_2.ndf"),
        ("DATA_1", "D:\\Data\\Copy_DATA_1_3.ndf"),
        ("x" * 200, "D:\\Data\\Copy_" + "x" * 64 + ".ndf"),
        ("fs", "D:\\Data\\Copy_fs"),
        ("Log]", "/var/opt/mssql/log/Copy_Log_.ldf"),
    ]


def test_class7_a_damaged_file_list_never_repeats_its_content() -> None:
    with pytest.raises(CatalogError) as caught:
        paths.manifest_files(
            [{"logical": "x\x00../../etc/passwd", "physical": "/x.mdf", "type": "D"}], "b1"
        )
    assert "passwd" not in str(caught.value) and "b1" in str(caught.value)


def test_server_errors_keep_every_record_number_without_the_driver_prefix() -> None:
    from backupflow.engines.mssql.connection import server_records
    from tests.support.fake_odbc import log_too_recent, odbc_message

    (result,) = log_too_recent(38000000036800001, 38000000035200001)
    assert isinstance(result.error, list)
    records = server_records(odbc_message(result.error))
    assert [number for number, _text in records] == [4305, 3013]
    assert records[0][1].startswith("The log in this backup set begins at LSN 38000000036800001")
    assert records[1][1] == "RESTORE LOG is terminating abnormally."
    assert server_records("[08001] [Microsoft] no numbers here") == [(0, "no numbers here")]


def test_the_tail_log_is_copy_only_and_checkdb_reports_every_error() -> None:
    from backupflow.engines.mssql import tsql

    tail = tsql.tail_log_statement("Gantt]DB", "/b/t.trn")
    assert (
        tail
        == "BACKUP LOG [Gantt]]DB] TO DISK = N'/b/t.trn' WITH COPY_ONLY, CHECKSUM, INIT, FORMAT;"
    )
    assert "NORECOVERY" not in tail  # the replaced database stays usable, kept aside
    assert tsql.checkdb("x") == "DBCC CHECKDB ([x]) WITH NO_INFOMSGS, ALL_ERRORMSGS;"


@pytest.mark.parametrize("target", ["GanttDB", "G" * 128, "a.b-c"])
def test_scratch_and_aside_names_follow_the_name_rule_and_never_equal_the_target(
    target: str,
) -> None:
    from backupflow.engines.mssql import restoring
    from backupflow.names import is_database_name

    scratch = restoring.scratch_name(target)
    aside = restoring.aside_name(target, "20261126T093000Z")
    assert is_database_name(scratch) and is_database_name(aside)
    assert restoring.is_scratch_name(scratch) and not restoring.is_scratch_name(target)
    assert scratch != target and aside != target
