"""RTO/RPO arithmetic, health staleness and the review's figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backupflow.objectives import assess_health, drill_result, schedule_interval
from flows.backup_review import review_figures

T = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("restore_minutes", "point_minutes_before", "passed", "rto_met", "rpo_met"),
    [
        (30, 20, True, True, True),
        (240, 60, True, True, True),  # exactly at both objectives
        (241, 20, False, False, True),
        (30, 61, False, True, False),
        (300, 120, False, False, False),
    ],
)
def test_drill_objectives(
    restore_minutes: int, point_minutes_before: int, passed: bool, rto_met: bool, rpo_met: bool
) -> None:
    result = drill_result(
        T,
        T + timedelta(minutes=restore_minutes),
        T - timedelta(minutes=point_minutes_before),
        rto_hours=4,
        rpo_hours=1,
    )
    assert result.rto == timedelta(minutes=restore_minutes)
    assert result.rpo == timedelta(minutes=point_minutes_before)
    assert (result.passed, result.rto_met, result.rpo_met) == (passed, rto_met, rpo_met)


@pytest.mark.parametrize(
    ("cron", "interval"),
    [
        ("0 2 * * *", timedelta(days=1)),
        ("0 */4 * * *", timedelta(hours=4)),
        ("0 * * * *", timedelta(hours=1)),
        ("*/15 * * * *", timedelta(minutes=15)),
    ],
)
def test_schedule_intervals(cron: str, interval: timedelta) -> None:
    assert schedule_interval(cron, "Asia/Seoul", T) == interval


def test_health_marks_late_and_missing_backups_stale() -> None:
    rows = assess_health(
        {
            ("database_log", "primary"): T - timedelta(minutes=50),
            ("database_log", "dr"): T - timedelta(minutes=95),
            ("database_full", "primary"): T - timedelta(hours=20),
            ("uploads", "dr"): None,
        },
        {
            "database_log": timedelta(hours=1),
            "database_full": timedelta(days=1),
            "uploads": timedelta(days=1),
        },
        T,
        timedelta(minutes=30),
    )
    stale = {(r.job, r.tier) for r in rows if r.stale}
    assert stale == {("database_log", "dr"), ("uploads", "dr")}


def test_review_figures_count_backups_failures_sizes_and_durations() -> None:
    records = [
        {
            "time": "2026-10-01T00:00:00+00:00",
            "event": "backup",
            "status": "completed",
            "kind": "full",
            "stored_bytes": 100,
            "seconds": 2.0,
        },
        {
            "time": "2026-11-01T00:00:00+00:00",
            "event": "backup",
            "status": "completed",
            "kind": "full",
            "stored_bytes": 150,
            "seconds": 4.0,
        },
        {
            "time": "2026-11-02T00:00:00+00:00",
            "event": "backup",
            "status": "failed",
            "kind": "full",
        },
        {
            "time": "2026-11-03T00:00:00+00:00",
            "event": "backup",
            "status": "completed",
            "category": "uploads",
            "kind": "full",
            "stored_bytes": 7,
            "seconds": 1.0,
        },
        {
            "time": "2026-06-01T00:00:00+00:00",
            "event": "backup",
            "status": "completed",
            "kind": "full",
            "stored_bytes": 1,
            "seconds": 9.0,
        },  # before the quarter
        {"time": "2026-11-04T00:00:00+00:00", "event": "restore", "status": "completed"},
    ]
    figures = review_figures(records, datetime(2026, 9, 1, tzinfo=UTC))
    assert figures["database/full"] == {
        "completed": 2,
        "failed": 1,
        "first_bytes": 100,
        "last_bytes": 150,
        "mean_seconds": 3.0,
    }
    assert figures["uploads/full"]["completed"] == 1
