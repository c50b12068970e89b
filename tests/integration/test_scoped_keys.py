"""Scoped trust: each verify key vouches only for the kind of record, and the series, it was
made for.  PostgreSQL's OS user holds a WAL key, so whoever reads it (a database superuser can)
forges nothing but that cluster's WAL records; replication and pruning need no signing key."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from backupflow.catalog import Catalog, manifest_key
from backupflow.config import Settings
from backupflow.envelope import open_envelope, seal
from backupflow.errors import ConfigError, ForeignManifestError, MissingKeyError
from backupflow.keys import Keyring, Scope, generate_keys, parse_verify_keys
from backupflow.maintenance import prune_series, replicate_series
from backupflow.models import BackupKind, Category
from backupflow.rekey import key_records, write_key_record
from backupflow.storage import MemoryStorage, open_tiers
from backupflow.storage.base import get_bytes, put_bytes
from backupflow.tiers import locate
from tests.support.chain import content_digest, restore, take_backup
from tests.support.forge import make_db

KEYS = generate_keys(wal=True)
#: What `backupflow key init` configures for a PostgreSQL installation of database "gantt".
TRUST = KEYS.verify_entries(["database/gantt"])
RESTORE_HOST = Keyring(
    identities=KEYS.keyring().identities, verifiers=tuple(parse_verify_keys(TRUST))
)
#: What PostgreSQL's OS user holds, as a thief would use it: its WAL key, to sign anything.
assert KEYS.keyring().wal_signer is not None
STOLEN_WAL_KEY = Keyring(signer=KEYS.keyring().wal_signer, verifiers=())


def _manifest_payload() -> bytes:
    """A plausible manifest for the config file set (a thief can write any)."""
    return (
        b'{"format": "backupflow-manifest", "format_version": 2, "id": '
        b'"20261207T010203Z-full-abcdef", "category": "config", "database": "config"}'
    )


def test_scopes_parse_and_bad_ones_are_one_sentence() -> None:
    manifest, wal = parse_verify_keys(TRUST)
    assert manifest.scope == Scope(frozenset({"manifest"}))
    assert wal.scope == Scope(frozenset({"wal"}), ("database/gantt",))
    assert wal.scope.allows("wal", "database/gantt")
    assert not wal.scope.allows("wal", "database/other")
    assert not wal.scope.allows("manifest", "database/gantt")
    assert Scope(series=("config/*",)).allows("manifest", "config/app")
    for bad in ("kinds=everything", "series=../x", "kinds=wal kinds=wal", "colour=red"):
        with pytest.raises(ConfigError, match="scope is kinds="):
            parse_verify_keys([f"{KEYS.verify_key} {bad}"])


def test_the_wal_key_cannot_forge_a_manifest_of_any_series() -> None:
    storage = MemoryStorage()
    for kind in ("manifest", "key"):
        envelope = seal(_manifest_payload(), STOLEN_WAL_KEY, kind=kind)
        with pytest.raises(ForeignManifestError, match="not trusted for manifest records"):
            open_envelope(
                envelope, RESTORE_HOST, source="planted", kind=kind,
                series=None if kind == "key" else "config/config",
            )  # fmt: skip
    # a key record it signed does not count as the repository's either
    assert write_key_record(storage, STOLEN_WAL_KEY, datetime(2020, 1, 1, tzinfo=UTC))
    records, problems = key_records(storage, RESTORE_HOST)
    assert records == [] and "not trusted for manifest records" in problems[0]


def test_the_wal_key_signs_only_its_own_clusters_wal_records() -> None:
    record = b'{"database": "gantt"}'
    own = seal(record, STOLEN_WAL_KEY, kind="wal")
    assert open_envelope(own, RESTORE_HOST, source="w", kind="wal", series="database/gantt")
    with pytest.raises(ForeignManifestError, match="wal records of database/reports"):
        open_envelope(own, RESTORE_HOST, source="w", kind="wal", series="database/reports")
    # WAL records from before they had their own payload type are still WAL records only
    legacy = seal(record, STOLEN_WAL_KEY, kind="manifest")
    assert open_envelope(legacy, RESTORE_HOST, source="w", kind="wal", series="database/gantt")
    with pytest.raises(ForeignManifestError, match="not trusted for manifest records"):
        open_envelope(legacy, RESTORE_HOST, source="w", kind="manifest", series="database/gantt")


def test_the_manifest_key_cannot_sign_wal_records_once_there_is_a_wal_key() -> None:
    worker = Keyring(signer=KEYS.keyring().signer)
    envelope = seal(b'{"database": "gantt"}', worker, kind="wal")
    with pytest.raises(ForeignManifestError, match="not trusted for wal records"):
        open_envelope(envelope, RESTORE_HOST, source="w", kind="wal", series="database/gantt")


def test_a_wal_only_host_cannot_record_a_backup() -> None:
    wal_host = Keyring(wal_signer=KEYS.keyring().wal_signer)
    with pytest.raises(MissingKeyError, match="no signing key"):
        wal_host.require_signer()
    wal_signer = KEYS.keyring().wal_signer
    assert wal_signer is not None
    assert wal_host.require_signer("wal").key_id == wal_signer.key_id


def _scoped(settings: Settings, *, signer: bool) -> Settings:
    crypto = settings.crypto.model_copy(
        update={
            "recipients": [KEYS.recipient],
            "identities": SecretStr(KEYS.identity),
            "signing_key": SecretStr(KEYS.signing_key if signer else ""),
            "verify_keys": TRUST,
        }
    )
    return settings.model_copy(update={"crypto": crypto})


def test_a_forged_manifest_in_a_tier_is_refused_and_the_real_one_restores(
    settings: Settings, tmp_path: Path
) -> None:
    worker = _scoped(settings, signer=True)
    make_db(worker.database.sqlite_path)
    backup = take_backup(worker, BackupKind.FULL)
    tiers = open_tiers(_scoped(settings, signer=False))
    primary = tiers[0]
    key = manifest_key(backup)
    genuine = get_bytes(primary.storage, key)
    payload = open_envelope(genuine, RESTORE_HOST, source="primary", series="database/gantt")
    put_bytes(primary.storage, key, seal(payload, STOLEN_WAL_KEY))
    with pytest.raises(ForeignManifestError, match="not trusted for manifest records"):
        Catalog(primary.storage, primary.keyring).load_key(key)
    holdings = locate(tiers, "database", "gantt")
    assert holdings.tier_names(backup.id) == ["secondary", "dr"]


def test_replicate_and_prune_run_with_no_signing_key(settings: Settings, tmp_path: Path) -> None:
    worker = _scoped(settings, signer=True)
    make_db(worker.database.sqlite_path)
    backup = take_backup(worker, BackupKind.FULL)
    no_signer = _scoped(settings, signer=False)
    tiers = open_tiers(no_signer)
    assert all(t.keyring.signer is None for t in tiers)
    dr = tiers[2]
    Catalog(dr.storage, dr.keyring).delete(backup)
    assert locate(tiers, "database", "gantt").tier_names(backup.id) == ["primary", "secondary"]

    log = logging.getLogger("test")
    report = replicate_series(tiers, Category.DATABASE, "gantt", no_signer, log)
    assert report.ok and report.copied == [(backup.id, "primary", "dr")]
    # the very envelope the worker signed, byte for byte
    key = manifest_key(backup)
    assert get_bytes(dr.storage, key) == get_bytes(tiers[0].storage, key)
    for tier in tiers:
        plan, _report = prune_series(tier, Category.DATABASE, "gantt", no_signer, log)
        assert [b.id for b in plan.kept] == [backup.id]
    _plan, outcome = restore(no_signer, None, tmp_path / "r.db")
    assert content_digest(outcome.target) == content_digest(worker.database.sqlite_path)
