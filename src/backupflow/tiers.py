"""Working across tiers: where each backup is, copying between tiers, self-healing replication.

Every tier is self-describing (its own signed manifests), so any one of them is enough to plan
and run a restore.  Only authenticated manifests count (:meth:`Catalog.load`): a foreign one is
reported by tier and key and otherwise ignored.  Replication copies what a tier lacks from a
tier that has it, verifying the SHA-256 of every object on the way, and writes the manifest
last; it is idempotent, and it never overwrites an object in the destination that differs
from what the source's authenticated manifest says (a conflict, reported and left alone).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from backupflow.catalog import (
    CONTENT_ROLE,
    Catalog,
    CatalogEntry,
    condemned_prefix,
    manifest_key,
    mark_key,
)
from backupflow.errors import (
    BackupflowError,
    CatalogError,
    IntegrityError,
    ObjectNotFoundError,
    TierError,
)
from backupflow.models import Manifest, StoredObject
from backupflow.pipeline import HashingReader, verify_stored
from backupflow.retention import RetentionPolicy, plan_retention
from backupflow.storage import Tier
from backupflow.storage.base import Storage

__all__ = [
    "Holdings",
    "ReplicationConflictError",
    "ReplicationReport",
    "TierState",
    "copy_backup",
    "copy_object",
    "locate",
    "replicate",
    "tier_state",
]


class ReplicationConflictError(TierError):
    """The destination already holds a different object under a backup's key."""

    retryable = False


#: Decides whether a tier should hold a backup (retention may say no).
Wanted = Callable[[Tier, CatalogEntry], bool]


#: What a tier answered when its backups were listed.
State = Literal["ok", "empty", "unreachable", "denied"]

#: Error codes a storage answers with when the credentials may not do what was asked.
_DENIED_CODES = frozenset(
    {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
)


@dataclass(frozen=True)
class TierState:
    """One consulted tier's answer: ``ok`` (it holds backups of the series), ``empty`` (it
    answered and holds none), ``unreachable`` or ``denied`` (it could not be read; ``cause``
    says why, in the storage's words)."""

    tier: str
    state: State
    cause: str = ""

    @property
    def answered(self) -> bool:
        """Whether the tier could be read (``ok`` or ``empty``)."""
        return self.state in ("ok", "empty")

    def describe(self) -> str:
        """One clause for a message: ``tier dr is unreachable (…cause…)``."""
        if self.answered:
            return f"tier {self.tier} is {self.state}"
        return f"tier {self.tier} is {self.state} ({self.cause.rstrip('.')})"


def tier_state(tier: str, exc: BaseException) -> TierState:
    """The state of a tier whose listing failed with ``exc``: ``denied`` when the storage
    refused the credentials (a permission error, an S3 access-denied code anywhere in the
    chain of causes), else ``unreachable``; the cause is the error's own sentence."""
    current: BaseException | None = exc
    while current is not None:
        response = getattr(current, "response", None)
        code = str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
        if isinstance(current, PermissionError) or code in _DENIED_CODES:
            return TierState(tier, "denied", str(exc))
        current = current.__cause__ or current.__context__
    return TierState(tier, "unreachable", str(exc))


@dataclass
class Holdings:
    """Which tiers hold each backup of one series: only backups whose manifest in that tier
    is authenticated (one LIST per 1,000 manifests and one GET per manifest, per tier).
    Foreign manifests are in ``problems`` (and ``foreign``, by tier); every consulted tier's
    answer is in ``states`` (by tier name, in the order consulted)."""

    listed: list[Tier] = field(default_factory=list)
    entries: dict[str, CatalogEntry] = field(default_factory=dict)
    holders: dict[str, list[Tier]] = field(default_factory=dict)
    keys: dict[tuple[str, str], CatalogEntry] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    manifests: dict[tuple[str, str], Manifest] = field(default_factory=dict)
    foreign: dict[str, list[str]] = field(default_factory=dict)
    states: dict[str, TierState] = field(default_factory=dict)

    @property
    def unread(self) -> list[TierState]:
        """The consulted tiers that could not be read (unreachable or denied)."""
        return [s for s in self.states.values() if not s.answered]

    def sorted_entries(self) -> list[CatalogEntry]:
        """Every backup found on any tier, oldest restore point first."""
        return sorted(self.entries.values(), key=lambda e: (e.restore_point, e.id))

    def tier_names(self, backup_id: str) -> list[str]:
        return [tier.name for tier in self.holders.get(backup_id, [])]

    def load(self, backup_id: str) -> tuple[Manifest, Tier]:
        """The manifest of a backup from the first tier whose copy of it can be read."""
        errors = []
        for tier in self.holders.get(backup_id, []):
            cached = self.manifests.get((tier.name, backup_id))
            if cached is not None:
                return cached, tier
            try:
                return (
                    Catalog(tier.storage, tier.keyring).load(self.keys[(tier.name, backup_id)]),
                    tier,
                )
            except BackupflowError as exc:
                errors.append(f"{tier.name}: {exc}")
        raise CatalogError(
            f"no tier has a readable manifest of backup {backup_id} ({'; '.join(errors)})"
        )


def locate(
    tiers: Sequence[Tier], category: str, name: str, *, authenticate: bool = True
) -> Holdings:
    """The authenticated backups of one series on every tier; an unreachable tier and every
    foreign manifest are reported.

    Without ``authenticate`` (restore planning), only manifest names are listed and each
    manifest is authenticated when :meth:`Holdings.load` reads it: a planner must then treat
    a load error as "not a backup" and plan again without it.
    """
    from backupflow.models import Category

    holdings = Holdings()
    for tier in tiers:
        catalog = Catalog(tier.storage, tier.keyring)
        try:
            entries, strays = catalog.listing(Category(category), name)
        except BackupflowError as exc:
            state = tier_state(tier.name, exc)
            holdings.states[tier.name] = state
            holdings.problems.append(state.describe())
            continue
        holdings.problems += [
            f"{tier.storage.name}/{key} is not a manifest this backupflow can read; ignored"
            for key in strays
        ]
        holdings.listed.append(tier)
        if not authenticate:
            for entry in entries:
                holdings.entries.setdefault(entry.id, entry)
                holdings.holders.setdefault(entry.id, []).append(tier)
                holdings.keys[(tier.name, entry.id)] = entry
            holdings.states[tier.name] = TierState(tier.name, "ok" if entries else "empty")
            continue
        manifests, failed = catalog.load_many(entries)
        holdings.problems += failed
        holdings.foreign.setdefault(tier.name, []).extend(failed)
        trusted = {m.id for m in manifests}
        for manifest in manifests:
            holdings.manifests[(tier.name, manifest.id)] = manifest
        for entry in entries:
            if entry.id not in trusted:
                continue
            holdings.entries.setdefault(entry.id, entry)
            holdings.holders.setdefault(entry.id, []).append(tier)
            holdings.keys[(tier.name, entry.id)] = entry
        holdings.states[tier.name] = TierState(tier.name, "ok" if trusted else "empty")
    return holdings


def copy_object(
    source: Storage, dest: Storage, record: StoredObject, *, chunk_bytes: int, write_once: bool
) -> None:
    """Copy one stored object, checking its size and SHA-256 against the manifest.

    An object the destination already holds is never overwritten: when it is the very
    object the (authenticated) manifest records (size and SHA-256, read in full, shared
    content too) it is kept, else the copy stops with a :class:`ReplicationConflictError`.
    Before writing to a write-once (Object Lock) tier the source is verified first, so a
    damaged copy is never locked in place.  The copy is read back from the destination only
    when its writes are not verified (a folder): an S3 tier checked the SHA-256 of every
    part it received, and a read-back would double the egress.
    """
    try:
        held = dest.stat(record.key).size
    except ObjectNotFoundError:
        held = None
    if held is not None:
        if held == record.size:
            # Shared content too: its key names its plaintext, but whoever can write to the
            # tier can put other bytes of the same size there.
            try:
                verify_stored(dest, record, chunk_bytes=chunk_bytes)
                return
            except IntegrityError:
                pass
        raise ReplicationConflictError(
            f"conflict: {dest.name} already holds {record.key} and it differs from the "
            "authenticated manifest; it was left as it is (remove it by hand if it is not "
            "yours, then replicate again)."
        )
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
    """Copy every object of a backup, then its manifest (last): the very envelope the
    source holds, signature and all, so copying needs no signing key."""
    original, raw = Catalog(source.storage, source.keyring).load_raw(manifest_key(manifest))
    if original != manifest:
        raise CatalogError(
            f"backup {manifest.id} changed in tier {source.name} while it was copied; "
            "replicate again."
        )
    marked = _marked(manifest, dest)
    for record in manifest.objects:
        mark = mark_key(manifest.category, manifest.database, record.key)
        if record.role.startswith(CONTENT_ROLE) and mark in marked:
            _revive(record, mark, source, dest, chunk_bytes=chunk_bytes)
        copy_object(
            source.storage,
            dest.storage,
            record,
            chunk_bytes=chunk_bytes,
            write_once=dest.write_once,
        )
    Catalog(dest.storage, dest.keyring).copy_envelope(manifest, raw)


def _marked(manifest: Manifest, dest: Tier) -> set[str]:
    """The condemned marks in ``dest`` of the series a backup belongs to (one LIST, and
    only for a backup that lists shared content)."""
    if not any(obj.role.startswith(CONTENT_ROLE) for obj in manifest.objects):
        return set()
    prefix = condemned_prefix(manifest.category, manifest.database)
    return {info.key for info in dest.storage.list(prefix)}


def _revive(record: StoredObject, mark: str, source: Tier, dest: Tier, *, chunk_bytes: int) -> None:
    """Shared content that a prune of ``dest`` condemned (no manifest there listed it) is
    written again from ``source`` before a manifest listing it is copied, and its mark is
    removed: a prune deletes condemned content only if it was not written since, so the
    copied backup never loses it to a prune running meanwhile."""
    with suppress(ObjectNotFoundError):
        dest.storage.delete(record.key)
    copy_object(
        source.storage, dest.storage, record, chunk_bytes=chunk_bytes, write_once=dest.write_once
    )
    dest.storage.delete(mark)


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
            copied = False
            for source in holdings.holders[entry.id]:
                try:
                    manifest = holdings.manifests[(source.name, entry.id)]
                    copy_backup(manifest, source, dest, chunk_bytes=chunk_bytes)
                except ReplicationConflictError as exc:
                    errors.append(str(exc))
                    break  # never overwritten from another source either
                except BackupflowError as exc:
                    errors.append(f"from {source.name}: {exc}")
                    continue
                report.copied.append((entry.id, source.name, dest.name))
                copied = True
                break
            if not copied:
                report.problems.append(
                    f"backup {entry.id} could not be copied to tier {dest.name} "
                    f"({'; '.join(errors)})"
                )
    return report
