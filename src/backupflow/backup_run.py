"""The one backup run: every backup (a database, a file set) goes through :func:`run_backup`.

Order: heal the tiers (copy what earlier runs left missing, clear left-overs of interrupted
runs) -> decide (plan: kind, parent) -> dump into private staging -> store in the first
tier that accepts it (compress, encrypt, hash, verified) -> copy to the other tiers
(verified) -> a signed manifest per tier, each written last -> log -> retention, only after
a backup that reached every tier.

What a backup is *of* is a :class:`Subject`: :class:`DatabaseSubject` (through a database
engine) or :class:`FileSetSubject`.  The flows, the CLI (through the flows) and the tests
all call this same function; each step goes through a :class:`~backupflow.steps.Steps`
runner, which the flows make Prefect tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from backupflow import backup, series, tiers
from backupflow.backup import BackupJob
from backupflow.backuplog import BackupLog
from backupflow.catalog import Catalog
from backupflow.codecs import Codec, codec_for
from backupflow.config import Settings
from backupflow.engines.base import BackupSource, Dump, Engine
from backupflow.errors import BackupflowError, ConfigError, StorageError, TierError
from backupflow.filesets import FILE_SETS, is_content_addressed
from backupflow.filesets.contents import (
    latest_backup,
    store_contents,
)
from backupflow.filesets.engine import FileSetEngine
from backupflow.fsutil import privatize_files
from backupflow.keys import Keyring
from backupflow.maintenance import heal_tiers, prune_series
from backupflow.models import BackupKind, Category, Manifest, StoredObject
from backupflow.planning import BackupDecision
from backupflow.progress import Progress, current_progress
from backupflow.reporting import iso, manifest_row
from backupflow.steps import COPY, DECIDE, DUMP, LOG, MANIFEST, PRUNE, STORE, Logger, Steps
from backupflow.storage import Tier

__all__ = [
    "BackupOutcome",
    "DatabaseSubject",
    "FileSetSubject",
    "Subject",
    "run_backup",
    "run_database_backups",
]


@dataclass
class BackupOutcome:
    """Where a backup was stored, why not elsewhere, and what the run found on the way."""

    manifest: Manifest
    stored_on: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    healing: tiers.ReplicationReport = field(default_factory=tiers.ReplicationReport)
    #: A failure that did not stop the backup (files that could not be read).
    failure: str | None = None

    @property
    def gaps(self) -> list[str]:
        """Tiers that lack this backup or an earlier one."""
        return [f"{name}: {why}" for name, why in self.missing.items()] + self.healing.problems

    @property
    def complete(self) -> bool:
        return not self.gaps and self.failure is None

    def row(self) -> dict[str, Any]:
        """One table row for reports and artifacts."""
        return {
            **manifest_row(self.manifest),
            "tiers": ", ".join(self.stored_on),
            "missing": ", ".join(self.missing) or "-",
            "notes": "; ".join(self.manifest.notes) or "-",
        }


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
        """Store the dump in the first tier (compressed, encrypted, hashed, verified)."""
        objects = backup.store_dump(
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
        decision, parent_tier = backup.decide_backup(tiers, kind, self.settings)
        for note in decision.notes:
            logger.warning(note)
        if decision.parent is not None and parent_tier is not None:
            logger.info(
                "%s backup builds on %s (read from %s)",
                decision.kind.value,
                decision.parent.id,
                parent_tier.name,
            )
        return BackupJob.start(self.name, decision, datetime.now(UTC), parent_tier)

    def dump(self, job: BackupJob, logger: Logger) -> Dump:
        dump = backup.dump_database(self.engine, job, self.settings)
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
            self.previous = latest_backup(tiers, self.category, self.name)
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
        if self.previous is None or not backup.readable_with(*self._previous_keys()):
            return None
        manifest, tier = self.previous
        return backup.source_of(
            tier.storage,
            manifest,
            chunk_bytes=self.settings.pipeline.chunk_bytes,
            keyring=tier.keyring,
        )

    def _previous_keys(self) -> tuple[Manifest, Keyring]:
        assert self.previous is not None
        return self.previous[0], self.previous[1].keyring

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
        contents: tuple[StoredObject, ...] = ()
        if is_content_addressed(self.name):
            previous = self.previous[0] if self.previous else None
            members_file = next(f.path for f in dump.files if f.role == "members")
            contents = store_contents(
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
            new = [r for r in contents if r.key not in reused]
            logger.info(
                "%s: %d distinct contents, %d new (%d bytes stored), %d already in the tier",
                tier.name,
                len(contents),
                len(new),
                sum(r.size for r in new),
                len(contents) - len(new),
            )
        return contents + super().store(tier, job, dump, codec, logger)

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


def _store_on_tiers(
    subject: Subject, all_tiers: Sequence[Tier], job: BackupJob, dump: Dump, steps: Steps
) -> BackupOutcome:
    """Store in the first tier that accepts the backup, copy to the others, manifest last.

    A tier that fails is recorded and the others go on; no tier at all is an error.
    """
    settings = subject.settings
    codec = codec_for(settings.pipeline)
    manifest: Manifest | None = None
    holder: Tier | None = None
    outcome_tiers: list[str] = []
    missing: dict[str, str] = {}
    for tier in all_tiers:
        try:
            if holder is None or manifest is None:
                objects = steps.run(
                    STORE,
                    f"compress-and-store-{job.backup_id}-{tier.name}",
                    partial(subject.store, tier, job, dump, codec, steps.logger),
                )
                manifest = backup.build_manifest(
                    job, subject.engine, dump, objects, datetime.now(UTC), subject.notes()
                )
            else:
                source, this = holder, manifest
                steps.run(
                    COPY,
                    f"copy-{this.id}-{source.name}-to-{tier.name}",
                    partial(_copy, this, source, tier, settings, steps.logger),
                )
            steps.run(
                MANIFEST,
                f"write-manifest-{manifest.id}-{tier.name}",
                partial(_write_manifest, tier, manifest, steps.logger),
            )
        except BackupflowError as exc:
            missing[tier.name] = str(exc)
            steps.logger.error(
                "backup %s could not be stored in %s: %s", job.backup_id, tier.name, exc
            )
            continue
        holder = holder or tier
        outcome_tiers.append(tier.name)
    if manifest is None or not outcome_tiers:
        raise StorageError(
            f"backup {job.backup_id} could not be stored on any tier: "
            + "; ".join(f"{name}: {why}" for name, why in missing.items())
        )
    return BackupOutcome(manifest, outcome_tiers, missing)


def _copy(manifest: Manifest, source: Tier, dest: Tier, settings: Settings, logger: Logger) -> None:
    """Upload (secondary) or replicate (DR) a stored backup, verifying every object."""
    tiers.copy_backup(manifest, source, dest, chunk_bytes=settings.pipeline.chunk_bytes)
    logger.info("copied backup %s from %s to %s", manifest.id, source.name, dest.name)


def _write_manifest(tier: Tier, manifest: Manifest, logger: Logger) -> str:
    """Write the manifest last: only now is the backup listed in this tier."""
    key = Catalog(tier.storage, tier.keyring).write(manifest)
    logger.info("backup %s recorded in %s", manifest.id, tier.name)
    return key


def run_backup(
    subject: Subject,
    all_tiers: Sequence[Tier],
    steps: Steps,
    *,
    kind: BackupKind = BackupKind.FULL,
    on_stored: Callable[[BackupOutcome], None] | None = None,
) -> BackupOutcome:
    """Take one backup of ``subject`` to every tier; see the module docstring for the order.

    A tier that fails does not stop the others: the backup is kept where it could be stored
    and the run raises :class:`TierError` naming the missing tier (after ``on_stored``, which
    the flows use to publish the artifact), and nothing is pruned.  Retention runs last,
    only after a backup that reached every tier.
    """
    settings = subject.settings
    log = BackupLog(settings.backup_log)
    log.check_writable()
    job: BackupJob | None = None
    dump: Dump | None = None
    try:
        backup.check_backup_keys(all_tiers[0].keyring if all_tiers else Keyring())
        subject.check(kind)
        healing = heal_tiers(all_tiers, subject.category, subject.name, settings, steps)
        job = steps.run(
            DECIDE,
            f"decide-{kind.value}-backup",
            lambda: subject.decide(all_tiers, kind, steps.logger),
        )
        this_job = job
        dump = steps.run(
            DUMP, f"dump-{job.backup_id}", lambda: subject.dump(this_job, steps.logger)
        )
        outcome = _store_on_tiers(subject, all_tiers, job, dump, steps)
    except BackupflowError as exc:
        failed_job, error = job, str(exc)
        steps.run(
            LOG,
            "log-backup-failed",
            lambda: log.append(
                "backup",
                status="failed",
                id=failed_job.backup_id if failed_job else "-",
                category=subject.category.value,
                kind=failed_job.decision.kind.value if failed_job else kind.value,
                database=subject.name,
                error=error,
            ),
        )
        raise
    finally:
        if job is not None:
            backup.remove_staging(job, settings)
        subject.cleanup(dump)
    outcome.healing = healing
    outcome.failure = subject.failure(outcome.manifest)
    return _finish(subject, outcome, all_tiers, log, steps, on_stored)


def _finish(
    subject: Subject,
    outcome: BackupOutcome,
    all_tiers: Sequence[Tier],
    log: BackupLog,
    steps: Steps,
    on_stored: Callable[[BackupOutcome], None] | None,
) -> BackupOutcome:
    """Log, publish, fail on a missing tier, else apply retention."""
    manifest = outcome.manifest
    for note in manifest.notes:
        steps.logger.warning(note)
    what = "Database" if subject.category is Category.DATABASE else subject.name.capitalize()
    steps.run(
        LOG,
        "log-backup-completed",
        lambda: log.append(
            "backup",
            status="completed" if not outcome.missing and not outcome.failure else "incomplete",
            message=f"{what} backup completed at {iso(manifest.finished_at)}",
            category=manifest.category.value,
            tiers=outcome.stored_on,
            missing=outcome.missing,
            **manifest_row(manifest),
        ),
    )
    if on_stored is not None:
        on_stored(outcome)
    steps.logger.info("backup %s stored on %s", manifest.id, ", ".join(outcome.stored_on))
    if outcome.gaps:
        raise TierError(
            f"backup {manifest.id} is stored on {', '.join(outcome.stored_on)} but a tier is "
            f"missing backups ({'; '.join(outcome.gaps)}); the next backup run or `backupflow "
            "replicate` copies them once the tier is reachable; nothing was pruned."
        )
    if outcome.failure:
        raise BackupflowError(outcome.failure)
    for tier in all_tiers:
        try:
            steps.run(
                PRUNE,
                f"prune-{subject.name}-{tier.name}",
                partial(
                    prune_series,
                    tier,
                    manifest.category,
                    manifest.database,
                    subject.settings,
                    steps.logger,
                    log=log,
                ),
            )
        except BackupflowError as exc:
            steps.logger.error("retention could not run in %s: %s", tier.name, exc)
    return outcome


def run_database_backups(
    settings: Settings,
    steps: Steps,
    *,
    kind: BackupKind,
    open_engine: Callable[[Settings], Engine],
    open_tiers: Callable[[Settings], list[Tier]],
    slot: Callable[[], AbstractContextManager[object]] = nullcontext,
    on_stored: Callable[[BackupOutcome], None] | None = None,
) -> list[BackupOutcome]:
    """Back up every database the settings name (:func:`backupflow.series.databases`), in
    turn, each inside ``slot`` (the flows pass the global concurrency limit).

    With one database its error is raised as it is; with several, each is tried and the run
    fails at the end saying which failed.  Names the server lists for ``["*"]`` that break
    the name rule are never used: they are counted, and the run fails saying how many.
    """
    names, skipped = series.databases(settings, open_engine)
    done: list[BackupOutcome] = []
    failures: list[str] = []
    if skipped:
        failures.append(
            f"{skipped} database(s) on the server have names that break the name rule and "
            "were not backed up; rename them, or list the databases to back up in "
            "BACKUPFLOW_DATABASE__DATABASES"
        )
        steps.logger.warning("%s", failures[-1])
    for name in names:
        one = series.for_database(settings, name)
        try:
            with slot():
                subject = DatabaseSubject(open_engine(one), one, current_progress())
                done.append(
                    run_backup(subject, open_tiers(one), steps, kind=kind, on_stored=on_stored)
                )
        except BackupflowError as exc:
            if len(names) == 1 and not skipped:
                raise
            failures.append(f"{name}: {exc}")
    if failures:
        failed = len(failures) - (1 if skipped else 0) + skipped
        raise BackupflowError(
            f"{failed} of {len(names) + skipped} database backups failed: " + "; ".join(failures)
        )
    return done
