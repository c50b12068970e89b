"""Encryption on by default: what a bucket reader sees, tampering, wrong and missing keys,
key rotation, and the checks made before anything is dumped."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from backupflow.backup import check_backup_keys
from backupflow.catalog import manifest_key
from backupflow.config import Settings
from backupflow.crypto import AGE_FORMAT
from backupflow.errors import MissingKeyError, NoBackupError
from backupflow.keys import Keyring, generate_keys, key_id, load_keyring
from backupflow.models import BackupKind
from backupflow.storage import open_tiers
from backupflow.storage.base import get_bytes, put_bytes
from tests.support.chain import content_digest, restore, snapshot_copy, take_backup
from tests.support.forge import make_db, with_keys
from tests.support.keys import TEST_KEYS


def _one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith(".")
    assert "AGE-SECRET-KEY" not in message and "BACKUPFLOW-SIGNING-KEY-1" not in message


def test_every_object_is_age_encrypted_after_compression(settings: Settings) -> None:
    make_db(settings.database.sqlite_path)
    manifest = take_backup(settings, BackupKind.FULL)
    tiers = open_tiers(settings)
    for obj in manifest.objects:
        assert obj.key.endswith(".zst.age") or obj.key.endswith(".age")
        assert obj.encryption == AGE_FORMAT
        assert obj.recipients == (key_id(TEST_KEYS.recipient),)
        for tier in tiers:
            stored = get_bytes(tier.storage, obj.key)
            assert stored.startswith(b"age-encryption.org/v1\n")
            assert b"row 1" not in stored and b"SQLite format 3" not in stored
    raw = get_bytes(tiers[0].storage, manifest_key(manifest))
    assert b'"signatures"' in raw and b"format_version" not in raw  # the payload is encoded


def test_a_tampered_encrypted_object_is_detected_and_the_next_tier_used(
    settings: Settings, tmp_path: Path
) -> None:
    make_db(settings.database.sqlite_path)
    manifest = take_backup(settings, BackupKind.FULL)
    primary = open_tiers(settings)[0]
    data = manifest.object("data")
    stored = bytearray(get_bytes(primary.storage, data.key))
    stored[len(stored) // 2] ^= 0x01  # one bit, same size
    put_bytes(primary.storage, data.key, bytes(stored))
    _plan, outcome = restore(settings, None, tmp_path / "copy.db")
    assert outcome.tiers_used == {manifest.id: "secondary"}
    assert any(data.key in p and "primary" in p for p in outcome.problems)
    assert content_digest(outcome.target) == content_digest(settings.database.sqlite_path)


@pytest.mark.parametrize("holds", ["another key", "no key"])
def test_a_wrong_or_missing_identity_is_one_sentence_naming_the_key_id(
    settings: Settings, tmp_path: Path, holds: str
) -> None:
    make_db(settings.database.sqlite_path)
    take_backup(settings, BackupKind.FULL)
    other = generate_keys()
    reader = with_keys(
        settings, identities=[other] if holds == "another key" else [], verify=[TEST_KEYS]
    )
    with pytest.raises(MissingKeyError) as caught:
        restore(reader, None, tmp_path / "copy.db")
    message = str(caught.value)
    _one_sentence(message)
    assert key_id(TEST_KEYS.recipient) in message
    assert not (tmp_path / "copy.db").exists()


def test_rotation_round_trip_restores_points_from_both_keys(
    settings: Settings, tmp_path: Path
) -> None:
    old, new = generate_keys(), generate_keys()
    live = settings.database.sqlite_path
    make_db(live)
    before = with_keys(settings, recipients=[old], identities=[old], signer=old, verify=[old])
    first = take_backup(before, BackupKind.FULL)
    at_first = snapshot_copy(live, tmp_path / "first.db")
    conn = sqlite3.connect(live)
    with conn:
        conn.execute("UPDATE t SET v = 'after rotation' WHERE id % 3 = 0")
    conn.close()
    # Rotate: new backups use the new key; the old identity and verify key are kept.
    after = with_keys(
        settings, recipients=[new], identities=[old, new], signer=new, verify=[old, new]
    )
    second = take_backup(after, BackupKind.DIFF)  # reads its parent, encrypted to the old key
    assert {r for o in second.objects for r in o.recipients} == {key_id(new.recipient)}

    _plan, outcome = restore(after, first.restore_point, tmp_path / "a.db")
    assert content_digest(outcome.target) == content_digest(at_first)
    _plan, outcome = restore(after, None, tmp_path / "b.db")
    assert content_digest(outcome.target) == content_digest(live)
    # Without the old identity the old point names the old key id.
    forgetful = with_keys(settings, identities=[new], verify=[old, new])
    with pytest.raises(MissingKeyError, match=key_id(old.recipient)):
        restore(forgetful, first.restore_point + timedelta(milliseconds=1), tmp_path / "c.db")


def test_a_backup_without_recipients_or_signing_key_fails_before_dumping(
    settings: Settings,
) -> None:
    keys = generate_keys()
    no_recipient = load_keyring(with_keys(settings, signer=keys).crypto)
    with pytest.raises(MissingKeyError, match="no age recipient") as caught:
        check_backup_keys(no_recipient)
    _one_sentence(str(caught.value))
    no_signer = load_keyring(with_keys(settings, recipients=[keys]).crypto)
    with pytest.raises(MissingKeyError, match="no signing key") as caught:
        check_backup_keys(no_signer)
    _one_sentence(str(caught.value))
    check_backup_keys(load_keyring(with_keys(settings, signer=keys, encrypt=False).crypto))
    check_backup_keys(Keyring(recipients=(keys.recipient,), signer=keys.keyring().signer))


def test_a_differential_on_a_worker_without_the_identity_says_what_it_needs(
    settings: Settings,
) -> None:
    make_db(settings.database.sqlite_path)
    take_backup(settings, BackupKind.FULL)
    worker = with_keys(settings, recipients=[TEST_KEYS], signer=TEST_KEYS, verify=[TEST_KEYS])
    with pytest.raises(MissingKeyError) as caught:
        take_backup(worker, BackupKind.DIFF)
    message = str(caught.value)
    _one_sentence(message)
    assert "parent backup" in message and "this worker needs that identity" in message
    assert key_id(TEST_KEYS.recipient) in message


def test_backups_signed_by_an_untrusted_key_are_named_not_called_missing(
    settings: Settings, tmp_path: Path
) -> None:
    """A restore host whose verify keys are wrong (a typo, a missed rotation) must not be
    told "there are no backups": that sends the operator the wrong way in a disaster."""
    make_db(settings.database.sqlite_path)
    take_backup(settings, BackupKind.FULL)
    stranger = generate_keys()
    reader = with_keys(settings, identities=[TEST_KEYS], verify=[stranger])
    with pytest.raises(NoBackupError) as caught:
        restore(reader, None, tmp_path / "copy.db")
    message = str(caught.value)
    assert "foreign manifest" in message and "signed by no trusted key" in message
    assert key_id(stranger.verify_key) in message  # what this host trusts instead
    assert not (tmp_path / "copy.db").exists()
