"""Backup operations, one function per step; the Prefect tasks wrap these.

Order of a backup: clean left-overs -> decide (plan) -> dump -> store in the first tier
(compress, hash, verify) -> copy to the other tiers (verified) -> a manifest per tier, each
written last -> log.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from backupflow.catalog import Catalog, object_key
from backupflow.codecs import Codec, NoneCodec
from backupflow.config import Settings
from backupflow.engines.base import BackupSource, Dump, Engine
from backupflow.errors import IntegrityError, MissingKeyError, ObjectLockedError, StorageError
from backupflow.fsutil import (
    ensure_private_dir,
    fresh_private_dir,
    hold_job_marker,
    privatize_files,
    remove_dead_job_dirs,
    remove_private_dir,
)
from backupflow.keys import Keyring
from backupflow.models import BackupKind, Category, Manifest, StoredObject, new_backup_id
from backupflow.pipeline import open_verified, store_stream
from backupflow.planning import BackupDecision, lost_parents, plan_backup
from backupflow.steps import Logger
from backupflow.storage import Tier
from backupflow.storage.base import ObjectInfo, Storage
from backupflow.tiers import locate

__all__ = [
    "BackupJob",
    "Decided",
    "build_manifest",
    "check_backup_keys",
    "clean_interrupted",
    "clean_staging",
    "decide_backup",
    "decide_job",
    "dump_database",
    "prepare_staging",
    "readable_with",
    "remove_staging",
    "source_of",
    "store_dump",
]

Progress = Callable[[int], None]


@dataclass(frozen=True)
class BackupJob:
    """Identity of one backup run, fixed before any data moves."""

    backup_id: str
    database: str
    started_at: datetime
    decision: BackupDecision[Manifest]
    parent_tier: Tier | None = None
    category: Category = Category.DATABASE
    #: The other tiers holding the parent, tried in turn when ``parent_tier``'s copy is
    #: damaged or missing.
    other_parent_tiers: tuple[Tier, ...] = ()

    @classmethod
    def start(
        cls,
        database: str,
        decision: BackupDecision[Manifest],
        now: datetime,
        parent_tier: Tier | None = None,
        category: Category = Category.DATABASE,
        other_parent_tiers: tuple[Tier, ...] = (),
    ) -> BackupJob:
        backup_id = new_backup_id(decision.kind, now)
        return cls(backup_id, database, now, decision, parent_tier, category, other_parent_tiers)

    def staging(self, settings: Settings) -> Path:
        return settings.staging_dir / self.backup_id


def check_backup_keys(keyring: Keyring) -> None:
    """Before anything is dumped: a backup needs the signing key, and with encryption on
    (the default) at least one age recipient; one sentence otherwise."""
    keyring.require_signer()
    if keyring.encrypt:
        keyring.age_recipients()


def readable_with(manifest: Manifest, keyring: Keyring) -> bool:
    """Whether this keyring can decrypt every object of a backup."""
    held = set(keyring.identity_ids())
    return all(o.encryption is None or held & set(o.recipients) for o in manifest.objects)


#: The locked marker of each staging folder this process is using (see prepare_staging).
_HELD: dict[Path, int] = {}

#: A backup id (``20261126T053301Z-full-3f9a1c``): the name of a job's staging folder.
_JOB_NAME = re.compile(r"^\d{8}T\d{6}Z-[a-z]+-[0-9a-f]{6}$")


def prepare_staging(job: BackupJob, settings: Settings) -> Path:
    """This job's staging folder, new and ``0700``, inside ``staging_dir`` (created ``0700``,
    or used only when it is a real folder of ours that nobody else can write to), marked as
    a running job's by a locked marker that :func:`remove_staging` (or the process's end)
    releases."""
    ensure_private_dir(settings.staging_dir)
    path = job.staging(settings)
    _release(path)
    fresh_private_dir(path)
    _HELD[path] = hold_job_marker(path)
    return path


def _release(path: Path) -> None:
    fd = _HELD.pop(path, None)
    if fd is not None:
        os.close(fd)


def remove_staging(job: BackupJob, settings: Settings) -> None:
    """Remove this job's staging folder, if it is still the private folder we made."""
    path = job.staging(settings)
    remove_private_dir(path)
    _release(path)


def clean_staging(settings: Settings, *, now: datetime) -> list[Path]:
    """Remove the staging folders of backups that died (killed, crashed) more than the grace
    period ago; a running job's folder (its marker is locked) is never touched, whatever its
    age.  Returns the folders removed."""
    cutoff = now - timedelta(minutes=settings.orphan_grace_minutes)
    return remove_dead_job_dirs(
        settings.staging_dir,
        older_than=cutoff.timestamp(),
        unmarked=lambda name: _JOB_NAME.fullmatch(name) is not None,
    )


def clean_interrupted(
    storage: Storage, category: Category, name: str, *, now: datetime, grace: timedelta
) -> list[str]:
    """Remove what interrupted backups left: temporary files and data without a manifest.

    Objects still under Object Lock are left for later.
    """
    cutoff = now - grace
    removed = storage.cleanup_incomplete(cutoff)
    return removed + delete_unlocked(
        storage, Catalog(storage).orphans(category, name, older_than=cutoff)
    )


def delete_unlocked(storage: Storage, infos: Iterable[ObjectInfo]) -> list[str]:
    """Delete the objects, leaving those still under Object Lock for a later run."""
    removed = []
    for info in infos:
        try:
            storage.delete(info.key)
        except ObjectLockedError:
            continue
        removed.append(info.key)
    return removed


@dataclass(frozen=True)
class Decided:
    """What the next backup is, every tier its parent can be read from (the first is the
    one its manifest was read from), and the chain gaps the catalogs show."""

    decision: BackupDecision[Manifest]
    parent_tiers: tuple[Tier, ...] = ()
    #: ``(backup id, id of its parent)`` for each backup whose parent no listed tier holds.
    lost: tuple[tuple[str, str], ...] = ()
    #: Tiers that could not be listed (a gap there may be no gap).
    unlisted: tuple[str, ...] = ()


def decide_job(tiers: Sequence[Tier], requested: BackupKind, settings: Settings) -> Decided:
    """Plan the next backup from every tier's catalog (see :class:`Decided`)."""
    database = settings.database.name
    holdings = locate(tiers, Category.DATABASE.value, database)
    entries = holdings.sorted_entries()
    lost = tuple((entry.id, parent) for entry, parent in lost_parents(entries))
    unlisted = tuple(t.name for t in tiers if t not in holdings.listed)
    plan = plan_backup(
        entries, requested, database=database, missing_full=settings.database.missing_full
    )
    if plan.parent is None:
        return Decided(BackupDecision(plan.kind, notes=plan.notes), (), lost, unlisted)
    parent, parent_tier = holdings.load(plan.parent.id)
    base = parent if plan.base is None or plan.base.id == parent.id else None
    if base is None and plan.base is not None:
        base, _ = holdings.load(plan.base.id)
    others = tuple(t for t in holdings.holders.get(parent.id, []) if t is not parent_tier)
    decision = BackupDecision(plan.kind, base=base, parent=parent, notes=plan.notes)
    return Decided(decision, (parent_tier, *others), lost, unlisted)


def decide_backup(
    tiers: Sequence[Tier], requested: BackupKind, settings: Settings
) -> tuple[BackupDecision[Manifest], Tier | None]:
    """Plan the next backup from every tier's catalog; returns where its parent can be read."""
    decided = decide_job(tiers, requested, settings)
    return decided.decision, decided.parent_tiers[0] if decided.parent_tiers else None


def source_of(
    storage: Storage,
    manifest: Manifest,
    *,
    chunk_bytes: int,
    progress: Progress | None = None,
    keyring: Keyring | None = None,
) -> BackupSource:
    """A stored backup whose objects open as verified, decrypted, decompressed streams."""
    return BackupSource(
        manifest=manifest,
        open_object=lambda role: open_verified(
            storage,
            manifest.object(role),
            chunk_bytes=chunk_bytes,
            progress=progress,
            keyring=keyring,
        ),
    )


def parent_key_needed(job: BackupJob, exc: MissingKeyError) -> MissingKeyError:
    """The error when a backup must read its (encrypted) parent and this worker holds no
    identity for it: one sentence saying so."""
    parent = job.decision.parent
    needed = sorted({k for o in parent.objects for k in o.recipients}) if parent else []
    return MissingKeyError(
        f"a {job.decision.kind.value} backup of {job.database} reads its parent backup "
        f"{parent.id if parent else '-'}, which is encrypted to the age key(s) "
        f"{', '.join(needed) or '(none recorded)'}, so this worker needs that identity "
        "(BACKUPFLOW_CRYPTO__IDENTITIES or __IDENTITIES_BLOCK), or run a full backup instead."
        if parent
        else str(exc)
    )


def dump_database(
    engine: Engine,
    job: BackupJob,
    settings: Settings,
    logger: Logger | None = None,
    on_damaged: Callable[[Tier, Tier], None] | None = None,
) -> Dump:
    """Let the engine write the backup's files into this job's staging folder.

    A diff or log reads its parent from ``job.parent_tier``; when that copy is damaged or
    missing (:class:`IntegrityError`, :class:`StorageError`), the dump is taken again
    reading the parent from the next tier that holds it; afterwards ``on_damaged(good,
    damaged)`` is called for each tier whose copy failed (the backup run repairs it:
    :func:`backupflow.maintenance.repair_copy`).
    """
    parent = job.decision.parent
    holders = [t for t in (job.parent_tier, *job.other_parent_tiers) if t is not None]
    if parent is None or not holders:
        return _dump_once(engine, job, settings, None)
    damaged: list[tuple[Tier, str]] = []
    for tier in holders:
        source = source_of(
            tier.storage, parent, chunk_bytes=settings.pipeline.chunk_bytes, keyring=tier.keyring
        )
        try:
            dump = _dump_once(engine, job, settings, source)
        except (IntegrityError, StorageError) as exc:
            damaged.append((tier, str(exc)))
            if logger is not None:
                logger.warning(
                    "the parent backup %s could not be read from %s (%s); trying the next tier",
                    parent.id,
                    tier.name,
                    exc,
                )
            continue
        for bad, _ in damaged:
            if on_damaged is not None:
                on_damaged(tier, bad)
        return dump
    raise IntegrityError(
        f"the {job.decision.kind.value} backup of {job.database} could not read its parent "
        f"backup {parent.id} from any tier holding it ("
        + "; ".join(f"{t.name}: {why}" for t, why in damaged)
        + "); run a full backup instead."
    )


def _dump_once(
    engine: Engine, job: BackupJob, settings: Settings, source: BackupSource | None
) -> Dump:
    staging = prepare_staging(job, settings)
    try:
        dump = engine.dump(job.decision.kind, source, staging)
    except MissingKeyError as exc:
        raise parent_key_needed(job, exc) from None
    privatize_files(staging)
    return dump


def store_dump(
    storage: Storage,
    job: BackupJob,
    dump: Dump,
    codec: Codec,
    settings: Settings,
    progress: Progress | None = None,
    keyring: Keyring | None = None,
) -> tuple[StoredObject, ...]:
    """Stream every dump file through compress + encrypt + SHA-256 into the storage,
    verified."""
    stored = []
    for item in dump.files:
        key = object_key(
            job.category,
            job.database,
            job.started_at,
            job.backup_id,
            f".{item.role}{codec.extension}",
        )
        chosen = _worth_compressing(item.path, codec) if item.measure else codec
        if chosen is not codec:
            key = key.removesuffix(codec.extension)
        with open(item.path, "rb") as source:
            stored.append(
                store_stream(
                    storage,
                    key,
                    source,
                    chosen,
                    role=item.role,
                    chunk_bytes=settings.pipeline.chunk_bytes,
                    verify=settings.pipeline.verify_after_write,
                    progress=progress,
                    keyring=keyring,
                )
            )
    return tuple(stored)


def _worth_compressing(path: Path, codec: Codec, sample_bytes: int = 4 << 20) -> Codec:
    """``codec``, or no compression when the file's first part shrinks by less than 10%."""
    with open(path, "rb") as handle:
        sample = handle.read(sample_bytes)
    if not sample:
        return codec
    compressor = codec.compressor()
    size = len(compressor.compress(sample)) + len(compressor.flush())
    return NoneCodec() if size > 0.9 * len(sample) else codec


def build_manifest(
    job: BackupJob,
    engine: Engine,
    dump: Dump,
    objects: tuple[StoredObject, ...],
    finished_at: datetime,
    notes: tuple[str, ...] = (),
) -> Manifest:
    """The manifest of a stored backup (the same on every tier)."""
    decision = job.decision
    return Manifest(
        id=job.backup_id,
        category=job.category,
        kind=decision.kind,
        engine=engine.name,
        database=job.database,
        started_at=job.started_at,
        finished_at=finished_at,
        restore_point=dump.restore_point,
        position=dump.position,
        base_id=decision.base.id if decision.base else None,
        parent_id=decision.parent.id if decision.parent else None,
        objects=objects,
        notes=decision.notes + notes,
    )
