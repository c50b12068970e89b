"""Table-driven tests of the pure planners over synthetic catalogs."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from backupflow.errors import ChainGapError, NoBackupError, TargetInFutureError
from backupflow.models import BackupKind, Category, Manifest, StoredObject
from backupflow.planning import lost_parents, plan_backup, plan_restore

DB = "gantt"
T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=3)
SEOUL = timezone(timedelta(hours=9))
FAKE_SHA = "ab" * 32


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def stamp(moment: datetime) -> str:
    """The part of a timestamp every message must show (to the second, in UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


class History:
    """Builds a catalog of manifests; each backup has a short name for the tables."""

    def __init__(self) -> None:
        self.named: dict[str, Manifest] = {}
        self.stored: list[Manifest] = []
        self._serial = 0

    def _add(
        self,
        name: str,
        kind: BackupKind,
        when: datetime,
        parent: str | None,
        *,
        database: str = DB,
        stored: bool = True,
    ) -> Manifest:
        self._serial += 1
        backup_id = f"{when.astimezone(UTC):%Y%m%dT%H%M%S}Z-{kind.value}-{self._serial:06x}"
        parent_m = self.named[parent] if parent else None
        if parent_m is None:
            base_id = None
        elif parent_m.kind is BackupKind.FULL:
            base_id = parent_m.id
        else:
            base_id = parent_m.base_id
        manifest = Manifest(
            id=backup_id,
            category=Category.DATABASE,
            kind=kind,
            engine="sqlite",
            database=database,
            started_at=when,
            finished_at=when + timedelta(minutes=1),
            restore_point=when,
            base_id=base_id,
            parent_id=parent_m.id if parent_m else None,
            objects=(
                StoredObject(
                    role="data",
                    key=f"database/{database}/{backup_id}.data.zst",
                    codec="zstd",
                    size=10,
                    sha256=FAKE_SHA,
                    raw_size=20,
                    raw_sha256=FAKE_SHA,
                ),
            ),
        )
        self.named[name] = manifest
        if stored:
            self.stored.append(manifest)
        return manifest

    def full(
        self, name: str, when: datetime, *, database: str = DB, stored: bool = True
    ) -> History:
        self._add(name, BackupKind.FULL, when, None, database=database, stored=stored)
        return self

    def diff(self, name: str, when: datetime, on: str) -> History:
        self._add(name, BackupKind.DIFF, when, on)
        return self

    def log(self, name: str, when: datetime, after: str, *, stored: bool = True) -> History:
        self._add(name, BackupKind.LOG, when, after, stored=stored)
        return self

    def ids(self, *names: str) -> list[str]:
        return [self.named[n].id for n in names]


def chain() -> History:
    """full -> diff -> log -> log."""
    return (
        History()
        .full("F", at(0))
        .diff("D", at(4), on="F")
        .log("L1", at(5), after="D")
        .log("L2", at(6), after="L1")
    )


def two_fulls() -> History:
    """An old chain, then a second full with its own logs."""
    return (
        History()
        .full("F1", at(0))
        .log("A1", at(1), after="F1")
        .full("F2", at(24))
        .log("B1", at(25), after="F2")
        .log("B2", at(26), after="B1")
    )


def with_gap() -> History:
    """L3 is missing from the catalog; L4 needs it."""
    return (
        History()
        .full("F", at(0))
        .log("L1", at(1), after="F")
        .log("L2", at(2), after="L1")
        .log("L3", at(3), after="L2", stored=False)
        .log("L4", at(4), after="L3")
        .log("L5", at(5), after="L4")
    )


def other_database_newer() -> History:
    """The chain of gantt, plus a newer full of another database."""
    return chain().full("X", at(10), database="other")


def only_diff_and_logs() -> History:
    history = History().full("F", at(0), stored=False)
    return history.diff("D", at(4), on="F").log("L", at(5), after="D")


def nothing() -> History:
    return History()


def only_other_database() -> History:
    return History().full("X", at(0), database="other")


Scenario = Callable[[], History]

# ---------------------------------------------------------------------------- plan_restore


@pytest.mark.parametrize(
    ("scenario", "target", "steps", "earlier_by"),
    [
        pytest.param(chain, None, ["F", "D", "L1", "L2"], None, id="chain-latest"),
        pytest.param(chain, at(6), ["F", "D", "L1", "L2"], None, id="chain-exactly-at-last"),
        pytest.param(chain, at(4), ["F", "D"], None, id="exactly-at-diff"),
        pytest.param(chain, at(0), ["F"], None, id="exactly-at-full"),
        pytest.param(chain, at(5.5), ["F", "D", "L1"], timedelta(minutes=30), id="between"),
        pytest.param(chain, at(2), ["F"], timedelta(hours=2), id="between-full-and-diff"),
        pytest.param(chain, at(30), ["F", "D", "L1", "L2"], timedelta(hours=24), id="after-last"),
        pytest.param(two_fulls, None, ["F2", "B1", "B2"], None, id="second-full-latest"),
        pytest.param(two_fulls, at(25), ["F2", "B1"], None, id="second-full-log"),
        pytest.param(two_fulls, at(12), ["F1", "A1"], timedelta(hours=11), id="old-chain"),
        pytest.param(with_gap, at(2.5), ["F", "L1", "L2"], timedelta(minutes=30), id="pre-gap"),
        pytest.param(other_database_newer, None, ["F", "D", "L1", "L2"], None, id="other-db"),
    ],
)
def test_plan_restore_reaches_newest_point_at_or_before_target(
    scenario: Scenario, target: datetime | None, steps: list[str], earlier_by: timedelta | None
) -> None:
    history = scenario()

    plan = plan_restore(history.stored, database=DB, target=target, now=NOW)

    assert [m.id for m in plan.manifests] == history.ids(*steps)
    assert plan.steps[0].manifest.kind is BackupKind.FULL
    assert plan.restore_point == history.named[steps[-1]].restore_point
    assert plan.last is history.named[steps[-1]]
    assert plan.requested == target
    if earlier_by is None:
        assert plan.notes == ()
        if target is not None:  # exactly at a restore point: nothing is missing
            assert plan.shortfall == timedelta(0)
    else:
        assert plan.shortfall == earlier_by
        assert len(plan.notes) == 1
        note = plan.notes[0]
        assert "earlier than the requested" in note
        assert stamp(plan.restore_point) in note
        assert target is not None and stamp(target) in note


def test_latest_plan_shortfall_is_age_of_the_last_backup() -> None:
    plan = plan_restore(chain().stored, database=DB, target=None, now=NOW)

    assert plan.shortfall == NOW - at(6)
    assert plan.notes == ()


def test_target_in_another_timezone_means_the_same_instant() -> None:
    history = chain()
    seoul_target = at(5.5).astimezone(SEOUL)

    plan = plan_restore(history.stored, database=DB, target=seoul_target, now=NOW)

    assert [m.id for m in plan.manifests] == history.ids("F", "D", "L1")
    assert plan.shortfall == timedelta(minutes=30)


def test_input_order_does_not_matter() -> None:
    history = chain()

    plan = plan_restore(list(reversed(history.stored)), database=DB, target=None, now=NOW)

    assert [m.id for m in plan.manifests] == history.ids("F", "D", "L1", "L2")


def test_steps_give_a_reason_naming_what_each_backup_builds_on() -> None:
    history = chain()
    f, d, l1, _ = (history.named[n] for n in ("F", "D", "L1", "L2"))

    plan = plan_restore(history.stored, database=DB, target=None, now=NOW)

    reasons = [step.reason for step in plan.steps]
    assert "full" in reasons[0]
    assert "differential" in reasons[1] and f.id in reasons[1]
    assert reasons[2].startswith("log") and d.id in reasons[2] and "diff" in reasons[2]
    assert reasons[3].startswith("log") and l1.id in reasons[3]


def test_logs_after_a_second_full_chain_from_it() -> None:
    history = two_fulls()

    plan = plan_restore(history.stored, database=DB, target=None, now=NOW)

    assert history.named["F1"] not in plan.manifests
    assert history.named["A1"] not in plan.manifests
    assert history.named["F2"].id in plan.steps[1].reason


@pytest.mark.parametrize(
    ("scenario", "target", "error", "must_name"),
    [
        pytest.param(chain, at(-1), NoBackupError, [DB, stamp(at(0))], id="before-first-backup"),
        pytest.param(two_fulls, at(-0.5), NoBackupError, [stamp(at(0))], id="before-first-of-two"),
        pytest.param(nothing, None, NoBackupError, [DB], id="no-backups"),
        pytest.param(nothing, at(1), NoBackupError, [DB], id="no-backups-target"),
        pytest.param(only_other_database, None, NoBackupError, [DB], id="only-other-db"),
        pytest.param(only_diff_and_logs, None, NoBackupError, [DB, "no full"], id="no-full"),
        pytest.param(
            chain,
            NOW + timedelta(seconds=1),
            TargetInFutureError,
            [stamp(NOW + timedelta(seconds=1)), stamp(NOW)],
            id="future",
        ),
        pytest.param(
            nothing, NOW + timedelta(days=1), TargetInFutureError, [], id="future-no-backups"
        ),
    ],
)
def test_plan_restore_refuses_with_a_message_that_says_why(
    scenario: Scenario,
    target: datetime | None,
    error: type[Exception],
    must_name: list[str],
) -> None:
    with pytest.raises(error) as caught:
        plan_restore(scenario().stored, database=DB, target=target, now=NOW)

    message = str(caught.value)
    for needle in must_name:
        assert needle in message


@pytest.mark.parametrize("target", [None, at(4.5), at(5)], ids=["latest", "after-gap", "at-L5"])
def test_chain_gap_names_both_sides_and_the_latest_restorable_point(
    target: datetime | None,
) -> None:
    history = with_gap()
    l2, l3, l4 = (history.named[n] for n in ("L2", "L3", "L4"))

    with pytest.raises(ChainGapError) as caught:
        plan_restore(history.stored, database=DB, target=target, now=NOW)

    message = str(caught.value)
    assert l4.id in message  # the backup that needs the missing one
    assert l3.id in message  # the missing backup
    assert l2.id in message  # the backup before the gap
    assert f"--at {stamp(l2.restore_point)}" in message  # the latest restorable point


@pytest.mark.parametrize(
    ("target", "now"),
    [
        pytest.param(datetime(2026, 11, 26, 5, 0), NOW, id="naive-target"),
        pytest.param(None, datetime(2026, 11, 28, 0, 0), id="naive-now"),
    ],
)
def test_naive_datetimes_are_rejected(target: datetime | None, now: datetime) -> None:
    with pytest.raises(ValueError, match="timezone"):
        plan_restore(chain().stored, database=DB, target=target, now=now)


def test_following_the_chain_gap_hint_restores_the_suggested_point() -> None:
    history = (
        History()
        .full("F", at(0) + timedelta(microseconds=123_456))
        .log("L1", at(1) + timedelta(microseconds=234_567), after="F")
        .log("L2", at(2) + timedelta(microseconds=345_678), after="L1")
        .log("L3", at(3), after="L2", stored=False)
        .log("L4", at(4), after="L3")
    )
    with pytest.raises(ChainGapError) as caught:
        plan_restore(history.stored, database=DB, target=None, now=NOW)
    found = re.search(r"--at (\S+?)\)", str(caught.value))
    assert found is not None
    hinted = datetime.fromisoformat(found.group(1))

    plan = plan_restore(history.stored, database=DB, target=hinted, now=NOW)

    assert plan.restore_point == history.named["L2"].restore_point


def test_asking_for_the_earliest_point_named_by_no_backup_error_works() -> None:
    history = History().full("F", at(0) + timedelta(microseconds=987_654))
    with pytest.raises(NoBackupError) as caught:
        plan_restore(history.stored, database=DB, target=at(-1), now=NOW)
    found = re.search(r"earliest restore point of \S+ is (\S+?)\.$", str(caught.value))
    assert found is not None
    earliest = datetime.fromisoformat(found.group(1))

    plan = plan_restore(history.stored, database=DB, target=earliest, now=NOW)

    assert plan.restore_point == history.named["F"].restore_point


# ----------------------------------------------------------------------------- plan_backup


@pytest.mark.parametrize(
    ("scenario", "requested", "kind", "base", "parent"),
    [
        pytest.param(nothing, BackupKind.FULL, BackupKind.FULL, None, None, id="full-first"),
        pytest.param(chain, BackupKind.FULL, BackupKind.FULL, None, None, id="full-again"),
        pytest.param(chain, BackupKind.DIFF, BackupKind.DIFF, "F", "F", id="diff-on-full"),
        pytest.param(two_fulls, BackupKind.DIFF, BackupKind.DIFF, "F2", "F2", id="diff-newest"),
        pytest.param(chain, BackupKind.LOG, BackupKind.LOG, "F", "L2", id="log-after-log"),
        pytest.param(two_fulls, BackupKind.LOG, BackupKind.LOG, "F2", "B2", id="log-new-chain"),
        pytest.param(
            lambda: History().full("F", at(0)),
            BackupKind.LOG,
            BackupKind.LOG,
            "F",
            "F",
            id="log-after-full",
        ),
        pytest.param(
            lambda: History().full("F", at(0)).diff("D", at(4), on="F"),
            BackupKind.LOG,
            BackupKind.LOG,
            "F",
            "D",
            id="log-after-diff",
        ),
        pytest.param(
            lambda: two_fulls().diff("D2", at(28), on="F2"),
            BackupKind.DIFF,
            BackupKind.DIFF,
            "F2",
            "F2",
            id="diff-ignores-earlier-diff",
        ),
    ],
)
def test_plan_backup_builds_on_the_right_backups(
    scenario: Scenario,
    requested: BackupKind,
    kind: BackupKind,
    base: str | None,
    parent: str | None,
) -> None:
    history = scenario()

    decision = plan_backup(history.stored, requested, database=DB)

    assert decision.kind is kind
    assert decision.base is (history.named[base] if base else None)
    assert decision.parent is (history.named[parent] if parent else None)
    assert decision.notes == ()


@pytest.mark.parametrize("requested", [BackupKind.DIFF, BackupKind.LOG])
@pytest.mark.parametrize("scenario", [nothing, only_diff_and_logs], ids=["empty", "no-full"])
def test_diff_or_log_without_full_is_promoted_with_a_note(
    scenario: Scenario, requested: BackupKind
) -> None:
    decision = plan_backup(scenario().stored, requested, database=DB, missing_full="promote")

    assert decision.kind is BackupKind.FULL
    assert decision.base is None and decision.parent is None
    assert len(decision.notes) == 1
    assert DB in decision.notes[0]
    assert f"requested {requested.value} backup" in decision.notes[0]


@pytest.mark.parametrize("requested", [BackupKind.DIFF, BackupKind.LOG])
def test_diff_or_log_without_full_fails_when_asked_to(requested: BackupKind) -> None:
    with pytest.raises(NoBackupError) as caught:
        plan_backup(only_diff_and_logs().stored, requested, database=DB, missing_full="fail")

    message = str(caught.value)
    assert DB in message
    assert requested.value in message
    assert "MISSING_FULL" in message


@pytest.mark.parametrize("target", [None, at(4.5)], ids=["latest", "after-the-lost-one"])
def test_a_restore_into_a_gap_says_which_backup_was_lost(target: datetime | None) -> None:
    history = with_gap()
    l2, l3 = history.named["L2"], history.named["L3"]

    with pytest.raises(ChainGapError) as caught:
        plan_restore(history.stored, database=DB, target=target, now=NOW)

    message = str(caught.value)
    assert f"backup {l3.id} of the chain was lost (no tier read holds it" in message
    assert f"the latest point before the gap is {stamp(l2.restore_point)}" in message


def test_a_target_inside_the_gap_is_not_called_a_time_without_backups() -> None:
    history = with_gap()
    l2, l3 = history.named["L2"], history.named["L3"]

    plan = plan_restore(history.stored, database=DB, target=at(3.5), now=NOW)

    assert plan.restore_point == l2.restore_point
    (note,) = plan.notes
    assert f"backup {l3.id} of the chain was lost" in note
    assert f"the latest point before the gap is {stamp(l2.restore_point)}" in note
    assert "no backup" not in note


def test_a_target_between_two_kept_backups_still_says_none_was_taken() -> None:
    plan = plan_restore(chain().stored, database=DB, target=at(5.5), now=NOW)

    (note,) = plan.notes
    assert "no backup of gantt was taken in between" in note


def test_lost_parents_names_each_backup_whose_parent_no_tier_holds() -> None:
    history = with_gap()

    assert [(b.id, parent) for b, parent in lost_parents(history.stored)] == [
        (history.named["L4"].id, history.named["L3"].id)
    ]
    assert lost_parents(chain().stored) == []
