"""What a backup run is of: a database (through its engine) or a file set.

The one backup run (:func:`backupflow.backup_run.run_backup`) asks its subject for the steps
that differ: deciding the job, dumping, storing in the first tier; everything else (tiers,
manifests, logging, retention) is the run's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial

from backupflow import backup, maintenance
from backupflow.backup import BackupJob
from backupflow.codecs import Codec
from backupflow.config import Settings
from backupflow.engines.base import BackupSource, Dump, Engine
from backupflow.errors import ConfigError, StorageError
from backupflow.filesets import FILE_SETS, contents, is_content_addressed
from backupflow.filesets.engine import FileSetEngine
from backupflow.fsutil import privatize_files
from backupflow.models import BackupKind, Category, Manifest, StoredObject
from backupflow.planning import BackupDecision
from backupflow.progress import Progress
from backupflow.steps import Logger
from backupflow.storage import Tier

__all__ = ["DatabaseSubject", "FileSetSubject", "Subject"]


class Subject(ABC):
    """What one backup run is of; the run asks it for the steps that differ."""

    category: Category
    name: str
    engine: Engine
    settings: Settings
    progress: Progress | None = None

    def check(self, kind: BackupKind) -> None:
        """Refuse, before anything is read, a kind the engine cannot take or a missing
        source."""
        caps = self.engine.capabilities
        if kind is BackupKind.DIFF and not caps.differential:
            raise ConfigError(f"the {self.engine.name} engine cannot take differential backups.")
        if kind is BackupKind.LOG and not caps.log:
            raise ConfigError(f"the {self.engine.name} engine cannot take log backups.")
        self.engine.check_source()

    @abstractmethod
    def decide(self, tiers: Sequence[Tier], kind: BackupKind, logger: Logger) -> BackupJob:
        """The job: its id, kind and what it builds on."""

    @abstractmethod
    def dump(self, job: BackupJob, logger: Logger) -> Dump:
        """Write the backup's files into the job's new private staging folder."""

    def store(
        self, tier: Tier, job: BackupJob, dump: Dump, codec: Codec, logger: Logger
    ) -> tuple[StoredObject, ...]:
        """Store the dump in the first tier (compressed, encrypted, hashed, verified).

        Objects the dump found already stored (archived WAL) are listed as they are, but
        only from the tier that holds them."""
        if dump.stored and tier.name != dump.stored_in:
            raise StorageError(
                f"the {len(dump.stored)} archived file(s) of this backup are in the "
                f"{dump.stored_in} tier, not in {tier.name}; the backup is recorded there "
                "first and copied here afterwards."
            )
        for obj in dump.stored:
            info = tier.storage.stat(obj.key)
            if info.size != obj.size:
                raise StorageError(
                    f"{obj.key} in {tier.name} is {info.size} bytes, not the {obj.size} its "
                    "archive record says; it is not listed."
                )
        objects = dump.stored + backup.store_dump(
            tier.storage, job, dump, codec, self.settings, self.progress, keyring=tier.keyring
        )
        for obj in objects:
            logger.info(
                "stored %s in %s: %d -> %d bytes (%s), sha256 %s",
                obj.key,
                tier.name,
                obj.raw_size,
                obj.size,
                obj.codec,
                obj.sha256[:16],
            )
        return objects

    def notes(self) -> tuple[str, ...]:
        """Notes for the manifest, found while dumping."""
        return ()

    def failure(self, manifest: Manifest) -> str | None:
        """A failure that did not stop the backup, to report after it is stored."""
        del manifest
        return None

    def cleanup(self, dump: Dump | None) -> None:
        """Remove what the dump left outside the staging folder."""
        del dump


class DatabaseSubject(Subject):
    """One database, through its engine (full, differential or log backups)."""

    category = Category.DATABASE

    def __init__(self, engine: Engine, settings: Settings, progress: Progress | None = None):
        self.engine = engine
        self.settings = settings
        self.name = settings.database.name
        self.progress = progress

    def decide(self, tiers: Sequence[Tier], kind: BackupKind, logger: Logger) -> BackupJob:
        decided = backup.decide_job(tiers, kind, self.settings)
        decision = decided.decision
        for note in decision.notes:
            logger.warning(note)
        for backup_id, parent_id in decided.lost:
            logger.warning(
                "backup %s of %s builds on backup %s, which no tier%s holds: the chain has a "
                "gap there, and a restore to a point from %s on cannot be made",
                backup_id,
                self.name,
                parent_id,
                f" that could be listed ({', '.join(decided.unlisted)} could not)"
                if decided.unlisted
                else "",
                backup_id,
            )
        parent_tier, *others = decided.parent_tiers or (None,)
        if decision.parent is not None and parent_tier is not None:
            logger.info(
                "%s backup builds on %s (read from %s)",
                decision.kind.value,
                decision.parent.id,
                parent_tier.name,
            )
        return BackupJob.start(
            self.name,
            decision,
            datetime.now(UTC),
            parent_tier,
            other_parent_tiers=tuple(t for t in others if t is not None),
        )

    def dump(self, job: BackupJob, logger: Logger) -> Dump:
        repair = (
            partial(
                maintenance.repair_damaged,
                job.decision.parent,
                settings=self.settings,
                logger=logger,
            )
            if job.decision.parent is not None
            else None
        )
        dump = backup.dump_database(self.engine, job, self.settings, logger, repair)
        logger.info(
            "%s dump of %s taken at %s: %s",
            dump.kind.value,
            job.database,
            dump.restore_point.isoformat(),
            ", ".join(f"{f.role} {f.path.stat().st_size} bytes" for f in dump.files),
        )
        return dump

    def cleanup(self, dump: Dump | None) -> None:
        if dump is not None:
            self.engine.cleanup(dump)


class FileSetSubject(Subject):
    """One file set: a tar stream per backup, or (content-addressed sets) each distinct
    content stored once, with the member list of the previous backup reused for unchanged
    files."""

    engine: FileSetEngine

    def __init__(self, name: str, settings: Settings, progress: Progress | None = None):
        self.name = name
        self.category = FILE_SETS[name]
        self.file_set = getattr(settings.files, name)
        self.engine = FileSetEngine(name, self.file_set, staging_dir=settings.staging_dir)
        self.settings = settings
        self.progress = progress
        self.previous: tuple[Manifest, Tier] | None = None

    def decide(self, tiers: Sequence[Tier], kind: BackupKind, logger: Logger) -> BackupJob:
        del kind  # a file set is always stored whole (contents are deduplicated instead)
        if is_content_addressed(self.name):
            self.previous = contents.latest_backup(tiers, self.category, self.name)
        if self.previous and not backup.readable_with(self.previous[0], self.previous[1].keyring):
            logger.warning(
                "the previous backup %s of %s is encrypted to a key this worker holds no "
                "identity for, so every file is read and hashed again (set "
                "BACKUPFLOW_CRYPTO__IDENTITIES on the worker to reuse its hashes)",
                self.previous[0].id,
                self.name,
            )
        decision: BackupDecision[Manifest] = BackupDecision(BackupKind.FULL)
        return BackupJob.start(self.name, decision, datetime.now(UTC), category=self.category)

    def _reference(self) -> BackupSource | None:
        if self.previous is None:
            return None
        manifest, tier = self.previous
        if not backup.readable_with(manifest, tier.keyring):
            return None
        return backup.source_of(
            tier.storage,
            manifest,
            chunk_bytes=self.settings.pipeline.chunk_bytes,
            keyring=tier.keyring,
        )

    def dump(self, job: BackupJob, logger: Logger) -> Dump:
        staging = backup.prepare_staging(job, self.settings)
        dump = self.engine.dump(BackupKind.FULL, self._reference(), staging)
        privatize_files(staging)  # the tar holds the 0600 .env: 0600 whatever tarfile did
        logger.info(
            "%s: %s members, %s bytes (%s)",
            job.database,
            dump.position.get("members"),
            dump.position.get("bytes"),
            dump.position.get("layout"),
        )
        return dump

    def store(
        self, tier: Tier, job: BackupJob, dump: Dump, codec: Codec, logger: Logger
    ) -> tuple[StoredObject, ...]:
        stored: tuple[StoredObject, ...] = ()
        if is_content_addressed(self.name):
            previous = self.previous[0] if self.previous else None
            members_file = next(f.path for f in dump.files if f.role == "members")
            stored = contents.store_contents(
                tier.storage,
                job,
                members_file,
                self.file_set,
                codec,
                self.engine.report,
                previous=previous,
                scratch=job.staging(self.settings) / "content",
                chunk_bytes=self.settings.pipeline.chunk_bytes,
                progress=self.progress,
                keyring=tier.keyring,
            )
            reused = {o.key for o in previous.objects} if previous else set()
            new = [r for r in stored if r.key not in reused]
            logger.info(
                "%s: %d distinct contents, %d new (%d bytes stored), %d already in the tier",
                tier.name,
                len(stored),
                len(new),
                sum(r.size for r in new),
                len(stored) - len(new),
            )
        return stored + super().store(tier, job, dump, codec, logger)

    def notes(self) -> tuple[str, ...]:
        return self.engine.report.notes()

    def failure(self, manifest: Manifest) -> str | None:
        unreadable = self.engine.report.unreadable
        if not unreadable:
            return None
        return (
            f"{len(unreadable)} file(s) of {self.name} could not be read and are not in backup "
            f"{manifest.id} (the rest is stored): {', '.join(unreadable[:10])}"
        )
