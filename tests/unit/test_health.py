"""Backup health, one row per job and tier: unreachable, denied, incomplete chain, never,
stale or ok, worst first; chain breaks found from the parent ids the manifests' names
record; a failure summary with one line per unreadable tier."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from backupflow.models import BackupKind
from backupflow.objectives import HealthState, assess_health, chain_breaks, health_summary
from backupflow.tiers import TierState

T = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
REFUSED = 'ListObjectsV2 on s3://dr failed: Could not connect to the endpoint URL: "http://x"'


@pytest.mark.parametrize(
    ("newest", "tier", "gap", "state", "detail"),
    [
        (T - 30 * timedelta(minutes=1), TierState("primary", "ok"), None, HealthState.OK, ""),
        (T - 2 * HOUR, TierState("primary", "ok"), None, HealthState.STALE, "2.0 h old"),
        (None, TierState("primary", "empty"), None, HealthState.NEVER, "never backed up"),
        (
            T - 10 * timedelta(minutes=1),
            TierState("primary", "ok"),
            "log L2 lacks its parent L1",
            HealthState.INCOMPLETE_CHAIN,
            "lacks its parent L1",
        ),
        (None, TierState("dr", "unreachable", REFUSED), None, HealthState.UNREACHABLE, REFUSED),
        (None, TierState("dr", "denied", "was denied"), None, HealthState.DENIED, "was denied"),
        # An unreadable tier wins over anything else known about it.
        (T, TierState("dr", "unreachable", REFUSED), "gap", HealthState.UNREACHABLE, REFUSED),
    ],
)
def test_each_state_of_a_job_in_a_tier(
    newest: datetime | None,
    tier: TierState,
    gap: str | None,
    state: HealthState,
    detail: str,
) -> None:
    key = ("database_log", tier.tier)
    [row] = assess_health(
        {key: newest},
        {"database_log": HOUR},
        T,
        timedelta(minutes=30),
        tiers={tier.tier: tier},
        gaps={key: gap} if gap else {},
    )
    assert row.state is state
    assert detail in row.detail


def test_rows_come_worst_first_and_the_summary_has_one_line_per_unreadable_tier() -> None:
    jobs = ["database_full", "database_log", "config"]
    newest: dict[tuple[str, str], datetime | None] = {}
    for job in jobs:
        newest[(job, "primary")] = T - timedelta(minutes=10)
        newest[(job, "dr")] = None
    newest[("config", "primary")] = None
    newest[("database_full", "primary")] = T - 3 * timedelta(days=1)
    rows = assess_health(
        newest,
        {"database_full": timedelta(days=1), "database_log": HOUR, "config": timedelta(days=1)},
        T,
        timedelta(minutes=30),
        tiers={
            "primary": TierState("primary", "ok"),
            "dr": TierState("dr", "unreachable", REFUSED),
        },
        gaps={("database_log", "primary"): "log L2 lacks its parent L1, which no tier holds"},
    )
    assert [(r.state, r.job, r.tier) for r in rows] == [
        (HealthState.UNREACHABLE, "config", "dr"),
        (HealthState.UNREACHABLE, "database_full", "dr"),
        (HealthState.UNREACHABLE, "database_log", "dr"),
        (HealthState.INCOMPLETE_CHAIN, "database_log", "primary"),
        (HealthState.NEVER, "config", "primary"),
        (HealthState.STALE, "database_full", "primary"),
    ]
    assert health_summary(rows) == [
        f"tier dr is unreachable ({REFUSED}), so 3 job(s) could not be checked there",
        "database_log in primary: incomplete chain (log L2 lacks its parent L1, which no tier "
        "holds)",
        "config in primary: never backed up",
        "database_full in primary: stale (newest is 72.0 h old, 24.5 h allowed)",
    ]


def test_a_healthy_table_has_no_findings() -> None:
    rows = assess_health(
        {("database_full", "primary"): T - HOUR},
        {"database_full": timedelta(days=1)},
        T,
        timedelta(minutes=30),
    )
    assert [r.state for r in rows] == [HealthState.OK] and health_summary(rows) == []


@dataclass(frozen=True)
class Entry:
    id: str
    kind: BackupKind
    restore_point: datetime
    parent_id: str | None


FULL, DIFF, LOG = BackupKind.FULL, BackupKind.DIFF, BackupKind.LOG


@pytest.mark.parametrize(
    ("held", "breaks"),
    [
        ([("F", FULL, None), ("L1", LOG, "F"), ("L2", LOG, "L1")], []),
        # The middle log was deleted: only the first backup after the gap is named.
        ([("F", FULL, None), ("L2", LOG, "L1"), ("L3", LOG, "L2")], [("L2", "L1")]),
        # A log stored without its parent (the primary was full when the parent was taken).
        ([("L1", LOG, "F")], [("L1", "F")]),
        # A differential whose full was lost, and a later whole chain.
        (
            [("D1", DIFF, "F1"), ("F2", FULL, None), ("L9", LOG, "F2")],
            [("D1", "F1")],
        ),
        ([], []),
    ],
)
def test_chain_breaks_by_the_parent_ids_in_the_names(
    held: list[tuple[str, BackupKind, str | None]], breaks: list[tuple[str, str]]
) -> None:
    entries = [
        Entry(backup_id, kind, T + index * HOUR, parent)
        for index, (backup_id, kind, parent) in enumerate(held)
    ]
    assert [(e.id, parent) for e, parent in chain_breaks(reversed(entries))] == breaks


def test_each_tier_s_archived_wal_is_its_own_row_with_its_lag() -> None:
    from datetime import UTC, datetime, timedelta

    from backupflow.objectives import HealthState, wal_lag_rows
    from backupflow.tiers import TierState

    lead = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    rows = wal_lag_rows(
        "database_wal",
        {
            "primary": lead,
            "secondary": lead - timedelta(seconds=20),
            "dr": lead - timedelta(minutes=45),
        },
        "primary",
    )
    by_tier = {r.tier: r for r in rows}
    assert [by_tier[t].state for t in ("primary", "secondary", "dr")] == [
        HealthState.OK,
        HealthState.OK,
        HealthState.STALE,
    ]
    assert by_tier["secondary"].age == timedelta(seconds=20)
    assert by_tier["dr"].detail == "its WAL is 2700 s behind the primary tier's"

    down = wal_lag_rows(
        "database_wal",
        {"primary": lead, "dr": None},
        "primary",
        tiers={"dr": TierState("dr", "unreachable", "connection refused")},
    )
    assert {r.tier: r.state for r in down} == {
        "primary": HealthState.OK,
        "dr": HealthState.UNREACHABLE,
    }
    never = wal_lag_rows("database_wal", {"primary": None, "dr": None}, "primary")
    assert {r.state for r in never} == {HealthState.NEVER}
