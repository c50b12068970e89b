"""Working across tiers: where each backup is, copying between tiers, self-healing replication.

Every tier is self-describing (its own manifests), so any one of them is enough to plan and
run a restore.  Replication copies what a tier lacks from a tier that has it, verifying the
SHA-256 of every object on the way, and writes the manifest last; it is idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from backupflow.catalog import Catalog, CatalogEntry
from backupflow.errors import BackupflowError, CatalogError, IntegrityError, ObjectNotFoundError
from backupflow.models import Manifest, StoredObject
from backupflow.pipeline import HashingReader, verify_stored
from backupflow.retention import RetentionPolicy, plan_retention
from backupflow.storage import Tier
from backupflow.storage.base import Storage

__all__ = ["Holdings", "ReplicationReport", "copy_backup", "copy_object", "locate", "replicate"]

#: Decides whether a tier should hold a backup (retention may say no).
Wanted = Callable[[Tier, CatalogEntry], bool]


@dataclass
class Holdings:
    """Which tiers hold each backup of one series, from manifest names (LIST requests only)."""

    listed: list[Tier] = field(default_factory=list)
    entries: dict[str, CatalogEntry] = field(default_factory=dict)
    holders: dict[str, list[Tier]] = field(default_factory=dict)
    keys: dict[tuple[str, str], CatalogEntry] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def sorted_entries(self) -> list[CatalogEntry]:
        """Every backup found on any tier, oldest restore point first."""
        return sorted(self.entries.values(), key=lambda e: (e.restore_point, e.id))

    def tier_names(self, backup_id: str) -> list[str]:
        return [tier.name for tier in self.holders.get(backup_id, [])]

    def load(self, backup_id: str) -> tuple[Manifest, Tier]:
        """The manifest of a backup from the first tier whose copy of it can be read."""
        errors = []
        for tier in self.holders.get(backup_id, []):
            try:
                return Catalog(tier.storage).load(self.keys[(tier.name, backup_id)]), tier
            except BackupflowError as exc:
                errors.append(f"{tier.name}: {exc}")
        raise CatalogError(
            f"no tier has a readable manifest of backup {backup_id} ({'; '.join(errors)})"
        )


def locate(tiers: Sequence[Tier], category: str, name: str) -> Holdings:
    """List the manifests of one series on every tier; an unreachable tier is reported."""
    from backupflow.models import Category

    holdings = Holdings()
    for tier in tiers:
        try:
            entries, strays = Catalog(tier.storage).listing(Category(category), name)
        except BackupflowError as exc:
            holdings.problems.append(f"tier {tier.name} could not be listed: {exc}")
            continue
        holdings.problems += [
            f"{tier.storage.name}/{key} is not a manifest this backupflow can read; ignored"
            for key in strays
        ]
        holdings.listed.append(tier)
        for entry in entries:
            holdings.entries.setdefault(entry.id, entry)
            holdings.holders.setdefault(entry.id, []).append(tier)
            holdings.keys[(tier.name, entry.id)] = entry
    return holdings


def copy_object(
    source: Storage, dest: Storage, record: StoredObject, *, chunk_bytes: int, write_once: bool
) -> None:
    """Copy one stored object, checking its size and SHA-256 against the manifest.

    A destination that already holds an object of the right size under the key keeps it
    (objects are written atomically and verified, so it is a finished earlier copy).  Before
    writing to a write-once (Object Lock) tier the source is verified first, so a damaged
    copy is never locked in place.
    """
    try:
        if dest.stat(record.key).size == record.size:
            return
    except ObjectNotFoundError:
        pass
    if write_once:
        verify_stored(source, record, chunk_bytes=chunk_bytes)
    with source.open(record.key) as handle:
        reader = HashingReader(
            handle,
            limit=record.size,
            overflow=f"{record.key} in {source.name} holds more than its recorded "
            f"{record.size} bytes; it was not copied to {dest.name}.",
        )
        dest.put(record.key, iter(lambda: reader.read(chunk_bytes), b""))
    if reader.size != record.size or reader.sha256.hexdigest() != record.sha256:
        dest.delete(record.key)
        raise IntegrityError(
            f"{record.key} in {source.name} does not match its recorded SHA-256; it was not "
            f"copied to {dest.name}."
        )
    if not dest.verified_writes:
        verify_stored(dest, record, chunk_bytes=chunk_bytes)


def copy_backup(manifest: Manifest, source: Tier, dest: Tier, *, chunk_bytes: int) -> None:
    """Copy every object of a backup, then its manifest (last)."""
    for record in manifest.objects:
        copy_object(
            source.storage,
            dest.storage,
            record,
            chunk_bytes=chunk_bytes,
            write_once=dest.write_once,
        )
    Catalog(dest.storage).write(manifest)


def _kept_by(keep: Mapping[str, set[str]]) -> Wanted:
    def wanted(tier: Tier, entry: CatalogEntry) -> bool:
        return entry.id in keep.get(tier.name, {entry.id})

    return wanted


@dataclass
class ReplicationReport:
    """What a replication pass copied, and what it could not."""

    copied: list[tuple[str, str, str]] = field(default_factory=list)  # id, from, to
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def replicate(
    tiers: Sequence[Tier],
    category: str,
    name: str,
    *,
    chunk_bytes: int,
    policies: Mapping[str, RetentionPolicy] | None = None,
    now: datetime | None = None,
) -> ReplicationReport:
    """Copy every backup of a series to each tier that lacks it, oldest first.

    With ``policies`` (per tier name), a backup is only copied to a tier whose retention
    would keep it, so replication never brings back what that tier pruned.  Sources are
    tried in tier order; a source whose copy is damaged is reported and the next one is
    tried.  Running it again when nothing is missing copies nothing.
    """
    holdings = locate(tiers, category, name)
    report = ReplicationReport(problems=list(holdings.problems))
    wanted: Wanted | None = None
    if policies is not None:
        entries = holdings.sorted_entries()
        moment = now or datetime.now(UTC)
        keep = {
            tier: {b.id for b in plan_retention(entries, replace(policy, lock=None), moment).kept}
            for tier, policy in policies.items()
        }
        wanted = _kept_by(keep)
    for entry in holdings.sorted_entries():
        present = {tier.name for tier in holdings.holders[entry.id]}
        for dest in holdings.listed:
            if dest.name in present or (wanted is not None and not wanted(dest, entry)):
                continue
            errors = []
            for source in holdings.holders[entry.id]:
                try:
                    manifest = Catalog(source.storage).load(holdings.keys[(source.name, entry.id)])
                    copy_backup(manifest, source, dest, chunk_bytes=chunk_bytes)
                except BackupflowError as exc:
                    errors.append(f"from {source.name}: {exc}")
                    continue
                report.copied.append((entry.id, source.name, dest.name))
                break
            else:
                report.problems.append(
                    f"backup {entry.id} could not be copied to tier {dest.name} "
                    f"({'; '.join(errors)})"
                )
    return report
