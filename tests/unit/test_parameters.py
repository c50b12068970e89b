"""The parameter checks the flows run first: what passes, and as what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from backupflow.config import Settings
from backupflow.engines import open_engine
from backupflow.errors import ParameterError
from backupflow.parameters import check_database_target, check_target_time

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_a_naive_time_is_read_in_the_settings_timezone() -> None:
    local = check_target_time(datetime(2026, 11, 26, 9, 30), "Asia/Seoul", NOW)
    assert local == datetime(2026, 11, 26, 0, 30, tzinfo=UTC)
    assert local is not None and local.tzinfo == ZoneInfo("Asia/Seoul")


def test_an_aware_time_is_kept_and_none_means_latest() -> None:
    moment = NOW - timedelta(hours=1)
    assert check_target_time(moment, "Asia/Seoul", NOW) == moment
    assert check_target_time(None, "Asia/Seoul", NOW) is None


def test_a_repeated_local_hour_is_accepted_as_its_first_occurrence() -> None:
    local = check_target_time(datetime(2025, 11, 2, 1, 30), "America/New_York", NOW)
    assert local is not None and local.astimezone(UTC).hour == 5  # 01:30 EDT


def test_the_earliest_accepted_moment_is_2000() -> None:
    assert check_target_time(datetime(2000, 1, 1, tzinfo=UTC), "UTC", NOW) is not None
    with pytest.raises(ParameterError, match="before 2000"):
        check_target_time(datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), "UTC", NOW)


def test_a_sqlserver_target_is_a_database_name(settings: Settings) -> None:
    database = settings.database.model_copy(update={"engine": "sqlserver"})
    engine = open_engine(settings.model_copy(update={"database": database}))
    assert check_database_target("gantt_drill-2.copy", engine, settings) == Path(
        "gantt_drill-2.copy"
    )
    with pytest.raises(ParameterError, match="from the scratch parameter is not allowed"):
        check_database_target("gantt/../master", engine, settings, "scratch")


def test_a_sqlite_target_is_a_path_under_the_roots(settings: Settings) -> None:
    engine = open_engine(settings)
    inside = settings.database.sqlite_path.parent / "copy.db"
    assert check_database_target(str(inside), engine, settings) == inside
    with pytest.raises(ParameterError, match="into must be an absolute path"):
        check_database_target("gantt_copy", engine, settings)


def test_a_postgres_target_is_a_data_folder_beside_the_live_one(
    settings: Settings, tmp_path: Path
) -> None:
    live = tmp_path / "postgresql" / "15" / "main"
    database = settings.database.model_copy(update={"engine": "postgres", "pg_data_dir": live})
    pg_settings = settings.model_copy(update={"database": database})
    engine = open_engine(pg_settings)
    beside = live.parent / "restored"
    assert check_database_target(str(beside), engine, pg_settings) == beside
    with pytest.raises(ParameterError, match="not under"):
        check_database_target("/etc/postgresql-copy", engine, pg_settings)
