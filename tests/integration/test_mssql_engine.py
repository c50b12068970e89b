"""The SQL Server engine end to end against recorded server behaviour (no SQL Server here)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backupflow.config import DatabaseSettings
from backupflow.engines.base import BackupSource
from backupflow.engines.mssql import SqlServerEngine
from backupflow.engines.mssql.connection import SqlSession, connection_string
from backupflow.errors import EngineError, IntegrityError, RestoreTargetError
from backupflow.models import BackupKind, Category, Manifest, StoredObject
from tests.support.fake_odbc import FakeOdbc, ResultSet

MSDB_COLUMNS = [
    "first_lsn",
    "last_lsn",
    "checkpoint_lsn",
    "database_backup_lsn",
    "differential_base_lsn",
    "type",
    "is_copy_only",
    "backup_start_date",
    "backup_finish_date",
    "fork",
    "guid",
    "compressed_backup_size",
    "backup_size",
]
FORK = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
FILELIST = ResultSet(
    ["LogicalName", "PhysicalName", "Type"],
    [
        ("GanttDB", "/var/opt/mssql/data/GanttDB.mdf", "D"),
        ("GanttDB_log", "/var/opt/mssql/data/GanttDB_log.ldf", "L"),
    ],
)
# Recorded msdb rows of a full, a differential and a log backup (LSNs are numeric(25,0)).
RECORDED = {
    "full": (
        "38000000028800037",
        "38000000030400001",
        "38000000028800037",
        "0",
        "0",
        "D",
        False,
        datetime(2026, 11, 26, 2, 0, 0),
        datetime(2026, 11, 26, 2, 0, 4),
    ),
    "diff": (
        "38000000031200001",
        "38000000031600001",
        "38000000031200001",
        "38000000028800037",
        "38000000028800037",
        "I",
        False,
        datetime(2026, 11, 26, 6, 0, 0),
        datetime(2026, 11, 26, 6, 0, 2),
    ),
    "log": (
        "38000000030400001",
        "38000000032000001",
        "38000000031200001",
        "38000000028800037",
        "0",
        "L",
        False,
        datetime(2026, 11, 26, 7, 0, 0),
        datetime(2026, 11, 26, 7, 0, 1),
    ),
}


def _settings(tmp_path: Path) -> DatabaseSettings:
    return DatabaseSettings(
        engine="sqlserver",
        name="GanttDB",
        server="sql01.internal",
        user="backup_operator",
        password="p;w}d=1",  # type: ignore[arg-type]
        server_backup_dir="/var/opt/mssql/backup",
        worker_backup_dir=tmp_path,
        server_timezone="Asia/Seoul",
    )


@pytest.fixture
def server(tmp_path: Path) -> FakeOdbc:
    fake = FakeOdbc()
    fake.on(r"FROM sys\.databases", [ResultSet(["state_desc"], [("ONLINE",)])])
    fake.on(r"^BACKUP ", lambda sql, _p: _write_file(tmp_path, sql))
    fake.on(r"RESTORE VERIFYONLY", [ResultSet(messages=["The backup set on file 1 is valid."])])
    fake.on(r"RESTORE FILELISTONLY", [FILELIST])

    def msdb(_sql: str, params: tuple[Any, ...]) -> list[ResultSet]:
        kind = (
            "log" if params[1].endswith(".trn") else ("diff" if "_diff_" in params[1] else "full")
        )
        return [ResultSet(MSDB_COLUMNS, [(*RECORDED[kind], FORK, "guid", 1, 2)])]

    fake.on(r"FROM msdb\.dbo\.backupset", msdb)
    fake.default_paths()
    return fake


def _write_file(folder: Path, sql: str) -> list[ResultSet]:
    name = sql.split("N'", 1)[1].split("'", 1)[0].rsplit("/", 1)[-1]
    (folder / name).write_bytes(b"TAPE" + name.encode() * 100)
    return [
        ResultSet(messages=["Processed 352 pages for database 'GanttDB', file 'GanttDB'."]),
        ResultSet(messages=["BACKUP DATABASE successfully processed 354 pages."]),
    ]


def _engine(tmp_path: Path, server: FakeOdbc) -> SqlServerEngine:
    return SqlServerEngine(_settings(tmp_path), "GanttDB", SqlSession(server.connect))


def test_full_diff_log_cycle_runs_the_expected_tsql(tmp_path: Path, server: FakeOdbc) -> None:
    engine = _engine(tmp_path, server)
    engine.check_source()
    dumps = {kind: engine.dump(kind, None, tmp_path / "staging") for kind in BackupKind}
    statements = [s for s in server.sql() if s.startswith("BACKUP")]
    full_file = dumps[BackupKind.FULL].position["server_file"]
    assert statements[0] == (
        f"BACKUP DATABASE [GanttDB] TO DISK = N'/var/opt/mssql/backup/{full_file}' "
        "WITH CHECKSUM, INIT, FORMAT, COMPRESSION;"
    )
    assert statements[1].startswith("BACKUP DATABASE [GanttDB] TO DISK = N'/var/opt/mssql/backup/")
    assert statements[1].endswith("WITH DIFFERENTIAL, CHECKSUM, INIT, FORMAT, COMPRESSION;")
    assert statements[2].startswith("BACKUP LOG [GanttDB] TO DISK = N'")
    assert statements[2].endswith(".trn' WITH CHECKSUM, INIT, FORMAT, COMPRESSION;")
    assert all(server.drained), "every result set of every statement must be read"
    full = dumps[BackupKind.FULL]
    assert full.position["last_lsn"] == 38000000030400001  # an integer, exact
    assert full.position["files"][1]["logical"] == "GanttDB_log"
    assert full.restore_point == datetime(2026, 11, 25, 17, 0, 4, tzinfo=UTC)  # KST -> UTC
    assert full.files[0].path.exists() and full.files[0].measure


def test_an_error_in_a_later_result_set_fails_the_backup(tmp_path: Path, server: FakeOdbc) -> None:
    server.on(
        r"^BACKUP ",
        [
            ResultSet(messages=["Processed 352 pages for database 'GanttDB'."]),
            ResultSet(error="BACKUP DATABASE is terminating abnormally. (3013)"),
        ],
    )
    with pytest.raises(EngineError, match="3013"):
        _engine(tmp_path, server).dump(BackupKind.FULL, None, tmp_path / "staging")


def _manifest(kind: BackupKind, recorded: tuple[Any, ...], minute: int) -> Manifest:
    at = datetime(2026, 11, 26, 0, minute, tzinfo=UTC)
    return Manifest(
        id=f"{at:%Y%m%dT%H%M%S}Z-{kind.value}-00000{minute % 10}",
        category=Category.DATABASE,
        kind=kind,
        engine="sqlserver",
        database="GanttDB",
        started_at=at,
        finished_at=at,
        restore_point=at,
        position={
            "first_lsn": int(recorded[0]),
            "last_lsn": int(recorded[1]),
            "files": [{"logical": r[0], "physical": r[1], "type": r[2]} for r in FILELIST.rows],
        },
        objects=(
            StoredObject(
                role="data",
                key=f"k{minute}",
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


def test_point_in_time_restore_under_a_new_name(tmp_path: Path, server: FakeOdbc) -> None:
    engine = _engine(tmp_path, server)
    chain = [
        _manifest(BackupKind.FULL, RECORDED["full"], 1),
        _manifest(BackupKind.DIFF, RECORDED["diff"], 2),
        _manifest(BackupKind.LOG, RECORDED["log"], 3),
    ]
    server.on(r"FROM sys\.databases", [ResultSet(["x"], [])])  # the new name is free
    engine.check_target(Path("GanttDB_restore"), replace=False)
    until = datetime(2026, 11, 26, 0, 2, 30, tzinfo=UTC)
    engine.restore([_source(m) for m in chain], tmp_path / "scratch", until=until)
    engine.install(tmp_path / "scratch", Path("GanttDB_restore"), replace=False, stamp="x")
    ran = [s for s in server.sql() if s.startswith(("RESTORE", "DBCC"))]
    backup_dir = "/var/opt/mssql/backup"
    assert ran == [
        f"RESTORE DATABASE [GanttDB_restore] FROM DISK = N'{backup_dir}/restore_{chain[0].id}.bak' "
        "WITH FILE = 1, NORECOVERY, CHECKSUM, "
        "MOVE N'GanttDB' TO N'/var/opt/mssql/data/GanttDB_restore_GanttDB.mdf', "
        "MOVE N'GanttDB_log' TO N'/var/opt/mssql/data/GanttDB_restore_GanttDB_log.ldf';",
        f"RESTORE DATABASE [GanttDB_restore] FROM DISK = N'{backup_dir}/restore_{chain[1].id}.bak' "
        "WITH FILE = 1, NORECOVERY, CHECKSUM;",
        f"RESTORE LOG [GanttDB_restore] FROM DISK = N'{backup_dir}/restore_{chain[2].id}.trn' "
        "WITH FILE = 1, NORECOVERY, CHECKSUM, STOPAT = N'2026-11-26T09:02:30.000';",
        "RESTORE DATABASE [GanttDB_restore] WITH RECOVERY;",
        "DBCC CHECKDB([GanttDB_restore]) WITH NO_INFOMSGS;",
    ]
    assert engine.last_script == engine.script(chain, "GanttDB_restore", replace=False, until=until)
    assert not list(tmp_path.glob("restore_*"))  # the copied files are cleaned up


def test_checkdb_findings_fail_the_restore(tmp_path: Path, server: FakeOdbc) -> None:
    engine = _engine(tmp_path, server)
    server.on(
        r"^DBCC CHECKDB",
        [ResultSet(messages=["Msg 8928: Object ID 5 ... could not be processed."])],
    )
    chain = [_manifest(BackupKind.FULL, RECORDED["full"], 1)]
    engine.restore([_source(m) for m in chain], tmp_path / "s")
    with pytest.raises(IntegrityError, match="8928"):
        engine.install(tmp_path / "s", Path("GanttDB_check"), replace=False, stamp="x")


def test_restore_over_the_live_database_needs_the_flag_and_takes_a_tail_log(
    tmp_path: Path, server: FakeOdbc
) -> None:
    engine = _engine(tmp_path, server)
    with pytest.raises(RestoreTargetError, match="--replace"):
        engine.check_target(Path("GanttDB"), replace=False)
    chain = [_manifest(BackupKind.FULL, RECORDED["full"], 1)]
    script = engine.script(chain, "GanttDB", replace=True, until=None)
    assert script[0].startswith(
        "BACKUP LOG [GanttDB] TO DISK = N'/var/opt/mssql/backup/GanttDB_tail_"
    )
    assert "WITH NORECOVERY" in script[0]
    assert script[1].endswith("NORECOVERY, CHECKSUM, REPLACE;")
    assert "MOVE" not in script[1]


def test_the_password_is_braced_in_the_connection_string_and_never_in_errors(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    text = connection_string(settings, "p;w}d=1")
    assert "PWD={p;w}}d=1}" in text
    assert "DRIVER={ODBC Driver 18 for SQL Server}" in text and "Encrypt=yes" in text
    fake = FakeOdbc()
    fake.on(r".", [ResultSet(error="Login failed for user 'backup_operator'. (18456)")])
    with pytest.raises(EngineError) as caught:
        SqlSession(fake.connect).run("SELECT 1;")
    assert "18456" in str(caught.value) and "p;w}d=1" not in str(caught.value)
