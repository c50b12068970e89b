"""The retention planner: table-driven, pure, over synthetic backup histories."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from backupflow.models import BackupKind
from backupflow.planning import plan_restore
from backupflow.retention import RetentionPlan, RetentionPolicy, plan_retention

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SEED = {BackupKind.FULL: 30, BackupKind.DIFF: 7, BackupKind.LOG: 3}
_serial = itertools.count()


@dataclass(frozen=True)
class Entry:
    id: str
    kind: BackupKind
    restore_point: datetime
    parent_id: str | None


def _entry(kind: BackupKind, at: datetime, parent: Entry | None) -> Entry:
    backup_id = f"{at:%Y%m%dT%H%M%S}Z-{kind.value}-{next(_serial):06x}"
    return Entry(backup_id, kind, at, parent.id if parent else None)


def simulate(
    days: int,
    *,
    full_every_h: int = 24,
    diff_every_h: int = 4,
    fulls_fail_after: datetime | None = None,
    end: datetime = NOW,
) -> list[Entry]:
    """Hourly backups like the seed's schedule: a full when due (unless fulls are failing),
    else a differential when due, else a log; each chains as the SQLite engine does."""
    history: list[Entry] = []
    full = previous = None
    start = end - timedelta(days=days)
    for hour in range(days * 24 + 1):
        at = start + timedelta(hours=hour)
        failing = fulls_fail_after is not None and at > fulls_fail_after
        if full is None or (hour % full_every_h == 0 and not failing):
            backup = _entry(BackupKind.FULL, at, None)
            full = backup
        elif hour % diff_every_h == 0:
            backup = _entry(BackupKind.DIFF, at, full)
        else:
            backup = _entry(BackupKind.LOG, at, previous)
        history.append(backup)
        previous = backup
    return history


def _kept_ids(plan: RetentionPlan[Entry]) -> set[str]:
    return {b.id for b in plan.kept}


def assert_no_kept_backup_lost_a_dependency(plan: RetentionPlan[Entry]) -> None:
    kept = {b.id: b for b in plan.kept}
    for backup in kept.values():
        if backup.parent_id is not None:
            assert backup.parent_id in kept, f"{backup.id} kept but its parent was deleted"


def assert_window_restorable(
    history: Sequence[Entry], plan: RetentionPlan[Entry], window: timedelta
) -> None:
    """Every hour of the window restores to the same point with the kept backups only."""
    kept = plan.kept
    moment = NOW - window
    while moment <= NOW:
        full = plan_restore(history, database="db", target=moment, now=NOW)
        pruned = plan_restore(kept, database="db", target=moment, now=NOW)
        assert pruned.restore_point == full.restore_point, moment
        moment += timedelta(minutes=37)


def test_forty_days_with_fulls_failing_for_the_last_35_keeps_the_last_good_chain() -> None:
    failing_since = NOW - timedelta(days=35)
    history = simulate(40, fulls_fail_after=failing_since)
    plan = plan_retention(history, RetentionPolicy(SEED), NOW)

    fulls = [b for b in history if b.kind is BackupKind.FULL]
    last_good = fulls[-1]
    assert last_good.restore_point <= failing_since
    kept = _kept_ids(plan)
    assert last_good.id in kept
    assert fulls[-2].id in kept  # min-keep
    assert not {b.id for b in fulls[:-2]} & kept  # older fulls, past 30 days, go
    assert plan.deletions, "old logs and differentials must go"
    assert_no_kept_backup_lost_a_dependency(plan)
    assert_window_restorable(history, plan, timedelta(days=3))
    latest = plan_restore(plan.kept, database="db", target=None, now=NOW)
    assert latest.last.id == history[-1].id
    assert latest.steps[0].manifest.id == last_good.id
    reason = next(d.reason for d in plan.decisions if d.backup.id == last_good.id)
    assert reason.startswith("kept:")


def test_a_differential_keeps_its_full_past_the_full_retention() -> None:
    history = simulate(40, fulls_fail_after=NOW - timedelta(days=33))
    plan = plan_retention(history, RetentionPolicy(SEED, min_fulls=1), NOW)
    base = [b for b in history if b.kind is BackupKind.FULL][-1]
    assert NOW - base.restore_point > timedelta(days=30)
    decision = next(d for d in plan.decisions if d.backup.id == base.id)
    assert decision.keep
    assert_no_kept_backup_lost_a_dependency(plan)


def test_log_retention_shorter_than_the_full_interval() -> None:
    history = simulate(30, full_every_h=24 * 7, diff_every_h=24)
    policy = RetentionPolicy({BackupKind.FULL: 30, BackupKind.DIFF: 2, BackupKind.LOG: 1})
    plan = plan_retention(history, policy, NOW)
    assert_no_kept_backup_lost_a_dependency(plan)
    assert_window_restorable(history, plan, timedelta(days=1))
    old_logs = [b for b in plan.deletions if b.kind is BackupKind.LOG]
    assert old_logs and all(NOW - b.restore_point > timedelta(days=1) for b in old_logs)


def test_object_lock_keeps_what_retention_would_delete() -> None:
    history = simulate(20)
    unlocked = plan_retention(history, RetentionPolicy(SEED), NOW)
    locked = plan_retention(history, RetentionPolicy(SEED, lock=timedelta(days=10)), NOW)
    young_deletions = [b for b in unlocked.deletions if NOW - b.restore_point < timedelta(days=10)]
    assert young_deletions
    reasons = {d.backup.id: d.reason for d in locked.decisions}
    for backup in young_deletions:
        assert reasons[backup.id].startswith("kept: locked")
    assert {b.id for b in locked.deletions} == {
        b.id for b in unlocked.deletions if NOW - b.restore_point >= timedelta(days=10)
    }


@pytest.mark.parametrize("min_fulls", [1, 2, 5])
def test_min_keep_when_backups_stopped_long_ago(min_fulls: int) -> None:
    history = simulate(20, end=NOW - timedelta(days=60))
    plan = plan_retention(history, RetentionPolicy(SEED, min_fulls=min_fulls), NOW)
    fulls = [b for b in history if b.kind is BackupKind.FULL]
    kept = _kept_ids(plan)
    assert {b.id for b in fulls[-min_fulls:]} <= kept
    assert not {b.id for b in fulls[:-min_fulls]} & kept
    assert history[-1].id in kept  # the latest state we have, with its chain
    assert_no_kept_backup_lost_a_dependency(plan)


@pytest.mark.parametrize(
    ("days", "expected_deletions"),
    [(2, 0), (3, 0)],
)
def test_nothing_young_is_deleted(days: int, expected_deletions: int) -> None:
    plan = plan_retention(simulate(days), RetentionPolicy(SEED), NOW)
    assert len(plan.deletions) == expected_deletions
    assert all(d.reason.startswith("kept: ") for d in plan.decisions)


def test_deletions_come_newest_first_and_every_backup_has_a_reason() -> None:
    history = simulate(15)
    plan = plan_retention(history, RetentionPolicy(SEED), NOW)
    order = [b.restore_point for b in plan.deletions]
    assert order and order == sorted(order, reverse=True)
    assert [d.backup.id for d in plan.decisions] == [b.id for b in history]
    assert all(d.reason.startswith(("kept: ", "delete: ")) for d in plan.decisions)


def test_a_gap_in_a_chain_does_not_stop_planning() -> None:
    history = simulate(10)
    damaged = [b for b in history if b.id != history[-5].id]  # a log is missing
    plan = plan_retention(damaged, RetentionPolicy(SEED), NOW)
    assert len(plan.decisions) == len(damaged)
