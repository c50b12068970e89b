"""Backups written before manifests were signed: ignored (and said so) until adopted; adopting
reads every object in full first, and a tampered one is not adopted."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest

from backupflow.adopt import adopt_series
from backupflow.catalog import Catalog, manifest_key
from backupflow.config import Settings
from backupflow.errors import MissingKeyError
from backupflow.keys import Keyring
from backupflow.models import BackupKind, Manifest
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


def test_unsigned_backups_are_ignored_with_a_pointer_to_adopt(
    legacy: tuple[Settings, list[Manifest], Path],
) -> None:
    settings, _backups, _first = legacy
    holdings = locate(open_tiers(settings), "database", "gantt")
    assert holdings.entries == {}
    assert len(holdings.problems) == 6  # two backups, three tiers, each named
    assert all("unsigned manifest" in p and "backupflow adopt" in p for p in holdings.problems)


def test_adopt_reads_everything_then_signs_once_and_backups_restore(
    legacy: tuple[Settings, list[Manifest], Path], tmp_path: Path
) -> None:
    settings, backups, first = legacy
    tiers = open_tiers(settings)
    seen: list[tuple[str, str]] = []
    reports = adopt_series(
        tiers, "database", "gantt", KEYRING, on_adopted=lambda t, m: seen.append((t, m.id))
    )
    assert all(r.ok for r in reports)
    assert sorted(seen) == sorted((t.name, m.id) for t in tiers for m in backups)
    for tier in tiers:
        for manifest in backups:
            signed = Catalog(tier.storage, KEYRING).load_key(manifest_key(manifest))
            assert signed.format_version == 2
            assert signed.objects == manifest.objects  # still unencrypted, same checksums
    again = adopt_series(tiers, "database", "gantt", KEYRING)
    assert [len(r.adopted) for r in again] == [0, 0, 0]
    assert all(len(r.skipped) == 2 for r in again)
    _plan, outcome = restore(settings, backups[0].restore_point, tmp_path / "a.db")
    assert content_digest(outcome.target) == content_digest(first)
    _plan, outcome = restore(settings, None, tmp_path / "b.db")
    assert content_digest(outcome.target) == content_digest(settings.database.sqlite_path)


def test_a_tampered_unsigned_backup_is_not_adopted(
    legacy: tuple[Settings, list[Manifest], Path],
) -> None:
    settings, backups, _first = legacy
    tiers = open_tiers(settings)
    dr = tiers[2]
    data = backups[1].object("data")
    stored = bytearray(get_bytes(dr.storage, data.key))
    stored[-1] ^= 0xFF
    put_bytes(dr.storage, data.key, bytes(stored))
    reports = adopt_series(tiers, "database", "gantt", KEYRING)
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
        adopt_series(open_tiers(settings), "database", "gantt", Keyring())
