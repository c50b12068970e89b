"""Issue 12, class 7: SQL Server names and paths, tried as an attacker would.

Everything runs through the engine, the script builder and the fake ODBC connection: the
assertions are on the T-SQL the server would receive and on the files the worker touches.
A sentinel file outside the worker's backup folder must survive every test.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backupflow.config import DatabaseSettings, Settings, load_settings
from backupflow.engines import open_engine
from backupflow.engines.base import BackupSource, Dump, DumpFile, Restored
from backupflow.engines.mssql import SqlServerEngine, restoring
from backupflow.engines.mssql.connection import SqlSession
from backupflow.errors import (
    CatalogError,
    ConfigError,
    EngineError,
    RestoreTargetError,
)
from backupflow.models import BackupKind, Category, Manifest, StoredObject
from backupflow.series import databases as databases_to_back_up
from tests.support.fake_odbc import FakeOdbc, ResultSet

BACKUP_DIR = "/var/opt/mssql/backup"
DATA_DIR = "/var/opt/mssql/data"
T0 = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)

#: Names an attacker (or a tired operator) gives where a database name is expected.
HOSTILE_NAMES = [
    "../../../etc/cron.d/x",
    "..",
    ".",
    "",
    "x/../../y",
    "/etc/passwd",
    "..\\..\\x",
    "\\\\attacker.example\\share\\x",
    "//attacker.example/share/x",
    "GanttDB'; DROP DATABASE GanttDB;--",
    "Gantt]DB",
    "Gantt DB",
    "Gantt\x00DB",
    "Gantt\nDB",
    "Gäntt",
    ".hidden",
    "-rf",
    "x" * 129,
]
#: Physical names a forged manifest's file list carries.
HOSTILE_PHYSICAL = [
    "\\\\attacker.example\\share\\x.mdf",
    "//attacker.example/share/x.mdf",
    "/etc/passwd",
    "..\\..\\x.mdf",
    "../../x.ldf",
    "x.mdf",
    "C:\\Windows\\System32\\config\\SAM",
]


@pytest.fixture
def worker(tmp_path: Path) -> Path:
    folder = tmp_path / "worker-backup"
    folder.mkdir()
    return folder


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Path]:
    """A file next to (outside) the worker's backup folder; every test checks it survives."""
    path = tmp_path / "sentinel"
    path.write_bytes(b"keep me")
    path.chmod(0o600)
    yield path
    assert path.read_bytes() == b"keep me", "a file outside the backup folder was changed"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _db_settings(worker: Path, **extra: Any) -> DatabaseSettings:
    return DatabaseSettings(
        engine="sqlserver",
        name="GanttDB",
        server="sql01.internal",
        user="backup_operator",
        server_backup_dir=BACKUP_DIR,
        worker_backup_dir=worker,
        **extra,
    )


@pytest.fixture
def server(worker: Path) -> FakeOdbc:
    fake = FakeOdbc().serve(worker)
    fake.filelist(
        [("GanttDB", f"{DATA_DIR}/GanttDB.mdf", "D"), ("GanttDB_log", f"{DATA_DIR}/x.ldf", "L")]
    )
    return fake


@pytest.fixture(autouse=True)
def _fixed_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scratch names end in a fixed suffix here, so MOVE targets can be spelt out."""
    monkeypatch.setattr(restoring.secrets, "token_hex", lambda _n: SUFFIX)


SUFFIX = "0badc0de"
COPY = f"GanttDB_copy_restore_{SUFFIX}"  # the scratch of a restore into GanttDB_copy


def _engine(worker: Path, server: FakeOdbc, **extra: Any) -> SqlServerEngine:
    return SqlServerEngine(_db_settings(worker, **extra), "GanttDB", SqlSession(server.connect))


def _manifest(
    kind: BackupKind = BackupKind.FULL,
    *,
    files: Any = None,
    database: str = "GanttDB",
    serial: int = 1,
    **position: Any,
) -> Manifest:
    if files is None:
        files = [
            {"logical": "GanttDB", "physical": f"{DATA_DIR}/GanttDB.mdf", "type": "D"},
            {"logical": "GanttDB_log", "physical": f"{DATA_DIR}/GanttDB_log.ldf", "type": "L"},
        ]
    return Manifest(
        id=f"20261126T00000{serial}Z-{kind.value}-00000{serial}",
        category=Category.DATABASE,
        kind=kind,
        engine="sqlserver",
        database=database,
        started_at=T0,
        finished_at=T0,
        restore_point=T0,
        position={"first_lsn": 100, "last_lsn": 200, "files": files, **position},
        objects=(
            StoredObject(
                role="data",
                key=f"k{serial}",
                codec="none",
                size=4,
                sha256="0" * 64,
                raw_size=4,
                raw_sha256="0" * 64,
            ),
        ),
    )


def _source(manifest: Manifest) -> BackupSource:
    return BackupSource(manifest, lambda role: io.BytesIO(b"TAPE"))


def _one_sentence(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and text.endswith("."), text
    return text


# -- names: constructor, open_engine, databases, ["*"] --------------------------------------


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_class7_hostile_name_is_refused_by_the_engine_before_any_statement(
    name: str, worker: Path, server: FakeOdbc, sentinel: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        SqlServerEngine(_db_settings(worker), name, SqlSession(server.connect))
    text = _one_sentence(caught.value)
    assert caught.value.exit_code == 3
    if name and not (name.isprintable() and len(name) <= 64):
        assert name not in text, "an unprintable or long name is never echoed"
    assert server.statements == []


def _sqlserver_settings(tmp_path: Path, worker: Path, **database: Any) -> Settings:
    return load_settings(
        repository={"primary": {"url": str(tmp_path / "backups")}},
        database={
            "engine": "sqlserver",
            "name": "GanttDB",
            "server_backup_dir": BACKUP_DIR,
            "worker_backup_dir": worker,
            **database,
        },
        backup_log=tmp_path / "log" / "backup.log",
        staging_dir=tmp_path / "staging",
    )


def _with_database(settings: Settings, **update: Any) -> Settings:
    """What a flow does with ``--database`` / a ``databases`` entry: a copy, unvalidated."""
    return settings.model_copy(update={"database": settings.database.model_copy(update=update)})


@pytest.mark.parametrize("name", ["../../../etc/cron.d/x", "/etc/passwd", "a/b", "x'--"])
def test_class7_hostile_database_option_is_refused_by_open_engine(
    name: str, tmp_path: Path, worker: Path, server: FakeOdbc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "backupflow.engines.mssql.connection.odbc_connect", lambda *_a: server.connect()
    )
    settings = _with_database(_sqlserver_settings(tmp_path, worker), name=name)
    with pytest.raises(ConfigError, match="is not allowed"):
        open_engine(settings)
    assert server.statements == []


def test_class7_hostile_databases_entries_are_refused_in_settings_and_in_copies(
    tmp_path: Path, worker: Path
) -> None:
    with pytest.raises(ConfigError, match="each database must be a name"):
        _sqlserver_settings(tmp_path, worker, databases=["GanttDB", "../../../etc/cron.d/x"])
    forged = _with_database(
        _sqlserver_settings(tmp_path, worker), databases=["GanttDB", "../../../etc/cron.d/x"]
    )
    with pytest.raises(ConfigError, match="BACKUPFLOW_DATABASE__DATABASES"):
        databases_to_back_up(forged)


def test_class7_star_skips_server_names_that_break_the_rule(
    tmp_path: Path, worker: Path, server: FakeOdbc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "backupflow.engines.mssql.connection.odbc_connect", lambda *_a: server.connect()
    )
    server.databases(
        ["Audit", "../../../etc/cron.d/x", "GanttDB", "x'; DROP TABLE t;--", "Gantt]DB", None]
    )
    settings = _sqlserver_settings(tmp_path, worker, databases=["*"])
    names, skipped = databases_to_back_up(settings)
    assert names == ["Audit", "GanttDB"]
    assert skipped == 4
    assert server.ran(r"^SELECT name FROM sys\.databases") != []


# -- backup file names stay in the backup folder -------------------------------------------


def test_class7_backup_file_is_written_and_removed_only_inside_the_backup_folder(
    worker: Path, server: FakeOdbc, sentinel: Path
) -> None:
    engine = _engine(worker, server)
    dump = engine.dump(BackupKind.FULL, None, worker / "staging")
    (statement,) = server.ran(r"^BACKUP DATABASE")
    disk = statement.split("N'", 1)[1].split("'", 1)[0]
    assert disk.rsplit("/", 1)[0] == BACKUP_DIR
    assert ".." not in disk
    assert dump.files[0].path.parent == worker
    engine.cleanup(dump)
    assert list(worker.iterdir()) == []


@pytest.mark.parametrize("escape", ["../sentinel", "sub/../../sentinel", "/abs"])
def test_class7_cleanup_refuses_a_path_outside_the_backup_folder(
    escape: str, worker: Path, server: FakeOdbc, sentinel: Path
) -> None:
    engine = _engine(worker, server)
    path = sentinel if escape == "/abs" else worker / escape
    dump = Dump(BackupKind.FULL, T0, (DumpFile("data", path),))
    with pytest.raises(EngineError, match="not a file directly inside"):
        engine.cleanup(dump)


# -- manifests -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../../etc/cron.d/x", "/etc/passwd", "x]; DROP", ""])
def test_class7_hostile_manifest_database_is_a_catalog_error_never_echoed(
    name: str, worker: Path, server: FakeOdbc, sentinel: Path
) -> None:
    engine = _engine(worker, server)
    chain = [_manifest(database=name)]
    with pytest.raises(CatalogError) as caught:
        engine.restore_script(chain, Path("GanttDB_copy"), replace=False, until=None)
    assert name not in _one_sentence(caught.value) or not name
    with pytest.raises(CatalogError):
        engine.restore([_source(m) for m in chain], Path(COPY))
    assert list(worker.iterdir()) == [], "nothing is copied for a forged manifest"
    assert server.ran(r"^RESTORE") == []


def test_class7_manifest_of_another_database_is_refused(worker: Path, server: FakeOdbc) -> None:
    with pytest.raises(CatalogError, match="belongs to another database"):
        _engine(worker, server).restore_script(
            [_manifest(database="Payroll")], Path("GanttDB_copy"), replace=False, until=None
        )


@pytest.mark.parametrize(
    "server_file", ["../../../etc/cron.d/x.bak", "/etc/passwd", "..\\x.bak", ".bak", 7]
)
def test_class7_hostile_server_file_in_a_manifest_is_refused(
    server_file: object, worker: Path, server: FakeOdbc
) -> None:
    manifest = _manifest(server_file=server_file)
    with pytest.raises(CatalogError, match="server file name") as caught:
        _engine(worker, server).restore_script(
            [manifest], Path("GanttDB_copy"), replace=False, until=None
        )
    assert str(server_file) not in str(caught.value)


@pytest.mark.parametrize("physical", HOSTILE_PHYSICAL)
def test_class7_manifest_physical_paths_never_reach_move(
    physical: str, worker: Path, server: FakeOdbc, sentinel: Path
) -> None:
    files = [
        {"logical": "GanttDB", "physical": physical, "type": "D"},
        {"logical": "GanttDB_log", "physical": physical, "type": "L"},
    ]
    engine = _engine(worker, server)
    chain = [_manifest(files=files)]
    restored = engine.restore([_source(m) for m in chain], Path(COPY))
    engine.install(restored, Path("GanttDB_copy"), replace=False, stamp="x")
    (restore,) = server.ran(rf"^RESTORE DATABASE \[{COPY}\] FROM DISK")
    assert "attacker" not in restore and "/etc/" not in restore and ".." not in restore
    assert "System32" not in restore and "x.mdf" not in restore
    assert f"MOVE N'GanttDB' TO N'{DATA_DIR}/{COPY}_GanttDB.mdf'" in restore
    assert f"MOVE N'GanttDB_log' TO N'{DATA_DIR}/{COPY}_GanttDB_log.ldf'" in restore
    assert list(worker.iterdir()) == []  # the restore copies are gone, nothing else touched


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ("not a list", "something other than a list"),
        (["x"], "an entry that is not a file"),
        ([{"logical": "a", "physical": "/x.mdf", "type": "X"}], "unknown type"),
        ([{"logical": "a", "physical": "/x.mdf"}], "unknown type"),
        ([{"logical": "", "physical": "/x.mdf", "type": "D"}], "logical file name"),
        ([{"logical": "a\x00b", "physical": "/x.mdf", "type": "D"}], "logical file name"),
        ([{"logical": "a\nb", "physical": "/x.mdf", "type": "D"}], "logical file name"),
        ([{"logical": "x" * 129, "physical": "/x.mdf", "type": "D"}], "logical file name"),
        ([{"logical": 5, "physical": "/x.mdf", "type": "D"}], "logical file name"),
        ([{"logical": "a", "physical": 5, "type": "D"}], "physical file name"),
        ([{"logical": "a", "physical": "/" * 2000, "type": "D"}], "physical file name"),
        (
            [
                {"logical": "a", "physical": "/a.mdf", "type": "D"},
                {"logical": "A", "physical": "/b.ndf", "type": "D"},
            ],
            "same logical name twice",
        ),
    ],
)
def test_class7_damaged_file_lists_are_one_sentence_catalog_errors(
    files: Any, why: str, worker: Path, server: FakeOdbc
) -> None:
    with pytest.raises(CatalogError, match=why) as caught:
        _engine(worker, server).restore_script(
            [_manifest(files=files)], Path("GanttDB_copy"), replace=False, until=None
        )
    _one_sentence(caught.value)
    assert server.ran(r"^RESTORE") == []


@pytest.mark.parametrize("into", ["GanttDB_copy", "GanttDB"])
def test_class7_no_file_list_cannot_be_restored(into: str, worker: Path, server: FakeOdbc) -> None:
    """Every restore goes to a scratch name first, so the server must be told where to put
    the files (MOVE) even when the live database is replaced."""
    engine = _engine(worker, server)
    with pytest.raises(CatalogError, match="no file list"):
        engine.restore_script([_manifest(files=[])], Path(into), replace=True, until=None)


def test_class7_hostile_lsn_in_a_manifest_is_a_catalog_error(
    worker: Path, server: FakeOdbc
) -> None:
    from backupflow.engines.mssql.chain import select_chain

    forged = _manifest().model_copy(update={"position": {"first_lsn": "1; DROP", "last_lsn": 200}})
    with pytest.raises(CatalogError, match="no valid first_lsn") as caught:
        select_chain([forged], "GanttDB", None)
    assert "DROP" not in str(caught.value)


# -- logical names -------------------------------------------------------------------------

ODD_LOGICAL = [
    ("Gantt/Data", "D", "Gantt_Data.mdf"),
    ("Gantt\\Data", "D", "Gantt_Data_2.ndf"),
    ("O'Brien", "D", "O_Brien.ndf"),
    ("a]b", "D", "a_b.ndf"),
    ("two words", "D", "two_words.ndf"),
    ("日本語", "D", "___.ndf"),
    ("../../x", "D", "______x.ndf"),
    ("log'; --", "L", "log___--.ldf"),
]


def _move_pairs(restore: str) -> list[tuple[str, str]]:
    """(quoted logical, target) of each MOVE clause, read back from the statement."""
    pairs = []
    for part in restore.split(" MOVE ")[1:]:
        logical, rest = part.split(" TO N'", 1)
        pairs.append((logical, rest.split("'", 1)[0]))
    return pairs


def test_class7_odd_logical_names_are_quoted_in_move_and_spelt_safely_in_file_names(
    worker: Path, server: FakeOdbc, sentinel: Path
) -> None:
    server.filelist(
        [
            (logical, f"{DATA_DIR}/f{i}{'.ldf' if kind == 'L' else '.ndf' if i else '.mdf'}", kind)
            for i, (logical, kind, _file) in enumerate(ODD_LOGICAL)
        ]
    )
    engine = _engine(worker, server)
    dump = engine.dump(BackupKind.FULL, None, worker / "staging")  # never crashes
    engine.cleanup(dump)
    manifest = _manifest(files=dump.position["files"])
    script = engine.restore_script([manifest], Path("GanttDB_copy"), replace=False, until=None)
    assert _move_pairs(script[0]) == [
        ("N'" + logical.replace("'", "''") + "'", f"{DATA_DIR}/{COPY}_{file_name}")
        for logical, _kind, file_name in ODD_LOGICAL
    ]


def test_class7_logical_names_that_look_alike_get_distinct_files(
    worker: Path, server: FakeOdbc
) -> None:
    files = [
        {"logical": "a/b", "physical": "/d/1.mdf", "type": "D"},
        {"logical": "a'b", "physical": "/d/2.ndf", "type": "D"},
        {"logical": "a b", "physical": "/d/3.ndf", "type": "D"},
        {"logical": "a_b", "physical": "/d/4.ndf", "type": "D"},
        {"logical": "log", "physical": "/d/5.ldf", "type": "L"},
    ]
    script = _engine(worker, server).restore_script(
        [_manifest(files=files)], Path("C"), replace=False, until=None
    )
    assert [target for _logical, target in _move_pairs(script[0])] == [
        f"{DATA_DIR}/C_restore_{SUFFIX}_a_b.mdf",
        f"{DATA_DIR}/C_restore_{SUFFIX}_a_b_2.ndf",
        f"{DATA_DIR}/C_restore_{SUFFIX}_a_b_3.ndf",
        f"{DATA_DIR}/C_restore_{SUFFIX}_a_b_4.ndf",
        f"{DATA_DIR}/C_restore_{SUFFIX}_log.ldf",
    ]


def test_class7_a_control_character_in_a_logical_name_fails_the_backup_not_the_restore(
    worker: Path, server: FakeOdbc, sentinel: Path
) -> None:
    server.filelist([("Gantt\x00DB", f"{DATA_DIR}/GanttDB.mdf", "D")])
    with pytest.raises(EngineError, match="MODIFY FILE"):
        _engine(worker, server).dump(BackupKind.FULL, None, worker / "staging")


# -- MOVE folders --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "folder",
    [
        "\\\\attacker.example\\share",
        "//attacker.example/share",
        "var/opt/mssql/data",
        "..\\..\\x",
        "/var/opt/mssql/../../etc",
        "C:\\data\\..\\..\\Windows",
        "\\\\?\\C:\\data",
        "C:data",
    ],
)
@pytest.mark.parametrize("setting", ["server_data_dir", "server_log_dir"])
def test_class7_configured_move_folders_refuse_shares_relative_and_dotdot(
    folder: str, setting: str, worker: Path, server: FakeOdbc
) -> None:
    with pytest.raises(ConfigError, match="not allowed") as caught:
        _engine(worker, server, **{setting: folder})
    assert setting in _one_sentence(caught.value)
    assert server.statements == []


@pytest.mark.parametrize(
    ("data", "log"),
    [
        ("\\\\attacker.example\\share\\", DATA_DIR),
        (DATA_DIR, "//attacker.example/share/"),
        ("data/", "log/"),
        ("/var/opt/mssql/../../tmp/", DATA_DIR),
    ],
)
def test_class7_a_hostile_server_default_folder_stops_the_restore_before_it_runs(
    data: str, log: str, worker: Path, server: FakeOdbc, sentinel: Path
) -> None:
    server.default_paths(data, log)
    engine = _engine(worker, server)
    with pytest.raises(EngineError, match="not allowed") as caught:
        engine.restore_script([_manifest()], Path("GanttDB_copy"), replace=False, until=None)
    assert "server_" in _one_sentence(caught.value)
    assert server.ran(r"^RESTORE") == []


def test_class7_no_server_default_folder_names_the_setting(worker: Path, server: FakeOdbc) -> None:
    server.default_paths(None, None)  # SQL Server 2008 R2 and earlier
    with pytest.raises(EngineError, match="BACKUPFLOW_DATABASE__SERVER_DATA_DIR"):
        _engine(worker, server).restore_script(
            [_manifest()], Path("GanttDB_copy"), replace=False, until=None
        )


def test_class7_move_uses_configured_folders_without_asking_the_server(
    worker: Path, server: FakeOdbc
) -> None:
    engine = _engine(worker, server, server_data_dir="D:\\SQLData\\", server_log_dir="L:\\SQLLogs")
    script = engine.restore_script([_manifest()], Path("GanttDB_copy"), replace=False, until=None)
    assert f"MOVE N'GanttDB' TO N'D:\\SQLData\\{COPY}_GanttDB.mdf'" in script[0]
    assert f"MOVE N'GanttDB_log' TO N'L:\\SQLLogs\\{COPY}_GanttDB_log.ldf'" in script[0]
    assert server.ran("SERVERPROPERTY") == []


def test_class7_move_uses_the_servers_windows_default_folders(
    worker: Path, server: FakeOdbc
) -> None:
    server.default_paths(
        "C:\\Program Files\\Microsoft SQL Server\\MSSQL16.MSSQLSERVER\\MSSQL\\DATA\\",
        "E:\\Logs\\",
    )
    script = _engine(worker, server).restore_script(
        [_manifest()], Path("GanttDB_copy"), replace=False, until=None
    )
    assert (
        "MOVE N'GanttDB' TO N'C:\\Program Files\\Microsoft SQL Server\\MSSQL16.MSSQLSERVER"
        f"\\MSSQL\\DATA\\{COPY}_GanttDB.mdf'" in script[0]
    )
    assert f"MOVE N'GanttDB_log' TO N'E:\\Logs\\{COPY}_GanttDB_log.ldf'" in script[0]


# -- restore targets -----------------------------------------------------------------------


@pytest.mark.parametrize("into", ["../../../etc/cron.d/x", "/etc/passwd", "a/b", "x]", ".."])
def test_class7_hostile_restore_target_is_refused_everywhere(
    into: str, worker: Path, server: FakeOdbc, sentinel: Path
) -> None:
    engine = _engine(worker, server)
    target = Path(into)
    for attempt in (
        lambda: engine.check_target(target, replace=True),
        lambda: engine.restore_script([_manifest()], target, replace=True, until=None),
        lambda: engine.scratch_path(target),
        lambda: engine.before_restore(target, replace=True, stamp="x"),
        lambda: engine.install(
            Restored(Path(f"GanttDB_restore_{SUFFIX}"), ()), target, replace=True, stamp="x"
        ),
        lambda: engine.smoke(target),
        lambda: engine.drop(target),
    ):
        with pytest.raises(RestoreTargetError, match="restore target"):
            attempt()
    assert server.statements == []


@pytest.mark.parametrize("into", ["master", "MSDB", "model", "tempdb"])
def test_class7_system_databases_are_never_restore_targets(
    into: str, worker: Path, server: FakeOdbc
) -> None:
    with pytest.raises(RestoreTargetError, match="system database"):
        _engine(worker, server).check_target(Path(into), replace=True)
    assert server.statements == []


def test_class7_the_live_database_in_another_case_is_still_the_live_database(
    worker: Path, server: FakeOdbc
) -> None:
    engine = _engine(worker, server)
    script = engine.restore_script([_manifest()], Path("ganttdb"), replace=True, until=None)
    assert script[0].startswith(f"BACKUP LOG [GanttDB] TO DISK = N'{BACKUP_DIR}/GanttDB_tail_")
    assert script[1].startswith(f"RESTORE DATABASE [GanttDB_restore_{SUFFIX}]")  # not live
    (saved,) = engine.before_restore(Path("GANTTDB"), replace=True, stamp="20261126T093000Z")
    assert saved.startswith("tail-log backup of GanttDB (COPY_ONLY)")  # the live spelling
    assert server.ran(r"^BACKUP LOG") == [
        f"BACKUP LOG [GanttDB] TO DISK = N'{BACKUP_DIR}/GanttDB_tail_20261126T093000Z.trn' "
        "WITH COPY_ONLY, CHECKSUM, INIT, FORMAT;"
    ]
    assert script[-1] == f"ALTER DATABASE [GanttDB_restore_{SUFFIX}] MODIFY NAME = [GanttDB];"
    with pytest.raises(RestoreTargetError, match="live database"):
        engine.drop(Path("GANTTDB"))


# -- the worker's files --------------------------------------------------------------------


def test_class7_a_link_planted_at_a_restore_copy_is_not_followed(
    worker: Path, server: FakeOdbc, sentinel: Path, tmp_path: Path
) -> None:
    manifest = _manifest()
    planted = worker / f"{COPY}_000.bak"
    planted.symlink_to(sentinel)
    dangling = tmp_path / "would-be-created"
    engine = _engine(worker, server)
    old = os.umask(0o022)
    try:
        seen: list[tuple[bool, bytes, int]] = []

        def restore_reads_the_copy(_sql: str, _params: tuple[Any, ...]) -> list[ResultSet]:
            seen.append(
                (planted.is_symlink(), planted.read_bytes(), stat.S_IMODE(planted.stat().st_mode))
            )
            return server._restore(_sql, _params)

        server.on(r"^RESTORE DATABASE .* FROM DISK", restore_reads_the_copy)
        engine.restore([_source(manifest)], Path(COPY))
    finally:
        os.umask(old)
    assert seen == [(False, b"TAPE", 0o640)]
    assert not dangling.exists()
    assert not planted.exists()


def test_class7_a_link_planted_at_a_copy_after_it_was_written_is_removed_not_followed(
    worker: Path, server: FakeOdbc, sentinel: Path
) -> None:
    manifest = _manifest()
    engine = _engine(worker, server)
    copy = worker / f"{COPY}_000.bak"

    def swapped_while_the_server_restores(sql: str, params: tuple[Any, ...]) -> list[ResultSet]:
        copy.unlink()
        copy.symlink_to(sentinel)
        return server._restore(sql, params)

    server.on(r"^RESTORE DATABASE .* FROM DISK", swapped_while_the_server_restores)
    engine.restore([_source(manifest)], Path(COPY))
    assert not copy.exists() and not copy.is_symlink()  # the link removed, the sentinel kept
