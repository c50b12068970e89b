"""The SQL Server engine end to end against the documented server behaviour of
:mod:`tests.support.fake_odbc` (no SQL Server here): backups, the scratch restore and its
check, the swap, and what a user sees when any of them fails."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backupflow.config import DatabaseSettings, Settings
from backupflow.engines.base import BackupSource, Installed
from backupflow.engines.mssql import SqlServerEngine
from backupflow.engines.mssql.connection import SqlSession, connection_string
from backupflow.errors import ChainGapError, EngineError, IntegrityError, RestoreTargetError
from backupflow.models import BackupKind, Category, Manifest, StoredObject
from tests.support.fake_odbc import (
    Database,
    FakeOdbc,
    ResultSet,
    cannot_open_device,
    checkdb_corruption,
    log_too_early,
    log_too_recent,
)

BACKUP_DIR = "/var/opt/mssql/backup"
SCRATCH = r"GanttDB(?:_restore)?_restore_[0-9a-f]{8}"
STAMP = "20261126T093000Z"
TAIL = f"BACKUP LOG [GanttDB] TO DISK = N'{BACKUP_DIR}/GanttDB_tail_{STAMP}.trn' " + (
    "WITH COPY_ONLY, CHECKSUM, INIT, FORMAT;"
)


def _settings(tmp_path: Path, **extra: Any) -> DatabaseSettings:
    return DatabaseSettings(
        engine="sqlserver",
        name="GanttDB",
        server="sql01.internal",
        user="backup_operator",
        password="p;w}d=1",  # type: ignore[arg-type]
        server_backup_dir=BACKUP_DIR,
        worker_backup_dir=tmp_path,
        server_timezone="Asia/Seoul",
        **extra,
    )


@pytest.fixture
def server(tmp_path: Path) -> FakeOdbc:
    return FakeOdbc().serve(tmp_path)


def _engine(tmp_path: Path, server: FakeOdbc, **extra: Any) -> SqlServerEngine:
    return SqlServerEngine(_settings(tmp_path, **extra), "GanttDB", SqlSession(server.connect))


def _dumps(engine: SqlServerEngine, staging: Path) -> dict[BackupKind, Any]:
    return {kind: engine.dump(kind, None, staging) for kind in BackupKind}


def test_full_diff_log_cycle_runs_the_expected_tsql(tmp_path: Path, server: FakeOdbc) -> None:
    engine = _engine(tmp_path, server)
    engine.check_source()
    dumps = _dumps(engine, tmp_path / "staging")
    statements = server.ran(r"^BACKUP")
    full_file = dumps[BackupKind.FULL].position["server_file"]
    assert statements[0] == (
        f"BACKUP DATABASE [GanttDB] TO DISK = N'{BACKUP_DIR}/{full_file}' "
        "WITH CHECKSUM, INIT, FORMAT, COMPRESSION;"
    )
    assert statements[1].endswith("WITH DIFFERENTIAL, CHECKSUM, INIT, FORMAT, COMPRESSION;")
    assert statements[2].startswith("BACKUP LOG [GanttDB] TO DISK = N'")
    assert all(server.drained), "every result set of every statement must be read"
    full, diff, log = (dumps[k] for k in BackupKind)
    assert diff.position["database_backup_lsn"] == full.position["checkpoint_lsn"]
    assert log.position["last_lsn"] > diff.position["last_lsn"]  # integers, exact
    assert full.position["files"][1]["logical"] == "GanttDB_log"
    assert full.restore_point == datetime(2026, 11, 25, 17, 0, 4, tzinfo=UTC)  # KST -> UTC
    assert full.files[0].path.exists() and full.files[0].measure


def test_the_type_msdb_recorded_decides_not_the_file_name(tmp_path: Path, server: FakeOdbc) -> None:
    """Another job wrote a log backup to the same file right after ours: the newest msdb
    row for that file is a log, and the engine refuses to catalogue it as a full."""

    def with_another_job(sql: str, params: tuple[Any, ...]) -> list[ResultSet]:
        ours = server.backup(sql, params)
        server.backup(re.sub(r"^BACKUP DATABASE", "BACKUP LOG", sql), params)
        return ours

    server.on(r"^BACKUP DATABASE", with_another_job)
    with pytest.raises(EngineError, match="recorded a L backup where a full backup was taken"):
        _engine(tmp_path, server).dump(BackupKind.FULL, None, tmp_path / "staging")


def test_an_error_in_a_later_result_set_fails_the_backup(tmp_path: Path, server: FakeOdbc) -> None:
    server.on(
        r"^BACKUP ",
        [
            ResultSet(messages=["Processed 352 pages for database 'GanttDB'."]),
            ResultSet(error=[(3013, "BACKUP DATABASE is terminating abnormally.")]),
        ],
    )
    with pytest.raises(EngineError, match=r"terminating abnormally \(3013\)"):
        _engine(tmp_path, server).dump(BackupKind.FULL, None, tmp_path / "staging")


def _manifest(kind: BackupKind, position: dict[str, Any], minute: int, name: str) -> Manifest:
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
        position={**position, "server_file": name},
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


def _chain(tmp_path: Path, server: FakeOdbc) -> list[BackupSource]:
    """A full, a differential and a log taken through the engine, as sources a restore reads
    (the bytes the server wrote)."""
    dumps = _dumps(_engine(tmp_path, server), tmp_path / "staging")
    sources = []
    for minute, kind in enumerate(BackupKind, start=1):
        dump = dumps[kind]
        data = dump.files[0].path.read_bytes()
        dump.files[0].path.unlink()
        manifest = _manifest(kind, dump.position, minute, dump.position["server_file"])
        sources.append(BackupSource(manifest, lambda _role, d=data: io.BytesIO(d)))
    server.statements.clear()
    return sources


def _restore(
    engine: SqlServerEngine, chain: list[BackupSource], target: str, *, replace: bool
) -> tuple[tuple[str, ...], Installed]:
    """What execute_restore does with an engine: what it saves first (the tail), then
    scratch, restore, install, discard."""
    engine.check_target(Path(target), replace)
    scratch = engine.scratch_path(Path(target))
    saved = engine.before_restore(Path(target), replace=replace, stamp=STAMP)
    try:
        restored = engine.restore(
            chain, scratch, until=datetime(2026, 11, 26, 0, 2, 30, tzinfo=UTC)
        )
        return saved, engine.install(restored, Path(target), replace=replace, stamp=STAMP)
    finally:
        engine.discard(scratch)


def _live_untouched(server: FakeOdbc) -> None:
    """No statement but the COPY_ONLY tail named the live database, and it is as it was."""
    assert [s for s in server.ran(r"\[GanttDB\]") if s != TAIL] == []  # no ALTER/RESTORE/DROP
    live = server.state("GanttDB")
    assert live is not None
    assert (live.name, live.state, live.access) == ("GanttDB", "ONLINE", "MULTI_USER")


def _changes(server: FakeOdbc) -> list[str]:
    return [s for s in server.sql() if not s.startswith("SELECT")]


def test_point_in_time_restore_under_a_new_name(tmp_path: Path, server: FakeOdbc) -> None:
    engine = _engine(tmp_path, server)
    chain = _chain(tmp_path, server)
    saved, installed = _restore(engine, chain, "GanttDB_restore", replace=False)
    assert saved == ()  # a new name: nothing to save
    ran = _changes(server)
    scratch = re.search(SCRATCH, ran[0])
    assert scratch is not None
    s = scratch.group(0)
    assert ran == [
        f"RESTORE DATABASE [{s}] FROM DISK = N'{BACKUP_DIR}/{s}_000.bak' WITH FILE = 1, "
        f"NORECOVERY, CHECKSUM, MOVE N'GanttDB' TO N'/var/opt/mssql/data/{s}_GanttDB.mdf', "
        f"MOVE N'GanttDB_log' TO N'/var/opt/mssql/data/{s}_GanttDB_log.ldf';",
        f"RESTORE DATABASE [{s}] FROM DISK = N'{BACKUP_DIR}/{s}_001.bak' "
        "WITH FILE = 1, NORECOVERY, CHECKSUM;",
        f"RESTORE LOG [{s}] FROM DISK = N'{BACKUP_DIR}/{s}_002.trn' "
        "WITH FILE = 1, NORECOVERY, CHECKSUM, STOPAT = N'2026-11-26T09:02:30.000';",
        f"RESTORE DATABASE [{s}] WITH RECOVERY;",
        f"DBCC CHECKDB ([{s}]) WITH NO_INFOMSGS, ALL_ERRORMSGS;",
        f"ALTER DATABASE [{s}] MODIFY NAME = [GanttDB_restore];",
    ]
    assert installed.target == Path("GanttDB_restore") and installed.kept_aside == ()
    assert {db.name: db.state for db in server.catalog.values()} == {
        "GanttDB": "ONLINE",
        "GanttDB_restore": "ONLINE",
    }
    assert not list(tmp_path.glob("GanttDB_restore_*"))  # the copies are cleaned up


def test_replace_takes_the_tail_first_and_checks_before_it_alters_the_live_database(
    tmp_path: Path, server: FakeOdbc
) -> None:
    engine = _engine(tmp_path, server)
    chain = _chain(tmp_path, server)
    saved, installed = _restore(engine, chain, "GanttDB", replace=True)
    ran = _changes(server)
    s = re.search(SCRATCH, ran[1]).group(0)  # type: ignore[union-attr]
    first_restore = next(i for i, x in enumerate(ran) if x.startswith(f"RESTORE DATABASE [{s}]"))
    checkdb = ran.index(f"DBCC CHECKDB ([{s}]) WITH NO_INFOMSGS, ALL_ERRORMSGS;")
    first_alter = next(i for i, x in enumerate(ran) if x.startswith("ALTER DATABASE [GanttDB]"))
    assert ran.index(TAIL) == 0 < first_restore < checkdb < first_alter  # the order
    aside = f"GanttDB_before_restore_{STAMP}"
    assert ran[checkdb + 1 :] == [
        "ALTER DATABASE [GanttDB] SET SINGLE_USER WITH ROLLBACK IMMEDIATE;",
        f"ALTER DATABASE [GanttDB] MODIFY NAME = [{aside}];",
        f"ALTER DATABASE [{aside}] SET OFFLINE WITH ROLLBACK IMMEDIATE;",
        f"ALTER DATABASE [{s}] MODIFY NAME = [GanttDB];",
    ]
    assert server.ran(r"^BACKUP LOG") == [TAIL]  # one tail, none at the swap
    assert saved == (
        f"tail-log backup of GanttDB (COPY_ONLY) written to {BACKUP_DIR}/GanttDB_tail_{STAMP}.trn "
        "on the server",
    )
    assert installed.kept_aside == (Path(aside),)
    assert {db.name: db.state for db in server.catalog.values()} == {
        "GanttDB": "ONLINE",
        aside: "OFFLINE",
    }
    assert (tmp_path / f"GanttDB_tail_{STAMP}.trn").exists()
    tail = server.backupset[-1]["row"]
    assert tail[5] == "L" and tail[6] is True  # a copy-only log: our log chain goes on


def test_dry_run_prints_the_tail_first_then_the_check_then_the_swap(
    tmp_path: Path, server: FakeOdbc
) -> None:
    engine = _engine(tmp_path, server)
    chain = [source.manifest for source in _chain(tmp_path, server)]
    script = engine.restore_script(chain, Path("GanttDB"), replace=True, until=None)
    s = re.search(SCRATCH, script[1]).group(0)  # type: ignore[union-attr]
    heads = [re.sub(r"\d{8}T\d{6}Z", "<stamp>", re.sub(r"\].*", "]", x)) for x in script]
    assert heads == [
        "BACKUP LOG [GanttDB]",
        f"RESTORE DATABASE [{s}]",
        f"RESTORE DATABASE [{s}]",
        f"RESTORE LOG [{s}]",
        f"RESTORE DATABASE [{s}]",
        f"DBCC CHECKDB ([{s}]",
        "ALTER DATABASE [GanttDB]",  # single-user
        "ALTER DATABASE [GanttDB]",  # renamed aside
        "ALTER DATABASE [GanttDB_before_restore_<stamp>]",  # offline
        f"ALTER DATABASE [{s}]",  # renamed to GanttDB
    ]
    assert re.fullmatch(
        rf"BACKUP LOG \[GanttDB\] TO DISK = N'{BACKUP_DIR}/GanttDB_tail_\d{{8}}T\d{{6}}Z\.trn' "
        "WITH COPY_ONLY, CHECKSUM, INIT, FORMAT;",
        script[0],
    )
    assert _changes(server) == []  # a dry run only reads


@pytest.mark.parametrize("numbers", [(8928, 8939), (8976,)])
def test_checkdb_errors_leave_the_live_database_untouched(
    tmp_path: Path, server: FakeOdbc, numbers: tuple[int, ...]
) -> None:
    engine = _engine(tmp_path, server)
    chain = _chain(tmp_path, server)
    server.on(r"^DBCC CHECKDB", lambda sql, _p: checkdb_corruption("scratch", numbers))
    with pytest.raises(IntegrityError) as caught:
        _restore(engine, chain, "GanttDB", replace=True)
    message = str(caught.value)
    assert f"({numbers[0]})" in message and "the live database was not touched" in message
    assert server.ran(r"^BACKUP LOG") == [TAIL]  # taken first, before the restore was built
    _live_untouched(server)
    assert server.ran(r"^DROP DATABASE \[GanttDB_restore_")
    assert {db.name: db.state for db in server.catalog.values()} == {"GanttDB": "ONLINE"}
    assert (tmp_path / f"GanttDB_tail_{STAMP}.trn").exists()  # kept as a safety copy


@pytest.mark.parametrize(
    ("responses", "number"),
    [(log_too_recent(38000000036800001, 38000000035200001), 4305),
     (log_too_early(38000000030400001, 38000000035200001), 4326)],
)  # fmt: skip
def test_chain_errors_are_one_sentence_and_leave_live_untouched(
    tmp_path: Path, server: FakeOdbc, responses: list[ResultSet], number: int
) -> None:
    engine = _engine(tmp_path, server)
    chain = _chain(tmp_path, server)
    server.on(r"^RESTORE LOG", responses)
    with pytest.raises(ChainGapError) as caught:
        _restore(engine, chain, "GanttDB", replace=True)
    message = str(caught.value)
    assert f"log backup {chain[2].manifest.id}" in message and f"({number})" in message
    assert message.endswith("(the live database was not touched).")
    assert message.count(". ") == 0  # one sentence
    assert {db.name for db in server.catalog.values()} == {"GanttDB"}
    _live_untouched(server)


def test_a_backup_file_the_server_cannot_open_names_both_folders(
    tmp_path: Path, server: FakeOdbc
) -> None:
    engine = _engine(tmp_path, server)
    chain = _chain(tmp_path, server)
    server.on(r"^RESTORE DATABASE .* FROM DISK", lambda sql, _p: cannot_open_device("x.bak"))
    with pytest.raises(EngineError, match="server_backup_dir and worker_backup_dir"):
        _restore(engine, chain, "GanttDB_copy", replace=False)
    assert {db.name for db in server.catalog.values()} == {"GanttDB"}


def test_a_failed_swap_puts_the_live_database_back(tmp_path: Path, server: FakeOdbc) -> None:
    engine = _engine(tmp_path, server)
    chain = _chain(tmp_path, server)
    server.on(
        r"^ALTER DATABASE \[GanttDB_restore_\w+\] MODIFY NAME",
        [ResultSet(error=[(5030, "The database could not be exclusively locked.")])],
    )
    with pytest.raises(EngineError, match="everything before that step was undone"):
        _restore(engine, chain, "GanttDB", replace=True)
    live = server.state("GanttDB")
    assert live is not None and (live.state, live.access) == ("ONLINE", "MULTI_USER")
    assert {db.name for db in server.catalog.values()} == {"GanttDB"}  # scratch dropped


def test_a_simple_recovery_database_is_replaced_without_a_tail(
    tmp_path: Path, server: FakeOdbc
) -> None:
    engine = _engine(tmp_path, server)
    chain = _chain(tmp_path, server)
    server.state("GanttDB").recovery = "SIMPLE"  # type: ignore[union-attr]
    saved, installed = _restore(engine, chain, "GanttDB", replace=True)
    assert saved == () and not server.ran(r"^BACKUP LOG")
    assert not list(tmp_path.glob("GanttDB_tail_*"))
    assert installed.kept_aside == (Path(f"GanttDB_before_restore_{STAMP}"),)


def test_the_tail_can_be_turned_off(tmp_path: Path, server: FakeOdbc) -> None:
    engine = _engine(tmp_path, server, tail_log_before_replace=False)
    chain = _chain(tmp_path, server)
    saved, installed = _restore(engine, chain, "GanttDB", replace=True)
    assert saved == () and not server.ran(r"^BACKUP LOG")
    assert installed.kept_aside == (Path(f"GanttDB_before_restore_{STAMP}"),)


def test_a_failed_tail_stops_the_restore_before_anything_is_built(
    tmp_path: Path, server: FakeOdbc
) -> None:
    engine = _engine(tmp_path, server)
    chain = _chain(tmp_path, server)
    server.on(r"^BACKUP LOG", lambda sql, _p: cannot_open_device("t.trn", "BACKUP LOG"))
    with pytest.raises(EngineError) as caught:
        _restore(engine, chain, "GanttDB", replace=True)
    message = str(caught.value)
    assert message.startswith("could not take the tail-log backup of GanttDB (")
    assert "the live database was not touched" in message
    assert "(3201)" in message  # why, as the server said it
    assert "BACKUPFLOW_DATABASE__TAIL_LOG_BEFORE_REPLACE=false" in message
    assert not server.ran(r"^(RESTORE|DBCC|ALTER)")  # nothing was built
    _live_untouched(server)
    assert {db.name for db in server.catalog.values()} == {"GanttDB"}


@pytest.mark.parametrize("state", ["OFFLINE", "RESTORING", "SUSPECT"])
def test_a_target_not_online_is_refused_before_the_tail(
    tmp_path: Path, server: FakeOdbc, state: str
) -> None:
    engine = _engine(tmp_path, server)
    server.state("GanttDB").state = state  # type: ignore[union-attr]
    with pytest.raises(RestoreTargetError, match=f"is {state}, not ONLINE"):
        engine.before_restore(Path("GanttDB"), replace=True, stamp=STAMP)
    assert _changes(server) == []


def test_a_taken_aside_name_is_refused_before_the_tail(tmp_path: Path, server: FakeOdbc) -> None:
    engine = _engine(tmp_path, server)
    server.catalog[f"ganttdb_before_restore_{STAMP}".casefold()] = Database(
        f"GanttDB_before_restore_{STAMP}", state="OFFLINE"
    )
    with pytest.raises(RestoreTargetError, match="already exists"):
        engine.before_restore(Path("GanttDB"), replace=True, stamp=STAMP)
    assert _changes(server) == []


def test_restore_over_an_existing_database_needs_the_flag(tmp_path: Path, server: FakeOdbc) -> None:
    with pytest.raises(RestoreTargetError, match="replace=true"):
        _engine(tmp_path, server).check_target(Path("GanttDB"), replace=False)


def test_the_scratch_is_never_the_live_database(tmp_path: Path, server: FakeOdbc) -> None:
    engine = _engine(tmp_path, server)
    names = {engine.scratch_path(Path("GanttDB")) for _ in range(20)}
    assert len(names) == 20 and all(re.fullmatch(SCRATCH, str(n)) for n in names)
    with pytest.raises(EngineError, match="not a scratch name"):
        engine.discard(Path("GanttDB"))
    long = engine.scratch_path(Path("G" * 128))
    assert len(str(long)) <= 128


def test_the_password_is_braced_in_the_connection_string_and_never_in_errors(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    text = connection_string(settings, "p;w}d=1")
    assert "PWD={p;w}}d=1}" in text
    assert "DRIVER={ODBC Driver 18 for SQL Server}" in text and "Encrypt=yes" in text
    fake = FakeOdbc()
    fake.on(r".", [ResultSet(error=[(18456, "Login failed for user 'backup_operator'.")])])
    with pytest.raises(EngineError) as caught:
        SqlSession(fake.connect).run("SELECT 1;")
    assert "18456" in str(caught.value) and "p;w}d=1" not in str(caught.value)


def test_execute_restore_replaces_through_the_real_restore_path(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backups through the pipeline into the tiers, then ``execute_restore`` with --replace:
    what the restore-database flow runs, with the fake connection underneath."""
    from tests.support.chain import restore, take_backup

    worker = tmp_path / "worker"
    worker.mkdir()
    server = FakeOdbc().serve(worker)
    monkeypatch.setattr(
        "backupflow.engines.mssql.connection.odbc_connect", lambda *_a: server.connect()
    )
    database = settings.database.model_copy(
        update={"engine": "sqlserver", "name": "GanttDB", "worker_backup_dir": worker}
    )
    settings = settings.model_copy(update={"database": database})
    full = take_backup(settings, BackupKind.FULL)
    log = take_backup(settings, BackupKind.LOG)
    plan, outcome = restore(settings, None, Path("GanttDB"), replace=True)
    assert [m.id for m in plan.manifests] == [full.id, log.id]
    assert outcome.target == Path("GanttDB")
    (tail,) = server.ran(r"^BACKUP LOG \[GanttDB\] .* COPY_ONLY")
    (tail_path,) = re.findall(r"N'([^']*GanttDB_tail_\d{8}T\d{6}Z\.trn)'", tail)
    assert outcome.saved == (
        f"tail-log backup of GanttDB (COPY_ONLY) written to {tail_path} on the server",
    )
    assert (worker / Path(tail_path).name).exists()
    (aside,) = outcome.kept_aside
    assert str(aside).startswith("GanttDB_before_restore_")
    assert {db.name: db.state for db in server.catalog.values()} == {
        "GanttDB": "ONLINE",
        str(aside): "OFFLINE",
    }
    assert not [p for p in worker.iterdir() if "_restore_" in p.name]  # copies removed
