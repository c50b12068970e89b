"""Private deduplication (issue 23): file contents are stored once under keyed content ids,
and a manifest anyone who lists the bucket can read names no plaintext hash of them.

Backups go through the one backup run and are restored through the one restore run, by a
restore host that holds no signing key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

from backupflow.backup_run import FileSetSubject, run_backup
from backupflow.catalog import CONTENT_ROLE, manifest_key
from backupflow.config import FileSetSettings, Settings
from backupflow.models import Category, Manifest
from backupflow.restore_run import run_restore
from backupflow.steps import DirectSteps
from backupflow.storage import Tier, open_tiers
from backupflow.storage.base import get_bytes
from tests.support.filesets import file, folder, store

CONTENT = "uploads/uploads/content/"


def _uploads(settings: Settings, root: Path) -> Settings:
    (root / "uploads").mkdir(parents=True, exist_ok=True)
    uploads = FileSetSettings(root=root, include=["uploads/**"])
    return settings.model_copy(
        update={"files": settings.files.model_copy(update={"uploads": uploads})}
    )


def _primary(settings: Settings) -> Tier:
    return open_tiers(settings, ("primary",))[0]


def _restore_host(tier: Tier) -> Tier:
    """The same tier as a restore host sees it: identities and verify keys, no signing key."""
    return replace(tier, keyring=replace(tier.keyring, signer=None))


def _backup(settings: Settings, tier: Tier) -> Manifest:
    return run_backup(FileSetSubject("uploads", settings), [tier], DirectSteps()).manifest


def _restore(settings: Settings, tier: Tier, manifest: Manifest, into: Path) -> None:
    report = run_restore(
        FileSetSubject("uploads", settings).engine,
        [tier],
        "uploads",
        DirectSteps(),
        target_time=manifest.restore_point,
        into=into,
        category=Category.UPLOADS,
    )
    assert report.outcome is not None


def test_one_file_in_two_backups_is_stored_once_under_a_keyed_id_and_both_restore(
    settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "api"
    settings = _uploads(settings, root)
    tier = _primary(settings)
    photo = os.urandom(70_000)
    (root / "uploads" / "photo.jpg").write_bytes(photo)
    (root / "uploads" / "notes.txt").write_bytes(b"first")
    first = _backup(settings, tier)
    (root / "uploads" / "notes.txt").write_bytes(b"second, longer")
    second = _backup(settings, tier)

    sha = hashlib.sha256(photo).hexdigest()
    content_id = tier.keyring.content_id(sha)
    assert content_id != sha
    records = [next(o for o in m.objects if o.raw_sha256 == content_id) for m in (first, second)]
    assert records[0] == records[1]  # the second backup reuses the first one's object
    assert records[0].role == f"{CONTENT_ROLE}{content_id}"
    assert records[0].key.startswith(f"{CONTENT}{content_id[:2]}/{content_id}")
    assert records[0].raw_digest == "content-id"
    stored = [info.key for info in tier.storage.list(CONTENT)]
    assert len(stored) == 3  # the photo once, each version of the notes once
    assert not any(sha in key for key in stored)

    for manifest in (first, second):
        out = tmp_path / f"out-{manifest.id}"
        _restore(settings, _restore_host(tier), manifest, out)
        assert (out / "uploads" / "photo.jpg").read_bytes() == photo
    assert (tmp_path / f"out-{first.id}" / "uploads" / "notes.txt").read_bytes() == b"first"
    assert (tmp_path / f"out-{second.id}" / "uploads" / "notes.txt").read_bytes() == (
        b"second, longer"
    )


def test_the_manifest_of_an_encrypted_uploads_backup_holds_no_hash_of_its_files(
    settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "api"
    settings = _uploads(settings, root)
    tier = _primary(settings)
    files = {"a.pdf": os.urandom(5_000), "b.pdf": b"a well-known document\n"}
    for name, data in files.items():
        (root / "uploads" / name).write_bytes(data)
    manifest = _backup(settings, tier)

    envelope = get_bytes(tier.storage, manifest_key(manifest))
    payload = base64.b64decode(json.loads(envelope)["payload"])
    keys = " ".join(info.key for info in tier.storage.list(""))
    for data in files.values():
        sha = hashlib.sha256(data).hexdigest()
        assert sha not in payload.decode()
        assert sha not in envelope.decode()
        assert sha not in keys
    assert all(o.encryption is not None for o in manifest.objects)


def test_a_backup_written_before_keyed_ids_still_restores_and_the_next_one_moves_on(
    settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "api"
    settings = _uploads(settings, root)
    tier = _primary(settings)
    data = {"uploads/old.bin": os.urandom(9_000)}
    old = store(
        tier.storage,
        "content",
        [folder("uploads"), file("uploads/old.bin", data["uploads/old.bin"])],
        data=data,
    )
    sha = hashlib.sha256(data["uploads/old.bin"]).hexdigest()
    assert old.object(f"{CONTENT_ROLE}{sha}").raw_digest is None  # the old layout

    out = tmp_path / "out-old"
    _restore(settings, _restore_host(tier), old, out)
    assert (out / "uploads" / "old.bin").read_bytes() == data["uploads/old.bin"]

    (root / "uploads" / "old.bin").write_bytes(data["uploads/old.bin"])
    new = _backup(settings, tier)
    record = next(o for o in new.objects if o.role.startswith(CONTENT_ROLE))
    assert sha not in record.key and sha not in record.role  # stored again, under its id
    out = tmp_path / "out-new"
    _restore(settings, _restore_host(tier), new, out)
    assert (out / "uploads" / "old.bin").read_bytes() == data["uploads/old.bin"]
