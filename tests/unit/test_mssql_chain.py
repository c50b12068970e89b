"""SQL Server restore chains chosen by LSN over realistic histories (the cases that broke
other tools)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from backupflow.engines.mssql.chain import select_chain
from backupflow.errors import CatalogError, ChainGapError, NoBackupError
from backupflow.models import BackupKind, Category, Manifest

T0 = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
FORK = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
_serial = itertools.count()


def backup(
    kind: str,
    minute: int,
    first: int,
    last: int,
    *,
    checkpoint: int | None = None,
    base: int = 0,
    copy_only: bool = False,
    fork: str = FORK,
) -> Manifest:
    at = T0 + timedelta(minutes=minute)
    backup_kind = {"D": BackupKind.FULL, "I": BackupKind.DIFF, "L": BackupKind.LOG}[kind]
    return Manifest(
        id=f"{at:%Y%m%dT%H%M%S}Z-{backup_kind.value}-{next(_serial):06x}",
        category=Category.DATABASE,
        kind=backup_kind,
        engine="sqlserver",
        database="GanttDB",
        started_at=at,
        finished_at=at,
        restore_point=at,
        position={
            "type": kind,
            "first_lsn": first * 10**9,
            "last_lsn": last * 10**9,
            "checkpoint_lsn": (checkpoint if checkpoint is not None else first) * 10**9,
            "database_backup_lsn": base * 10**9,
            "is_copy_only": copy_only,
            "recovery_fork": fork,
        },
        objects=(),
    )


def history() -> list[Manifest]:
    """Full at 0 (first_lsn 100, checkpoint 105), logs every 60 min, a diff at 180."""
    return [
        backup("D", 0, 100, 120, checkpoint=105),
        backup("L", 60, 90, 200),
        backup("L", 120, 200, 300),
        backup("I", 180, 310, 350, checkpoint=340, base=105),
        backup("L", 181, 300, 360),
        backup("L", 240, 360, 360),  # empty: nothing happened
        backup("L", 300, 360, 480),
    ]


def ids(chain: list[Manifest], every: list[Manifest]) -> list[int]:
    return [every.index(m) for m in chain]


@pytest.mark.parametrize(
    ("minute", "expected", "reached_minute"),
    [
        (0, [0], 0),  # exactly the full's finish: the full alone
        (30, [0, 1], 30),  # the first log replays to the target (STOPAT)
        (90, [0, 1, 2], 90),  # between two logs: up to the first log ending after it
        (179, [0, 1, 2, 4], 179),  # just before the diff finishes
        (200, [0, 3, 4, 6], 200),  # the diff is the anchor; the empty log is skipped
        (None, [0, 3, 4, 6], 300),  # latest
        (400, [0, 3, 4, 6], 300),  # after the last log: it reaches the last log
    ],
)
def test_point_in_time_chains(minute: int | None, expected: list[int], reached_minute: int) -> None:
    every = history()
    target = T0 + timedelta(minutes=minute) if minute is not None else None
    chain, reached = select_chain(every, "GanttDB", target)
    assert ids(chain, every) == expected
    assert reached == T0 + timedelta(minutes=reached_minute)


def test_diff_matches_the_full_by_checkpoint_not_first_lsn() -> None:
    every = [
        backup("D", 0, 100, 120, checkpoint=105),
        backup("I", 30, 130, 150, base=100),  # wrongly matched on first_lsn: must be ignored
        backup("I", 40, 130, 160, base=105),
    ]
    chain, _ = select_chain(every, "GanttDB", None)
    assert ids(chain, every) == [0, 2]


def test_a_copy_only_full_can_be_the_full_but_is_no_differential_base() -> None:
    every = [
        backup("D", 0, 100, 120, checkpoint=105),
        backup("L", 60, 120, 200),
        backup("D", 70, 210, 230, checkpoint=215, copy_only=True),
        backup("I", 90, 240, 260, base=105),  # based on the conventional full
    ]
    chain, _ = select_chain(every, "GanttDB", T0 + timedelta(minutes=80))
    assert ids(chain, every) == [2]  # the copy-only full has the highest last_lsn
    chain, _ = select_chain(every, "GanttDB", None)
    assert ids(chain, every) == [2]  # the diff does not build on a copy-only full


def test_a_missing_log_is_a_gap_naming_both_sides() -> None:
    every = history()
    del every[2]  # the 120-minute log is gone
    with pytest.raises(ChainGapError) as caught:
        select_chain(every, "GanttDB", T0 + timedelta(minutes=150))
    message = str(caught.value)
    assert (every[1].id in message and every[3].id in message) or every[1].id in message
    assert "gap" in message


def test_logs_of_another_recovery_fork_are_not_used() -> None:
    every = [
        backup("D", 0, 100, 120, checkpoint=105),
        backup("L", 60, 120, 200),
        backup("L", 120, 200, 300, fork="11111111-2222-3333-4444-555555555555"),
    ]
    chain, reached = select_chain(every, "GanttDB", None)
    assert ids(chain, every) == [0, 1]
    assert reached == T0 + timedelta(minutes=60)


def test_no_full_before_the_target() -> None:
    with pytest.raises(NoBackupError, match="first one finished"):
        select_chain(history(), "GanttDB", T0 - timedelta(minutes=5))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("first_lsn", "1; DROP DATABASE x"),
        ("first_lsn", None),
        ("last_lsn", -1),
        ("last_lsn", True),
        ("last_lsn", 1.5),
        ("last_lsn", "9" * 26),
        ("last_lsn", 10**25),
        ("checkpoint_lsn", "../../etc/passwd"),
        ("checkpoint_lsn", ["1"]),
    ],
)
def test_class7_a_forged_lsn_is_a_catalog_error_that_does_not_repeat_it(
    field: str, value: object
) -> None:
    every = history()
    every[0] = every[0].model_copy(update={"position": {**every[0].position, field: value}})
    with pytest.raises(CatalogError, match=f"no valid {field}") as caught:
        select_chain(every, "GanttDB", None)
    assert str(value) not in str(caught.value)


def test_lsns_recorded_as_decimal_text_are_read_exactly() -> None:
    every = history()
    every[0] = every[0].model_copy(
        update={"position": {**every[0].position, "last_lsn": str(120 * 10**9)}}
    )
    chain, _ = select_chain(every, "GanttDB", None)
    assert ids(chain, every) == [0, 3, 4, 6]
