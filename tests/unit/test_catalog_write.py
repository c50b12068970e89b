"""Recording a backup: every object must be stored at its recorded size, whether the catalog
asks per object (a few) or lists their folders (many: thousands of shared contents)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from backupflow.catalog import CONTENT_ROLE, Catalog, manifest_key
from backupflow.errors import CatalogError, ObjectNotFoundError
from backupflow.filesets import content_key
from backupflow.models import BackupKind, Category, Manifest, StoredObject, new_backup_id
from backupflow.storage import MemoryStorage
from backupflow.storage.base import put_bytes
from tests.support.keys import KEYRING


def _uploads_backup(storage: MemoryStorage, count: int) -> Manifest:
    started = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    objects = []
    for n in range(count):
        body = f"file {n}".encode()
        ident = hashlib.sha256(body).hexdigest()
        key = content_key(Category.UPLOADS, "uploads", ident, "")
        put_bytes(storage, key, body)
        objects.append(
            StoredObject(
                role=f"{CONTENT_ROLE}{ident}",
                key=key,
                codec="none",
                size=len(body),
                sha256=ident,
                raw_size=len(body),
                raw_sha256=ident,
            )
        )
    return Manifest(
        id=new_backup_id(BackupKind.FULL, started),
        category=Category.UPLOADS,
        kind=BackupKind.FULL,
        engine="files",
        database="uploads",
        started_at=started,
        finished_at=started,
        restore_point=started,
        objects=tuple(objects),
    )


@pytest.mark.parametrize("count", [3, 300])
def test_a_backup_is_recorded_only_when_every_object_has_its_size(count: int) -> None:
    storage = MemoryStorage()
    manifest = _uploads_backup(storage, count)
    catalog = Catalog(storage, KEYRING)
    short = manifest.objects[count // 2]
    put_bytes(storage, short.key, b"x")  # another size than recorded
    with pytest.raises(CatalogError, match=f"{short.key} is 1 bytes, not {short.size}"):
        catalog.write(manifest)
    storage.delete(short.key)
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        catalog.write(manifest)
    assert manifest_key(manifest) not in {i.key for i in storage.list("")}
    put_bytes(storage, short.key, f"file {count // 2}".encode())
    assert catalog.write(manifest) == manifest_key(manifest)
    assert catalog.load_key(manifest_key(manifest)) == manifest
