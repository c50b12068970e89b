"""An attacker who can write one bucket plants and forges manifests and objects.

Nothing they write is restored, replicated, or the reason a genuine object is overwritten or
deleted; every planted manifest is reported by tier and key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupflow.backup import clean_interrupted
from backupflow.catalog import Catalog, manifest_key, object_key
from backupflow.config import Settings
from backupflow.errors import CatalogError, ForeignManifestError, NoBackupError
from backupflow.filesets import Member
from backupflow.keys import generate_keys
from backupflow.models import BackupKind, Category, Manifest, new_backup_id
from backupflow.restore import load_plan
from backupflow.retention import policy_for, prune_tier
from backupflow.storage import MemoryStorage, Tier, open_tiers
from backupflow.storage.base import get_bytes, put_bytes
from backupflow.tiers import locate, replicate
from tests.support.chain import content_digest, restore, take_backup
from tests.support.filesets import SETS, files_engine, store
from tests.support.forge import make_db, plant_signed, plant_unsigned, stored_digest
from tests.support.keys import KEYRING

ATTACKER = generate_keys().keyring()


@pytest.fixture
def world(settings: Settings) -> tuple[list[Tier], Manifest]:
    """A genuine full backup of the live database in all three tiers."""
    make_db(settings.database.sqlite_path)
    tiers = open_tiers(settings)
    return tiers, take_backup(settings, BackupKind.FULL, tiers)


def _digests(tiers: list[Tier], manifest: Manifest) -> dict[tuple[str, str], str]:
    return {
        (t.name, o.key): stored_digest(t.storage, o.key) for t in tiers for o in manifest.objects
    }


def _newer(manifest: Manifest, **changes: object) -> Manifest:
    """A twin of ``manifest`` one second later under a new id (the attacker's)."""
    later = manifest.restore_point + timedelta(seconds=1)
    data = json.loads(manifest.to_json())
    data.update(
        id=new_backup_id(BackupKind.FULL, later),
        restore_point=later.isoformat(),
        started_at=later.isoformat(),
        **changes,
    )
    return Manifest.model_validate(data)


def test_planted_manifest_naming_genuine_data_with_another_size_overwrites_nothing(
    settings: Settings, world: tuple[list[Tier], Manifest], tmp_path: Path
) -> None:
    tiers, genuine = world
    primary, secondary, dr = tiers
    before = _digests(tiers, genuine)
    data = genuine.object("data")
    bigger = data.model_copy(update={"size": data.size + 1000, "sha256": "0" * 64})
    # A newer backup of the attacker's naming the genuine data key, unsigned and signed by them.
    twin = _newer(genuine, objects=[json.loads(bigger.model_dump_json())])
    planted = [
        plant_unsigned(secondary.storage, twin),
        plant_signed(secondary.storage, _newer(twin), ATTACKER),
    ]
    # And the genuine manifest's own key in the secondary tier, replaced with a forgery.
    forged_own = genuine.model_copy(update={"objects": (bigger,)})
    plant_signed(secondary.storage, forged_own, ATTACKER, key=manifest_key(genuine))

    report = replicate(tiers, "database", "gantt", chunk_bytes=1 << 16)

    assert _digests(tiers, genuine) == before  # not one genuine object overwritten
    assert any(planted[0] in p and "unsigned manifest" in p for p in report.problems)
    assert any(planted[1] in p and "no trusted key" in p for p in report.problems)
    assert ("secondary" in {dest for _id, _src, dest in report.copied}) or report.problems
    # The genuine backup still restores, from every tier and from "auto".
    for only in ([primary], [dr], tiers):
        _plan, outcome = restore(
            settings, None, tmp_path / f"r-{len(only)}-{only[0].name}.db", tiers=only
        )
        assert content_digest(outcome.target) == content_digest(settings.database.sqlite_path)
    # Replication healed the secondary's manifest (the genuine, signed one is back).
    assert Catalog(secondary.storage, KEYRING).load_key(manifest_key(genuine)) == genuine


def test_prune_of_an_expired_planted_manifest_deletes_nothing_genuine(
    settings: Settings, world: tuple[list[Tier], Manifest]
) -> None:
    tiers, genuine = world
    primary = tiers[0]
    old = _newer(genuine)
    old = Manifest.model_validate(
        {
            **json.loads(old.to_json()),
            "restore_point": "2020-01-01T00:00:00Z",
            "started_at": "2020-01-01T00:00:00Z",
            "finished_at": "2020-01-01T00:00:00Z",
            "id": new_backup_id(BackupKind.FULL, datetime(2020, 1, 1, tzinfo=UTC)),
        }
    )
    plant_unsigned(primary.storage, old)
    plant_signed(primary.storage, _newer(old), ATTACKER)
    stranger = "database/gantt/2020-01-01/not-ours.bin"
    put_bytes(primary.storage, stranger, b"someone else's object")
    before = _digests([primary], genuine)

    plan, report = prune_tier(
        primary,
        Category.DATABASE,
        "gantt",
        policy_for(settings, "primary", Category.DATABASE),
        now=datetime.now(UTC) + timedelta(days=1),
        dry_run=False,
    )
    assert report is not None and report.deleted == [] and report.failed == []
    assert [d.backup.id for d in plan.decisions] == [genuine.id]  # foreign never planned
    removed = clean_interrupted(
        primary.storage,
        Category.DATABASE,
        "gantt",
        now=datetime.now(UTC) + timedelta(days=400),
        grace=timedelta(0),
    )
    assert removed == []  # a key that is not named as ours is not ours to delete
    assert _digests([primary], genuine) == before
    assert get_bytes(primary.storage, stranger) == b"someone else's object"


def test_an_orphan_named_as_ours_is_removed_after_the_grace_period(
    world: tuple[list[Tier], Manifest],
) -> None:
    tiers, genuine = world
    primary = tiers[0]
    moment = datetime.now(UTC)
    orphan = object_key(
        Category.DATABASE, "gantt", moment, new_backup_id(BackupKind.FULL, moment), ".data.zst.age"
    )
    put_bytes(primary.storage, orphan, b"half a backup")
    removed = clean_interrupted(
        primary.storage,
        Category.DATABASE,
        "gantt",
        now=moment + timedelta(hours=2),
        grace=timedelta(hours=1),
    )
    assert removed == [orphan]
    assert all(primary.storage.stat(o.key).size == o.size for o in genuine.objects)


def test_a_forged_config_backup_with_consistent_hashes_is_never_restored(tmp_path: Path) -> None:
    """Signed by the attacker's key, or not signed at all: no backup, nothing restored."""
    storage = MemoryStorage("primary")
    members = [
        Member(".env", "file", 0o600, 0.0, size=5, sha256=hashlib.sha256(b"EVIL=").hexdigest())
    ]
    forged = store(storage, "tar", members, data={".env": b"EVIL="})
    name, category = SETS["tar"]
    # Re-sign it with the attacker's key, then also leave an unsigned copy of it.
    plant_signed(storage, forged, ATTACKER)
    with pytest.raises(NoBackupError):
        load_plan(
            [Tier("primary", storage, KEYRING)],
            files_engine(name),
            name,
            None,
            datetime.now(UTC),
            category,
        )
    plant_unsigned(storage, forged)
    with pytest.raises(NoBackupError):
        load_plan(
            [Tier("primary", storage, KEYRING)],
            files_engine(name),
            name,
            None,
            datetime.now(UTC),
            category,
        )
    holdings = locate([Tier("primary", storage, KEYRING)], category.value, name)
    assert holdings.entries == {}
    assert any("unsigned manifest" in p for p in holdings.problems)


def test_a_genuine_manifest_copied_into_another_series_is_foreign(
    world: tuple[list[Tier], Manifest],
) -> None:
    tiers, genuine = world
    primary = tiers[0]
    raw = get_bytes(primary.storage, manifest_key(genuine))
    elsewhere = manifest_key(genuine).replace("database/gantt/", "database/billing/")
    put_bytes(primary.storage, elsewhere, raw)
    holdings = locate([primary], "database", "billing")
    assert holdings.entries == {}
    assert any(elsewhere in p and "belongs elsewhere" in p for p in holdings.problems)


def test_a_signed_manifest_naming_another_backups_keys_is_foreign(
    world: tuple[list[Tier], Manifest],
) -> None:
    """Even signed by a trusted key (a bug, a leaked key): keys must be the backup's own."""
    tiers, genuine = world
    primary = tiers[0]
    thief = _newer(genuine)  # new id, but objects still name the genuine backup's keys
    with pytest.raises(CatalogError, match="not a key of that backup"):
        Catalog(primary.storage, KEYRING).write(thief)
    key = plant_signed(primary.storage, thief, KEYRING)
    with pytest.raises(ForeignManifestError, match="not its backup's own"):
        Catalog(primary.storage, KEYRING).load_key(key)
    holdings = locate([primary], "database", "gantt")
    assert list(holdings.entries) == [genuine.id]


def test_a_tampered_manifest_is_foreign(
    world: tuple[list[Tier], Manifest], settings: Settings, tmp_path: Path
) -> None:
    tiers, genuine = world
    primary = tiers[0]
    key = manifest_key(genuine)
    envelope = json.loads(get_bytes(primary.storage, key))
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["notes"] = ["changed by the attacker"]
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    put_bytes(primary.storage, key, json.dumps(envelope).encode())
    with pytest.raises(ForeignManifestError, match="tampered"):
        Catalog(primary.storage, KEYRING).load_key(key)
    # The other tiers' manifests still restore it (every object checked against them).
    _plan, outcome = restore(settings, None, tmp_path / "r.db", tiers=tiers)
    assert content_digest(outcome.target) == content_digest(settings.database.sqlite_path)
    holdings = locate(tiers, "database", "gantt")
    assert holdings.tier_names(genuine.id) == ["secondary", "dr"]
    assert any(key in p and "tampered" in p for p in holdings.problems)


def test_replication_reports_a_conflict_and_leaves_a_differing_object(
    world: tuple[list[Tier], Manifest],
) -> None:
    """The DR tier lacks the manifest, and holds other bytes under the backup's data key."""
    tiers, genuine = world
    dr = tiers[2]
    dr.storage.delete(manifest_key(genuine))
    data = genuine.object("data")
    planted = bytes(data.size)  # the same size, other content
    put_bytes(dr.storage, data.key, planted)

    report = replicate(tiers, "database", "gantt", chunk_bytes=1 << 16)

    assert report.copied == []
    assert any("conflict" in p and data.key in p for p in report.problems)
    assert get_bytes(dr.storage, data.key) == planted  # left as it is
    assert Catalog(dr.storage, KEYRING).entries(Category.DATABASE, "gantt") == []


def test_a_same_size_object_at_a_content_key_is_a_conflict_not_a_copy() -> None:
    """Shared content's key names its plaintext, but a bucket writer can put other bytes of
    the same size there: replication reads it in full before it takes it as copied."""
    import hashlib

    from backupflow.catalog import CONTENT_ROLE
    from backupflow.models import StoredObject
    from backupflow.storage import MemoryStorage
    from backupflow.tiers import ReplicationConflictError, copy_object

    body = b"an upload's bytes" * 100
    digest = hashlib.sha256(body).hexdigest()
    record = StoredObject(
        role=f"{CONTENT_ROLE}{digest}", key=f"files/uploads/content/{digest[:2]}/{digest}",
        codec="none", size=len(body), sha256=digest, raw_size=len(body), raw_sha256=digest,
    )  # fmt: skip
    source, dest = MemoryStorage("primary"), MemoryStorage("dr")
    source.put(record.key, [body])
    planted = bytes(len(body))
    dest.put(record.key, [planted])

    with pytest.raises(ReplicationConflictError, match="conflict"):
        copy_object(source, dest, record, chunk_bytes=1 << 16, write_once=False)
    assert get_bytes(dest, record.key) == planted  # left as it is

    dest.delete(record.key)
    copy_object(source, dest, record, chunk_bytes=1 << 16, write_once=False)
    assert get_bytes(dest, record.key) == body
    copy_object(source, dest, record, chunk_bytes=1 << 16, write_once=False)  # held: kept


def test_generated_keys_never_show_their_secrets_in_a_repr() -> None:
    from backupflow.keys import generate_keys

    keys = generate_keys()
    text = repr(keys)
    assert keys.identity not in text and keys.signing_key not in text
    assert keys.recipient in text and keys.verify_key in text
