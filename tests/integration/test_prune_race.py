"""A prune on another host that runs while an uploads backup reuses shared content never
leaves that backup unrestorable (issue 23).

The dangerous point: the backup has decided to reuse a content object that only an older
backup lists; retention then deletes that older backup and prunes the series' content; only
then is the new manifest written.  A storage wrapper runs the prune right there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backupflow.backup_run import FileSetSubject, run_backup
from backupflow.catalog import CONTENT_ROLE, Catalog, content_prefix, manifests_prefix
from backupflow.config import FileSetSettings, Settings
from backupflow.filesets.contents import condemned_prefix, sweep_content
from backupflow.models import Category, Manifest, StoredObject
from backupflow.restore_run import run_restore
from backupflow.steps import DirectSteps
from backupflow.storage import Tier, open_tiers
from backupflow.storage.base import ObjectInfo, Storage
from backupflow.storage.wrapper import StorageWrapper
from backupflow.tiers import replicate

UPLOADS = Category.UPLOADS
GRACE = timedelta(minutes=60)


class PruneAt(StorageWrapper):
    """Runs ``action`` once, just before the ``count``-th call that ``matches``."""

    def __init__(self, inner: Storage, matches: Callable[[str, str], bool], count: int) -> None:
        super().__init__(inner)
        self.matches, self.left = matches, count
        self.action: Callable[[], None] | None = None
        self.fired = False

    def _maybe(self, op: str, key: str) -> None:
        if self.action is None or self.fired or not self.matches(op, key):
            return
        self.left -= 1
        if self.left == 0:
            self.fired = True
            self.action()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._maybe("list", prefix)
        return self.inner.list(prefix)

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        self._maybe("put", key)
        return self.inner.put(key, chunks)


def _setup(settings: Settings, tmp_path: Path) -> tuple[Settings, Tier, Path]:
    root = tmp_path / "api"
    (root / "uploads").mkdir(parents=True)
    uploads = FileSetSettings(root=root, include=["uploads/**"])
    settings = settings.model_copy(
        update={"files": settings.files.model_copy(update={"uploads": uploads})}
    )
    return settings, open_tiers(settings, ("primary",))[0], root / "uploads"


def _backup(settings: Settings, tier: Tier) -> Manifest:
    return run_backup(FileSetSubject("uploads", settings), [tier], DirectSteps()).manifest


def _restored(settings: Settings, tier: Tier, manifest: Manifest, into: Path) -> bytes:
    restore_host = replace(tier, keyring=replace(tier.keyring, signer=None))
    report = run_restore(
        FileSetSubject("uploads", settings).engine,
        [restore_host],
        "uploads",
        DirectSteps(),
        target_time=manifest.restore_point,
        into=into,
        category=UPLOADS,
    )
    assert report.outcome is not None
    return (into / "uploads" / "shared.bin").read_bytes()


def _only_an_old_backup_lists_shared(
    settings: Settings, tier: Tier, folder: Path
) -> tuple[Manifest, StoredObject, bytes]:
    """Backup A holds shared.bin; backup B (shared.bin gone) does not; shared.bin is back."""
    shared = os.urandom(40_000)
    (folder / "shared.bin").write_bytes(shared)
    (folder / "keep.bin").write_bytes(b"kept in every backup")
    old = _backup(settings, tier)
    record = next(
        o for o in old.objects if o.role.startswith(CONTENT_ROLE) and o.raw_size == len(shared)
    )
    (folder / "shared.bin").unlink()
    _backup(settings, tier)
    (folder / "shared.bin").write_bytes(shared)
    return old, record, shared


def _prune(storage: Storage, tier: Tier, hours: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """One prune of the series' content, ``hours`` from now (another host's clock)."""
    swept = sweep_content(
        storage,
        UPLOADS,
        "uploads",
        now=datetime.now(UTC) + timedelta(hours=hours),
        grace=GRACE,
        keyring=tier.keyring,
    )
    return swept.condemned, swept.removed


def test_retention_and_two_prunes_between_the_reuse_and_the_last_check(
    settings: Settings, tmp_path: Path
) -> None:
    settings, tier, folder = _setup(settings, tmp_path)
    old, record, shared = _only_an_old_backup_lists_shared(settings, tier, folder)
    inner = tier.storage
    content = content_prefix(UPLOADS, "uploads")
    # the backup decides to reuse shared.bin, then stores zz-new.bin (files go in name
    # order): the prune runs right before that store
    (folder / "zz-new.bin").write_bytes(os.urandom(1_000))
    hooked = PruneAt(inner, lambda op, key: op == "put" and key.startswith(content), 1)
    pruned: list[tuple[str, ...]] = []

    def retention_then_prune() -> None:
        Catalog(inner, tier.keyring).delete(old)  # retention drops the only backup listing it
        pruned.append(_prune(inner, tier, 2)[0])  # condemned
        pruned.append(_prune(inner, tier, 4)[1])  # deleted a grace period later

    hooked.action = retention_then_prune
    new = _backup(settings, replace(tier, storage=hooked))
    assert hooked.fired
    assert record.key in pruned[0] and record.key in pruned[1]  # the reused object is gone
    assert all(o.key != record.key for o in new.objects)  # so it was stored anew
    assert _restored(settings, tier, new, tmp_path / "out") == shared


def test_a_prune_just_before_the_manifest_is_written_only_condemns(
    settings: Settings, tmp_path: Path
) -> None:
    settings, tier, folder = _setup(settings, tmp_path)
    old, record, shared = _only_an_old_backup_lists_shared(settings, tier, folder)
    inner = tier.storage
    manifests = manifests_prefix(UPLOADS, "uploads")
    hooked = PruneAt(inner, lambda op, key: op == "put" and key.startswith(manifests), 1)
    pruned: list[tuple[str, ...]] = []

    def retention_then_prune() -> None:
        Catalog(inner, tier.keyring).delete(old)
        pruned.extend(_prune(inner, tier, 2))

    hooked.action = retention_then_prune
    new = _backup(settings, replace(tier, storage=hooked))
    assert hooked.fired
    assert record.key in pruned[0] and not pruned[1]  # condemned, not deleted
    assert any(o.key == record.key for o in new.objects)  # the new backup reuses it
    # later prunes, on any host: the new manifest lists it, so it is kept and its mark goes
    assert _prune(inner, tier, 4) == ((), ())
    assert _prune(inner, tier, 8) == ((), ())
    assert list(inner.list(condemned_prefix(UPLOADS, "uploads"))) == []
    assert inner.stat(record.key).size == record.size
    assert _restored(settings, tier, new, tmp_path / "out") == shared


def test_a_backup_never_relies_on_condemned_content(settings: Settings, tmp_path: Path) -> None:
    settings, tier, folder = _setup(settings, tmp_path)
    old, record, shared = _only_an_old_backup_lists_shared(settings, tier, folder)
    inner = tier.storage
    Catalog(inner, tier.keyring).delete(old)
    assert _prune(inner, tier, 2) == ((record.key,), ())  # condemned: may go at any time now
    new = _backup(settings, tier)
    copy = next(o for o in new.objects if o.raw_size == len(shared))
    assert copy.key != record.key  # stored anew under a fresh id, not the condemned object
    assert _prune(inner, tier, 4) == ((), (record.key,))
    assert _restored(settings, tier, new, tmp_path / "out") == shared


def test_a_planted_mark_does_not_shorten_the_grace_period(
    settings: Settings, tmp_path: Path
) -> None:
    settings, tier, folder = _setup(settings, tmp_path)
    old, record, _shared = _only_an_old_backup_lists_shared(settings, tier, folder)
    inner = tier.storage
    Catalog(inner, tier.keyring).delete(old)
    mark = condemned_prefix(UPLOADS, "uploads") + record.key.split("/", 2)[2]
    planted = (
        b'{"format": "backupflow.condemned", "key": "%s", "condemned_at": "2001-01-01T00:00:00Z"}'
        % record.key.encode()
    )
    inner.put(mark, [planted])
    assert _prune(inner, tier, 2) == ((record.key,), ())  # its own mark replaces it
    assert _prune(inner, tier, 4) == ((), (record.key,))
    assert list(inner.list(condemned_prefix(UPLOADS, "uploads"))) == []


class BeforeStat(StorageWrapper):
    """Runs ``action`` once, just before the first ``stat`` of ``key``."""

    def __init__(self, inner: Storage, key: str, action: Callable[[], None]) -> None:
        super().__init__(inner)
        self.key, self.action = key, action
        self.fired = False

    def stat(self, key: str) -> ObjectInfo:
        if key == self.key and not self.fired:
            self.fired = True
            self.action()
        return self.inner.stat(key)


def test_replication_revives_condemned_content_a_prune_is_about_to_delete(
    settings: Settings, tmp_path: Path
) -> None:
    """The DR tier's prune condemned content no DR manifest listed; replication then copies a
    backup that lists it, right while a later prune there is about to delete it (after its
    last read of the manifests): the copy writes the content again, so the prune keeps it."""
    settings, primary, folder = _setup(settings, tmp_path)
    dr = open_tiers(settings, ("dr",))[0]
    shared = os.urandom(40_000)
    (folder / "shared.bin").write_bytes(shared)
    old = run_backup(FileSetSubject("uploads", settings), [primary, dr], DirectSteps()).manifest
    record = next(o for o in old.objects if o.raw_size == len(shared))
    (folder / "shared.bin").unlink()
    run_backup(FileSetSubject("uploads", settings), [primary, dr], DirectSteps())
    Catalog(dr.storage, dr.keyring).delete(old)  # DR's retention let the old one go
    stored = tmp_path / "dr" / record.key
    long_ago = stored.stat().st_mtime - 3 * 3600
    os.utime(stored, (long_ago, long_ago))  # stored hours ago
    condemned, _ = _prune(dr.storage, dr, hours=0)
    assert record.key in condemned

    def replicate_now() -> None:
        report = replicate([primary, dr], "uploads", "uploads", chunk_bytes=1 << 20)
        assert report.copied == [(old.id, "primary", dr.name)]

    racing = BeforeStat(dr.storage, record.key, replicate_now)
    _condemned, removed = _prune(racing, dr, hours=2)  # a grace period after the condemning
    assert racing.fired and removed == ()
    assert list(dr.storage.list(condemned_prefix(UPLOADS, "uploads"))) == []
    assert _restored(settings, dr, old, tmp_path / "from-dr") == shared
