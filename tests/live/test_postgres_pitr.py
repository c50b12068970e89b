"""Point-in-time restore of a real PostgreSQL cluster, to many seconds.

Rows are written one at a time with their commit times read back from the server; a base
backup is taken, and writing goes on while several log backups run.  Then the cluster is
restored to twelve target times between commits, one of them between the last log of a
base and the next base (each copy must hold exactly the rows committed at or before its
target), to the latest point (every row of the last archived segment, also
the ones no log backup lists yet), and with an archived segment deleted (the gap error names
it and the latest point that still restores, and a target before it still restores).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backupflow.errors import ChainGapError, TargetNotReachedError
from backupflow.models import BackupKind, Manifest
from backupflow.storage import open_tiers
from tests.live.postgres_support import LivePg, events_cluster, rows, start_restored
from tests.support.chain import restore, take_backup
from tests.support.s3 import MotoServer


@dataclass
class History:
    """What the module's cluster went through: each row's commit time, and the backups."""

    pg: LivePg
    committed: dict[int, datetime] = field(default_factory=dict)
    full: Manifest | None = None
    second_full: Manifest | None = None
    logs: list[Manifest] = field(default_factory=list)
    #: Ticks committed every few ms during and right after the second base backup: id ->
    #: a time read after its commit returned (so it committed at or before then).
    ticks: dict[int, datetime] = field(default_factory=dict)

    def tick_during(self, backup: Callable[[], Manifest]) -> Manifest:
        """Run ``backup`` while another connection commits a tick every few milliseconds,
        and for a second after it returned."""
        stop = threading.Event()

        def ticking() -> None:
            with self.pg.cluster.connect() as conn:
                conn.autocommit = True
                while not stop.is_set():
                    row = conn.execute("INSERT INTO ticks DEFAULT VALUES RETURNING id").fetchone()
                    (at,) = conn.execute("SELECT clock_timestamp()").fetchone() or (None,)
                    assert row is not None and isinstance(at, datetime)
                    self.ticks[int(row[0])] = at
                    time.sleep(0.003)

        self.pg.cluster.execute("CREATE TABLE IF NOT EXISTS ticks (id serial PRIMARY KEY)")
        worker = threading.Thread(target=ticking)
        worker.start()
        try:
            taken = backup()
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and worker.is_alive():
                worker.join(0.05)
        finally:
            stop.set()
            worker.join(30)
        return taken

    def write(self, first: int, count: int) -> None:
        """Insert rows one transaction each; remember when each one committed."""
        with self.pg.cluster.connect() as conn:
            for i in range(first, first + count):
                conn.execute("INSERT INTO events (id, note) VALUES (%s, %s)", (i, f"row-{i}"))
                (at,) = conn.execute("SELECT clock_timestamp()").fetchone() or (None,)
                assert isinstance(at, datetime)
                self.committed[i] = at
                time.sleep(0.02)

    def between(self, row: int) -> datetime:
        """A time after row ``row`` committed and before the next row did."""
        after = self.committed[row]
        following = self.committed.get(row + 1)
        if following is None:
            return after + timedelta(milliseconds=5)
        return after + (following - after) / 2


@pytest.fixture(scope="module")
def history(
    _shared_moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[History, Any]]:
    mp = pytest.MonkeyPatch()
    try:
        with events_cluster(_shared_moto_server) as live:
            for key, value in live.env.items():
                mp.setenv(key, value)
            settings = live.settings(tmp_path_factory.mktemp("pitr"))
            story = History(live)
            story.write(1, 5)
            story.full = take_backup(settings, BackupKind.FULL)
            for first in (6, 12, 18, 24):  # four log backups while writing goes on
                story.write(first, 6)
                story.logs.append(take_backup(settings, BackupKind.LOG))
            story.write(30, 4)
            # A new base: the first log after it lists the WAL since the previous log, so
            # every second between that log and the new base stays restorable.
            story.second_full = story.tick_during(lambda: take_backup(settings, BackupKind.FULL))
            story.write(34, 4)
            story.logs.append(take_backup(settings, BackupKind.LOG))
            story.write(38, 3)  # archived below, listed by no log backup yet
            with live.cluster.connect() as conn:
                (segment,) = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone() or (
                    None,
                )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                archived = live.cluster.execute("SELECT last_archived_wal FROM pg_stat_archiver")
                if archived is not None and archived >= segment:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"{segment} was not archived: {live.cluster.log_tail()}")
            yield story, settings
    finally:
        mp.undo()


@pytest.fixture
def pitr(history: tuple[History, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[History, Any]:
    """The module's history, with its settings in this test's environment too (the restore
    copy's wal-fetch reads them there; every test starts with no BACKUPFLOW_* variable)."""
    for key, value in history[0].pg.env.items():
        monkeypatch.setenv(key, value)
    return history


def restored_ids(data: Path) -> list[int]:
    with start_restored(data) as copy, copy.connect() as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        return [int(r[0]) for r in rows(conn)]


# Rows after which the targets fall: before, at and after each log backup's switch.
TARGET_ROWS = (6, 7, 8, 11, 12, 15, 17, 20, 23, 26, 29, 31)


def test_ten_targets_each_hold_exactly_the_rows_committed_by_then(
    pitr: tuple[History, Any],
) -> None:
    story, settings = pitr
    assert story.full is not None
    restored: dict[int, list[int]] = {}
    for row in TARGET_ROWS:
        target = story.between(row)
        data = story.pg.new_folder(f"at-{row}") / "data"
        plan, outcome = restore(settings, target, data)
        assert plan.manifests[0].id == story.full.id
        assert any("pg_amcheck" in check for check in outcome.checks), outcome.checks
        restored[row] = restored_ids(data)
        shutil.rmtree(data.parent)
    assert restored == {row: list(range(1, row + 1)) for row in TARGET_ROWS}
    assert story.second_full is not None and story.logs[3].restore_point < story.between(31)
    assert story.between(31) < story.second_full.restore_point  # from the first base


def test_the_first_log_after_a_new_base_lists_the_wal_since_the_previous_log(
    pitr: tuple[History, Any],
) -> None:
    story, _settings = pitr
    before, after = story.logs[3], story.logs[4]
    assert after.parent_id == story.second_full.id if story.second_full else False
    last = int(before.position["last"][8:], 16)
    assert int(after.position["first"][8:], 16) == last + 1


def test_latest_holds_every_row_of_the_last_archived_segment(
    pitr: tuple[History, Any],
) -> None:
    story, settings = pitr
    data = story.pg.new_folder("latest") / "data"
    restore(settings, None, data)
    assert restored_ids(data) == list(range(1, 41))  # rows 38-40 are in no log backup yet
    # Not the live cluster's place: started by hand, it must not archive into the live
    # cluster's repository.
    assert "archive_mode = 'off'" in (data / "postgresql.auto.conf").read_text()


def test_a_deleted_segment_is_a_gap_named_with_the_latest_point_that_restores(
    pitr: tuple[History, Any],
) -> None:
    story, settings = pitr
    third = story.logs[2]
    sysid = third.position["system_identifier"]
    missing = third.position["first"]
    (obj,) = [o for o in third.objects if o.role == f"wal:{sysid}/{missing}"]
    storage = open_tiers(settings)[0].storage
    with storage.open(obj.key) as handle:
        saved = handle.read()
    storage.delete(obj.key)
    try:
        data = story.pg.new_folder("gap") / "data"
        with pytest.raises(ChainGapError) as caught:
            restore(settings, story.between(26), data)
        message = str(caught.value)
        assert missing in message and "latest" in message
        assert not data.exists()
        # A target before the hole still restores exactly.
        before = story.pg.new_folder("before-gap") / "data"
        restore(settings, story.between(11), before)
        assert restored_ids(before) == list(range(1, 12))
    finally:
        storage.put(obj.key, [saved])


def test_a_target_after_the_last_log_inside_the_archive_is_exact(
    pitr: tuple[History, Any],
) -> None:
    """Rows 38-40 were archived after the last log backup: a time between rows 39 and 40
    restores exactly rows 1-39 (not the last log's point, an hour short at worst)."""
    story, settings = pitr
    target = story.between(39)
    assert target > story.logs[-1].restore_point
    data = story.pg.new_folder("after-last-log") / "data"
    plan, _outcome = restore(settings, target, data)
    assert plan.restore_point == target
    assert restored_ids(data) == list(range(1, 40))


def test_a_target_beyond_the_archive_fails_naming_the_point_it_reaches(
    pitr: tuple[History, Any],
) -> None:
    story, settings = pitr
    target = datetime.now(UTC) - timedelta(milliseconds=100)  # nothing committed since row 40
    assert target > story.committed[40]
    data = story.pg.new_folder("beyond") / "data"
    with pytest.raises(TargetNotReachedError) as caught:
        restore(settings, target, data)
    reached = caught.value.reached
    assert reached is not None
    # The last commit in the archive is row 40's (its time read just after it committed).
    assert story.committed[39] < reached <= story.committed[40]
    assert reached.isoformat() in str(caught.value) and "accept_earlier" in str(caught.value)
    assert not data.exists()

    plan, _outcome = restore(settings, target, data, accept_earlier=True)
    assert plan.restore_point == reached
    assert restored_ids(data) == list(range(1, 41))


def test_a_base_alone_holds_every_commit_up_to_its_recorded_point(
    pitr: tuple[History, Any],
) -> None:
    """Ticks were committed every few milliseconds during the second base backup and for a
    second after it: a restore to the base's recorded point holds every tick that had
    committed by then."""
    story, settings = pitr
    base = story.second_full
    assert base is not None and story.ticks
    point = base.restore_point
    due = sorted(i for i, at in story.ticks.items() if at <= point)
    later = [i for i, at in story.ticks.items() if at > point]
    assert due and later  # ticks on both sides of the point
    data = story.pg.new_folder("base-alone") / "data"
    plan, _outcome = restore(settings, point, data)
    assert [m.id for m in plan.manifests] == [base.id]
    with start_restored(data) as copy, copy.connect() as conn:
        held = {int(r[0]) for r in conn.execute("SELECT id FROM ticks").fetchall()}
    assert set(due) <= held, f"missing ticks {sorted(set(due) - held)[:10]}"
