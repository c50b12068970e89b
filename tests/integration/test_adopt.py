"""Backups written before manifests were signed: ignored (and said so) until adopted.  Adopting
is bound to the repository's key record: only manifests older than it, only the list the
operator confirmed, never in a series that has signed backups; it reads every object in full
first, a tampered one is not adopted, and adopted manifests say so."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupflow.adopt import AdoptReport, adopt_series, plan_adoption
from backupflow.catalog import Catalog, manifest_key
from backupflow.config import Settings
from backupflow.errors import CatalogError, MissingKeyError
from backupflow.keys import Keyring, generate_keys
from backupflow.models import BackupKind, Category, Manifest
from backupflow.rekey import write_key_record
from backupflow.storage import Tier, open_tiers
from backupflow.storage.base import get_bytes, put_bytes
from backupflow.tiers import locate
from tests.support.chain import content_digest, restore, snapshot_copy, take_backup
from tests.support.forge import make_db, with_keys
from tests.support.keys import KEYRING, TEST_KEYS


def _unsign(tiers: list[Tier], manifest: Manifest) -> None:
    """Rewrite a backup's manifest in every tier as format 1 wrote it: plain, unsigned JSON."""
    for tier in tiers:
        envelope = json.loads(get_bytes(tier.storage, manifest_key(manifest)))
        data = json.loads(base64.b64decode(envelope["payload"]))
        data["format_version"] = 1
        for obj in data["objects"]:
            del obj["encryption"], obj["recipients"]
        put_bytes(tier.storage, manifest_key(manifest), json.dumps(data, indent=1).encode())


@pytest.fixture
def legacy(settings: Settings, tmp_path: Path) -> tuple[Settings, list[Manifest], Path]:
    """A full and a differential as an earlier backupflow left them (unencrypted, unsigned)."""
    plain = with_keys(settings, signer=TEST_KEYS, verify=[TEST_KEYS], encrypt=False)
    live = settings.database.sqlite_path
    make_db(live)
    full = take_backup(plain, BackupKind.FULL)
    first = snapshot_copy(live, tmp_path / "first.db")
    conn = sqlite3.connect(live)
    with conn:
        conn.execute("UPDATE t SET v = 'later' WHERE id % 7 = 0")
    conn.close()
    diff = take_backup(plain, BackupKind.DIFF)
    tiers = open_tiers(settings)
    for manifest in (full, diff):
        assert all(o.encryption is None for o in manifest.objects)
        _unsign(tiers, manifest)
    return settings, [full, diff], first


def _key_records(tiers: list[Tier], created: datetime) -> None:
    """What `backupflow key init` leaves in every tier."""
    for tier in tiers:
        assert write_key_record(tier.storage, KEYRING, created)


def _adopt(tiers: list[Tier], **kwargs: object) -> list[AdoptReport]:
    """A dry run, then adopting exactly its list."""
    plan = plan_adoption(tiers, "database", "gantt", KEYRING)
    return adopt_series(tiers, "database", "gantt", KEYRING, confirm=plan.digest, **kwargs).reports


def test_unsigned_backups_are_ignored_and_nothing_suggests_adopting_them(
    legacy: tuple[Settings, list[Manifest], Path],
) -> None:
    settings, _backups, _first = legacy
    holdings = locate(open_tiers(settings), "database", "gantt")
    assert holdings.entries == {}
    assert len(holdings.problems) == 6  # two backups, three tiers, each named
    assert all("unsigned manifest" in p for p in holdings.problems)
    assert not any("adopt" in p for p in holdings.problems)


def test_adopt_reads_everything_then_signs_once_says_so_and_backups_restore(
    legacy: tuple[Settings, list[Manifest], Path], tmp_path: Path
) -> None:
    settings, backups, first = legacy
    tiers = open_tiers(settings)
    _key_records(tiers, datetime.now(UTC))
    plan = plan_adoption(tiers, "database", "gantt", KEYRING)
    assert len(plan.candidates) == 6 and all(r.ok for r in plan.reports)
    for tier in tiers:  # the dry run signed nothing
        assert Catalog(tier.storage, KEYRING).scan(Category.DATABASE, "gantt").manifests == ()
    seen: list[tuple[str, str]] = []
    done = adopt_series(
        tiers,
        "database",
        "gantt",
        KEYRING,
        confirm=plan.digest,
        on_adopted=lambda t, m: seen.append((t, m.id)),
    )
    assert all(r.ok for r in done.reports)
    assert sorted(seen) == sorted((t.name, m.id) for t in tiers for m in backups)
    assert KEYRING.signer is not None
    for tier in tiers:
        for manifest in backups:
            signed = Catalog(tier.storage, KEYRING).load_key(manifest_key(manifest))
            assert signed.format_version == 2
            assert signed.objects == manifest.objects  # still unencrypted, same checksums
            assert signed.adopted is not None
            assert signed.adopted.by == KEYRING.signer.key_id
            assert signed.adopted.confirmed == plan.digest
            assert signed.adopted.cutoff == plan.cutoff
    again = plan_adoption(tiers, "database", "gantt", KEYRING)
    assert again.candidates == []
    assert all(len(r.skipped) == 2 and r.ok for r in again.reports)
    _plan, outcome = restore(settings, backups[0].restore_point, tmp_path / "a.db")
    assert content_digest(outcome.target) == content_digest(first)
    _plan, outcome = restore(settings, None, tmp_path / "b.db")
    assert content_digest(outcome.target) == content_digest(settings.database.sqlite_path)


def test_a_manifest_newer_than_the_key_record_is_never_adopted(
    legacy: tuple[Settings, list[Manifest], Path],
) -> None:
    settings, backups, _first = legacy
    tiers = open_tiers(settings)
    written = backups[0].finished_at.timestamp()
    for tier in tiers:  # as an earlier backupflow left them: stored when the full was made
        for path in Path(str(tier.storage.name).split(":", 1)[1]).rglob("*"):
            os.utime(path, (written, written))
    cutoff = backups[0].finished_at + timedelta(milliseconds=1)
    assert backups[1].restore_point > cutoff
    _key_records(tiers, cutoff)  # the keys came between the full and the diff
    plan = plan_adoption(tiers, "database", "gantt", KEYRING)
    assert sorted({c.manifest.id for c in plan.candidates}) == [backups[0].id], plan.reports
    for report in plan.reports:
        assert len(report.problems) == 1
        assert backups[1].id in report.problems[0]
        assert "after this repository's first key" in report.problems[0]
    done = adopt_series(tiers, "database", "gantt", KEYRING, confirm=plan.digest)
    assert all(r.adopted == [f"{r.tier}/{backups[0].id}"] for r in done.reports)
    assert locate(tiers, "database", "gantt").tier_names(backups[1].id) == []


def test_a_manifest_stored_after_the_key_record_is_never_adopted(
    legacy: tuple[Settings, list[Manifest], Path],
) -> None:
    """A planted manifest claiming an old restore point: its tier stored it too late."""
    settings, backups, _first = legacy
    tiers = open_tiers(settings)
    _key_records(tiers, datetime.now(UTC))
    dr = tiers[2]
    key = manifest_key(backups[1])
    planted = get_bytes(dr.storage, key).replace(b'"notes": []', b'"notes": ["mine"]')
    put_bytes(dr.storage, key, planted)
    plan = plan_adoption(tiers, "database", "gantt", KEYRING)
    by_tier = {r.tier: r for r in plan.reports}
    assert len(by_tier["dr"].problems) == 1 and "was stored after" in by_tier["dr"].problems[0]
    assert f"dr/{backups[1].id}" not in " ".join(plan.lines)


def test_only_the_confirmed_list_is_adopted(
    legacy: tuple[Settings, list[Manifest], Path],
) -> None:
    settings, backups, _first = legacy
    tiers = open_tiers(settings)
    _key_records(tiers, datetime.now(UTC) + timedelta(hours=1))
    plan = plan_adoption(tiers, "database", "gantt", KEYRING)
    # After the dry run, one manifest changes (its folder's times set back, so it still
    # qualifies): the list is no longer the one the operator confirmed.
    primary = tiers[0]
    key = manifest_key(backups[1])
    put_bytes(
        primary.storage,
        key,
        get_bytes(primary.storage, key).replace(b'"notes": []', b'"notes": ["planted"]'),
    )
    with pytest.raises(CatalogError, match="not the one confirmed"):
        adopt_series(tiers, "database", "gantt", KEYRING, confirm=plan.digest)
    with pytest.raises(CatalogError, match="not the one confirmed"):
        adopt_series(tiers, "database", "gantt", KEYRING, confirm="0" * 20)
    assert locate(tiers, "database", "gantt").entries == {}  # nothing was signed


def test_a_series_with_signed_backups_refuses_adopt(
    legacy: tuple[Settings, list[Manifest], Path],
) -> None:
    settings, backups, _first = legacy
    tiers = open_tiers(settings)
    _key_records(tiers, datetime.now(UTC) + timedelta(hours=1))
    native = backups[0].model_copy(update={"format_version": 2})
    for tier in tiers:  # signed when it was written, as every backup since the keys is
        Catalog(tier.storage, KEYRING).write(native)
    plan = plan_adoption(tiers, "database", "gantt", KEYRING)
    assert plan.candidates == []
    for report in plan.reports:
        assert "already holds backups signed when they were written" in report.problems[0]
        assert native.id in report.problems[0]
    assert adopt_series(tiers, "database", "gantt", KEYRING, confirm=plan.digest).candidates == []
    assert locate(tiers, "database", "gantt").tier_names(backups[1].id) == []


def test_without_a_key_record_nothing_is_adopted(
    legacy: tuple[Settings, list[Manifest], Path],
) -> None:
    settings, _backups, _first = legacy
    tiers = open_tiers(settings)
    plan = plan_adoption(tiers, "database", "gantt", KEYRING)
    assert plan.candidates == [] and plan.cutoff is None
    assert all("no tier holds a key record" in r.problems[0] for r in plan.reports)
    # A key record someone else signed does not count.
    other = generate_keys()
    for tier in tiers:
        write_key_record(tier.storage, other.keyring(), datetime.now(UTC))
    assert plan_adoption(tiers, "database", "gantt", KEYRING).cutoff is None


def test_a_tampered_unsigned_backup_is_not_adopted(
    legacy: tuple[Settings, list[Manifest], Path],
) -> None:
    settings, backups, _first = legacy
    tiers = open_tiers(settings)
    _key_records(tiers, datetime.now(UTC) + timedelta(hours=1))
    dr = tiers[2]
    data = backups[1].object("data")
    stored = bytearray(get_bytes(dr.storage, data.key))
    stored[-1] ^= 0xFF
    put_bytes(dr.storage, data.key, bytes(stored))
    reports = _adopt(tiers)
    by_tier = {r.tier: r for r in reports}
    assert by_tier["primary"].ok and len(by_tier["primary"].adopted) == 2
    assert by_tier["dr"].adopted == [f"dr/{backups[0].id}"]
    assert len(by_tier["dr"].problems) == 1
    assert backups[1].id in by_tier["dr"].problems[0] and data.key in by_tier["dr"].problems[0]
    holdings = locate(tiers, "database", "gantt")
    assert holdings.tier_names(backups[1].id) == ["primary", "secondary"]


def test_adopt_needs_the_signing_key(legacy: tuple[Settings, list[Manifest], Path]) -> None:
    settings, _backups, _first = legacy
    with pytest.raises(MissingKeyError, match="no signing key"):
        adopt_series(open_tiers(settings), "database", "gantt", Keyring(), confirm="0" * 20)
