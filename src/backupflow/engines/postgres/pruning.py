"""Retention of the WAL archive: archived WAL that no restore can use any more is deleted
after every prune of its series (the engine's ``remove_loose`` hook,
:mod:`backupflow.engines.postgres.spec`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from backupflow.catalog import Catalog, wal_prefix
from backupflow.engines.postgres.archive import read_record
from backupflow.engines.postgres.chain import loose_wal, superseded_pushes
from backupflow.errors import BackupflowError, CatalogError, ObjectLockedError
from backupflow.models import Category, Manifest
from backupflow.storage import Tier

__all__ = ["remove_loose_wal"]


def remove_loose_wal(
    tier: Tier, category: Category, name: str, *, now: datetime, grace: timedelta
) -> list[str]:
    """Delete archived WAL (PostgreSQL) that no restore can use any more: listed by no
    backup, older than the grace period, before the oldest kept base backup's start
    segment (:func:`backupflow.engines.postgres.chain.loose_wal`).  Nothing while any
    manifest of the series is foreign or unreadable, or when a manifest's position is
    damaged: WAL is never removed on a guess."""
    archived = [(i.key, i.modified) for i in tier.storage.list(wal_prefix(category, name))]
    if not archived:
        return []
    scan = Catalog(tier.storage, tier.keyring).scan(category, name)
    if scan.problems:
        return []
    try:
        doomed = loose_wal(archived, wal_prefix(category, name), scan.manifests, now - grace)
    except CatalogError:
        return []
    doomed += _superseded(tier, category, name, archived, scan.manifests, now - grace)
    removed = []
    for key in doomed:  # records first: a file without its record is never served
        try:
            tier.storage.delete(key)
        except ObjectLockedError:
            continue
        removed.append(key)
    return removed


def _superseded(
    tier: Tier,
    category: Category,
    name: str,
    archived: Sequence[tuple[str, datetime]],
    manifests: Sequence[Manifest],
    cutoff: datetime,
) -> list[str]:
    """Pushed WAL objects their file's record does not name (a push killed before its
    record, the loser of a race, a repaired copy), once older than the grace period."""
    doomed: list[str] = []
    groups = superseded_pushes(archived, wal_prefix(category, name), manifests, cutoff)
    for (sysid, wal_name), keys in sorted(groups.items()):
        try:
            record = read_record(tier, name, sysid, wal_name)
        except BackupflowError:
            continue  # unreadable or foreign: never removed on a guess
        named = record.object.key if record is not None else None
        doomed += [key for key in keys if key != named]
    return doomed
