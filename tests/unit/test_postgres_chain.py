"""PostgreSQL restore chains: a base backup plus continuous archived WAL, across timelines,
never across clusters; holes named with the latest point that can still be restored."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backupflow.catalog import CatalogEntry
from backupflow.engines.postgres.chain import check_series, plan_wal_chain
from backupflow.engines.postgres.walnames import format_lsn, history_name, segment_name
from backupflow.errors import CatalogError, ChainGapError, NoBackupError, TargetInFutureError
from backupflow.models import BackupKind, Category, Manifest

T0 = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
SYSID = "7301234567890123456"
OTHER = "7309999999999999999"
_serial = itertools.count()


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def manifest(kind: BackupKind, minute: float, position: dict[str, Any]) -> Manifest:
    when = at(minute)
    return Manifest(
        id=f"{when:%Y%m%dT%H%M%S}Z-{kind.value}-{next(_serial):06x}",
        category=Category.DATABASE,
        kind=kind,
        engine="postgres",
        database="main",
        started_at=when,
        finished_at=when,
        restore_point=when,
        position=position,
        objects=(),
    )


def base(minute: float, start: int, *, tl: int = 1, sysid: str = SYSID) -> Manifest:
    return manifest(
        BackupKind.FULL,
        minute,
        {
            "system_identifier": sysid,
            "timeline": tl,
            "start_lsn": format_lsn(start * 0x1000000 + 0x28),
            "end_lsn": format_lsn(start * 0x1000000 + 0x138),
            "start_segment": segment_name(tl, start),
            "segment_bytes": 16 * 1024 * 1024,
            "server_version": 150018,
        },
    )


def log(
    minute: float,
    segments: list[tuple[int, int]] | range,
    *,
    extra: tuple[str, ...] = (),
    sysid: str = SYSID,
) -> Manifest:
    """A log backup listing segments ``(timeline, segno)`` (a range: timeline 1)."""
    pairs = [(1, s) for s in segments] if isinstance(segments, range) else list(segments)
    names = [segment_name(tl, s) for tl, s in pairs] + list(extra)
    last_tl, last = pairs[-1]
    return manifest(
        BackupKind.LOG,
        minute,
        {
            "system_identifier": sysid,
            "timeline": last_tl,
            "segment_bytes": 16 * 1024 * 1024,
            "first": segment_name(pairs[0][0], pairs[0][1]),
            "last": segment_name(last_tl, last),
            "files": names,
            "end_lsn": format_lsn(last * 0x1000000 + 0x100),
        },
    )


@dataclass
class Catalog:
    manifests: list[Manifest]
    unreadable: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def sorted_entries(self) -> list[CatalogEntry]:
        return [
            CatalogEntry(m.id, m.kind, m.restore_point, m.parent_id, f"{m.id}.json")
            for m in sorted(self.manifests, key=lambda m: (m.restore_point, m.id))
        ]

    def manifest(self, backup_id: str) -> Manifest:
        if backup_id in self.unreadable:
            raise CatalogError(f"manifest {backup_id} is damaged")
        return next(m for m in self.manifests if m.id == backup_id)


def plan(manifests: list[Manifest], target: datetime | None) -> list[int]:
    result = plan_wal_chain(Catalog(manifests), "main", target, NOW)
    return [manifests.index(m) for m in result.manifests]


def history() -> list[Manifest]:
    """Base at minute 0 starting in segment 2; hourly logs 2-4, 5-7, 8-9."""
    return [base(0, 2), log(60, range(2, 5)), log(120, range(5, 8)), log(180, range(8, 10))]


@pytest.mark.parametrize(
    ("minute", "expected", "reached"),
    [
        (0, [0], 0),  # the base alone reaches its own restore point
        (30, [0, 1], 30),  # the first log replays to the target
        (60, [0, 1], 60),  # exactly a log's restore point
        (61, [0, 1, 2], 61),  # between logs: up to the first log at or after it
        (179.5, [0, 1, 2, 3], 179.5),
        (None, [0, 1, 2, 3], 180),  # latest: every log
    ],
)
def test_chain_reaches_the_first_covering_log(
    minute: float | None, expected: list[int], reached: float
) -> None:
    every = history()
    target = at(minute) if minute is not None else None
    result = plan_wal_chain(Catalog(every), "main", target, NOW)
    assert [every.index(m) for m in result.manifests] == expected
    assert result.restore_point == at(reached)
    assert result.notes == ()
    assert result.steps[0].reason.startswith("base backup: cluster 7301234567890123456")
    assert "000000010000000000000002" in result.steps[0].reason


def test_a_target_after_the_last_log_is_replayed_from_the_archive_and_says_so() -> None:
    result = plan_wal_chain(Catalog(history()), "main", at(300), NOW)
    assert result.restore_point == at(300)  # recovery itself says whether WAL reaches it
    assert not result.beyond
    assert "lies after the last backup" in result.notes[0]
    assert "2026-11-26T03:00" in result.notes[0] and "replayed up to it" in result.notes[0]


def test_a_target_before_every_base_has_nothing_to_restore() -> None:
    every = [base(10, 2), log(60, range(2, 5))]
    with pytest.raises(NoBackupError, match="earliest restore point of main is 2026-11-26T00:10"):
        plan(every, at(5))


def test_a_future_target_is_refused() -> None:
    with pytest.raises(TargetInFutureError, match="later than now"):
        plan(history(), NOW + timedelta(minutes=1))


def test_a_missing_segment_names_it_and_the_latest_restorable_point() -> None:
    every = [base(0, 2), log(60, range(2, 5)), log(120, [(1, 5), (1, 7)]), log(180, range(8, 10))]
    with pytest.raises(ChainGapError) as caught:
        plan(every, None)
    message = str(caught.value)
    assert "000000010000000000000006" in message
    assert "latest point that can be restored is 2026-11-26T01:00:00" in message
    # Before the hole the chain still restores.
    assert plan(every, at(59)) == [0, 1]


def test_a_lost_log_backup_is_a_gap_back_to_the_base() -> None:
    every = [base(0, 2), log(120, range(5, 8))]  # the log with 2-4 is gone
    with pytest.raises(ChainGapError) as caught:
        plan(every, at(90))
    assert "segment 000000010000000000000002 (no log backup lists it)" in str(caught.value)
    assert "restored is 2026-11-26T00:00:00" in str(caught.value)


def test_the_newest_base_before_the_target_is_chosen_and_any_log_may_carry_its_wal() -> None:
    # Base 2 starts in segment 6; its WAL comes partly from a log taken in base 1's chain.
    every = [base(0, 2), log(60, range(2, 7)), base(70, 6), log(130, range(7, 9))]
    assert plan(every, at(65)) == [0, 1, 3]  # base 1; the WAL of 01:05 is in the last log
    assert plan(every, at(100)) == [2, 1, 3]  # base 2, then the WAL from segment 6 on
    assert plan(every, at(70)) == [2]


def test_a_newer_cluster_never_chains_with_the_old_ones_wal() -> None:
    every = [
        base(0, 2),
        log(60, range(2, 6)),
        base(90, 2, sysid=OTHER),  # initdb again: same segment names, other cluster
        log(150, range(2, 4), sysid=OTHER),
    ]
    assert plan(every, at(90)) == [2]
    assert plan(every, at(120)) == [2, 3]  # never the old cluster's log 1
    assert plan(every, None) == [2, 3]
    assert plan(every, at(60)) == [0, 1]
    # Without its own log backup the new cluster has no WAL, whatever the old one archived.
    only_old_wal = [every[0], every[1], base(90, 2, sysid=OTHER)]
    assert plan(only_old_wal, None) == [2]


def test_logs_of_another_cluster_are_not_a_source_of_segments() -> None:
    every = [
        base(0, 2),
        log(60, range(2, 4)),
        log(90, range(4, 6), sysid=OTHER),
        log(120, range(6, 8)),
    ]
    with pytest.raises(ChainGapError, match="000000010000000000000004"):
        plan(every, None)


def test_the_chain_follows_a_new_timeline_through_its_history_file() -> None:
    # Promotion in segment 5: timeline 2 starts there; timeline 1's partial is left behind.
    every = [
        base(0, 2),
        log(60, range(2, 5)),
        log(
            120,
            [(1, 5), (2, 5), (2, 6), (2, 7)],
            extra=(history_name(2), "000000010000000000000005.partial"),
        ),
        log(180, [(2, 8)]),
    ]
    assert plan(every, None) == [0, 1, 2, 3]
    # Timeline 1 may stop at the switch segment: timeline 2's copy of it continues.
    every[2] = log(120, [(2, 5), (2, 6), (2, 7)], extra=(history_name(2),))
    assert plan(every, None) == [0, 1, 2, 3]


def test_a_new_timeline_without_its_history_file_is_a_gap() -> None:
    every = [base(0, 2), log(60, range(2, 5)), log(120, [(2, 5), (2, 6)])]
    with pytest.raises(ChainGapError) as caught:
        plan(every, None)
    assert "00000002.history" in str(caught.value)
    assert "2026-11-26T01:00:00" in str(caught.value)
    assert check_series(every) and "00000002.history" in check_series(every)[0]


def test_a_signed_but_damaged_position_is_a_catalog_error_naming_the_backup() -> None:
    for broken in (
        {"files": "000000010000000000000002"},
        {"files": ["../../etc/passwd"]},
        {"system_identifier": "-1"},
        {"timeline": True},
        {"segment_bytes": 3},
        {"last": "000000010000000000000001"},  # before first
    ):
        bad = log(60, range(2, 5))
        bad = bad.model_copy(update={"position": {**bad.position, **broken}})
        with pytest.raises(CatalogError, match=f"backup {bad.id} has no valid"):
            plan([base(0, 2), bad], None)
        assert any(bad.id in p for p in check_series([base(0, 2), bad]))
    damaged_base = base(0, 2)
    damaged_base = damaged_base.model_copy(
        update={"position": {**damaged_base.position, "start_segment": "00000001"}}
    )
    with pytest.raises(CatalogError, match="start_segment"):
        plan([damaged_base], None)


def test_an_unreadable_manifest_is_a_problem_and_planning_goes_on() -> None:
    every = history()
    catalog = Catalog(every, unreadable={every[3].id})
    result = plan_wal_chain(catalog, "main", None, NOW)
    assert [every.index(m) for m in result.manifests] == [0, 1, 2]
    assert catalog.problems and every[3].id in catalog.problems[0]


def test_check_series_finds_holes_and_orphan_clusters() -> None:
    assert check_series(history()) == []
    every = [
        base(0, 2),
        log(60, range(2, 5)),
        log(120, range(6, 8)),  # 5 is missing
        log(180, range(9, 10)),  # 8 is missing too
        log(200, range(2, 3), sysid=OTHER),
    ]
    problems = check_series(every)
    assert any("000000010000000000000005" in p for p in problems)
    assert any("000000010000000000000008" in p for p in problems)
    assert any(f"cluster {OTHER}, which has no base backup" in p for p in problems)
    assert len(problems) == 3


def test_retention_keeps_every_point_of_the_log_window_restorable() -> None:
    """Backups chained by parent ids as the runs record them (a log's parent is the newest
    backup of the newest base's chain): what retention keeps still restores every time in
    the log window, and the point just before it."""
    from backupflow.retention import RetentionPolicy, plan_retention

    made: list[Manifest] = []
    segment = 2
    parent: Manifest | None = None
    for hour in range(0, 24 * 10):  # ten days: a base every 2 days, a log every hour
        if hour % 48 == 0:
            made.append(base(hour * 60, segment))
            parent = made[-1]
            continue
        assert parent is not None
        logged = log(hour * 60, range(segment, segment + 3))
        made.append(logged.model_copy(update={"parent_id": parent.id}))
        parent = made[-1]
        segment += 3
    now = at(24 * 10 * 60)
    policy = RetentionPolicy(
        {BackupKind.FULL: 4, BackupKind.DIFF: 7, BackupKind.LOG: 3}, min_fulls=1
    )
    plan = plan_retention(made, policy, now)
    kept = plan.kept
    assert len(kept) < len(made)  # something was pruned
    window_start = now - timedelta(days=3)
    anchor = max(m.restore_point for m in kept if m.restore_point <= window_start)
    for minutes in range(0, 3 * 24 * 60 - 60, 17):  # the last log is at now - 1 h
        target = window_start + timedelta(minutes=minutes)
        result = plan_wal_chain(Catalog(list(kept)), "main", target, now)
        assert result.restore_point == target
    assert plan_wal_chain(Catalog(list(kept)), "main", anchor, now).restore_point == anchor
    # Without the parent-id rule the WAL of the window's first day would be gone.
    young = [m for m in kept if m.restore_point >= window_start or m.kind is BackupKind.FULL]
    with pytest.raises(ChainGapError):
        plan_wal_chain(Catalog(young), "main", window_start + timedelta(minutes=30), now)


def test_the_latest_restorable_point_is_never_before_the_base() -> None:
    # A log taken before the base carries its first segments; the hole comes after it.
    every = [log(50, range(2, 7)), base(70, 6), log(130, range(8, 9))]
    with pytest.raises(ChainGapError) as caught:
        plan(every, None)
    assert "segment 000000010000000000000007" in str(caught.value)
    assert "restored is 2026-11-26T01:10:00" in str(caught.value)
