"""The one backup run: every backup (a database, a file set) goes through :func:`run_backup`.

Order: remove staging folders of killed runs (never a running one's) -> heal the tiers
(copy what earlier runs left missing, clear left-overs of interrupted runs) -> decide (plan:
kind, parent) -> dump into private staging -> store in the first tier that accepts it
(compress, encrypt, hash, verified) and holds the backup's parent -> copy to the other tiers
that hold it (verified) -> a signed manifest per tier, each written last -> log ->
retention, only after a backup that reached every tier.

What a backup is *of* is a :class:`~backupflow.subjects.Subject`: a database (through its
engine) or a file set (:mod:`backupflow.subjects`).  The flows, the CLI (through the flows)
and the tests all call this same function; each step goes through a
:class:`~backupflow.steps.Steps` runner, which the flows make Prefect tasks.
"""

from __future__ import annotations

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
from backupflow.codecs import codec_for
from backupflow.config import Settings
from backupflow.engines.base import Dump, Engine
from backupflow.engines.registry import ENGINES
from backupflow.errors import BackupflowError, StorageError, TierError
from backupflow.keys import Keyring
from backupflow.leftovers import clean_leftovers
from backupflow.maintenance import heal_tiers, prune_series
from backupflow.models import BackupKind, Category, Manifest
from backupflow.progress import current_progress
from backupflow.reporting import iso, manifest_row
from backupflow.steps import COPY, DECIDE, DUMP, LOG, MANIFEST, PRUNE, STORE, Logger, Steps
from backupflow.storage import Tier
from backupflow.subjects import DatabaseSubject, FileSetSubject, Subject

__all__ = [
    "BackupOutcome",
    "DatabaseSubject",
    "FileSetSubject",
    "Subject",
    "run_backup",
    "run_database_backups",
    "skip_reason",
]


def skip_reason(engine: Engine, kind: BackupKind) -> str | None:
    """Why a ``kind`` backup is not taken at all with ``engine`` (a differential on an engine
    that has none: the deployments run it on every series, and it must end Completed), or
    None when it is taken."""
    if kind is not BackupKind.DIFF or engine.capabilities.differential:
        return None
    spec = ENGINES.get(engine.name)
    if spec is not None and spec.no_differential is not None:
        return spec.no_differential
    return (
        f"the {engine.name} engine has no differential backups; nothing was taken: the log "
        "backups cover the time since the full"
    )


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


def _store_on_tiers(
    subject: Subject, all_tiers: Sequence[Tier], job: BackupJob, dump: Dump, steps: Steps
) -> BackupOutcome:
    """Store in the first tier that accepts the backup, copy to the others, manifest last.

    A tier that fails is recorded and the others go on; no tier at all is an error.  A
    diff or log is not stored in a tier that lacks its parent or base (recorded as "lacks
    parent <id>"): the next run's heal copies the parent there, then this backup.
    """
    settings = subject.settings
    codec = codec_for(settings.pipeline)
    manifest: Manifest | None = None
    holder: Tier | None = None
    outcome_tiers: list[str] = []
    missing: dict[str, str] = {}
    for tier in all_tiers:
        try:
            lacking = _lacks_parent(tier, job)
            if lacking is not None:
                missing[tier.name] = f"lacks parent {lacking}"
                steps.logger.error(
                    "backup %s was not stored in %s: that tier lacks its parent %s, without "
                    "which it restores nothing; the next run copies the parent and then it",
                    job.backup_id,
                    tier.name,
                    lacking,
                )
                continue
            if holder is None or manifest is None:
                objects = steps.run(
                    STORE,
                    f"compress-and-store-{job.backup_id}-{tier.name}",
                    partial(subject.store, tier, job, dump, codec, steps.logger),
                    hold=settings.upload_limit(tier.name),
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
                    hold=settings.upload_limit(tier.name),
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


def _lacks_parent(tier: Tier, job: BackupJob) -> str | None:
    """The id of the parent (or base) of a diff or log that ``tier``'s catalog does not
    list, or None: a backup stored without it could not be restored from that tier."""
    decision = job.decision
    needed = [m.id for m in (decision.parent, decision.base) if m is not None]
    if not needed:
        return None
    entries, _ = Catalog(tier.storage, tier.keyring).listing(job.category, job.database)
    held = {entry.id for entry in entries}
    return next((backup_id for backup_id in needed if backup_id not in held), None)


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
        clean_leftovers(subject.engine, settings, steps.logger)
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
    on_skipped: Callable[[str, str], None] | None = None,
) -> list[BackupOutcome]:
    """Back up every database the settings name (:func:`backupflow.series.databases`), in
    turn, each inside ``slot`` (the flows pass the global concurrency limit).

    A differential of a database whose engine has none (PostgreSQL) is skipped: nothing is
    taken, the reason is logged as a warning, written to the backup log (event
    ``backup-skipped``) and handed to ``on_skipped(database, reason)``, and the run goes on
    (it ends Completed).

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
                engine = open_engine(one)
                reason = skip_reason(engine, kind)
                if reason is not None:
                    _skip(one, name, kind, reason, steps, on_skipped)
                    continue
                subject = DatabaseSubject(engine, one, current_progress())
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


def _skip(
    settings: Settings,
    name: str,
    kind: BackupKind,
    reason: str,
    steps: Steps,
    on_skipped: Callable[[str, str], None] | None,
) -> None:
    """Say why nothing was taken: the run's log, the backup log, the caller's hook."""
    steps.logger.warning("%s backup of %s skipped: %s", kind.value, name, reason)
    log = BackupLog(settings.backup_log)
    steps.run(
        LOG,
        f"log-{kind.value}-backup-skipped",
        lambda: log.append(
            "backup-skipped",
            status="skipped",
            category=Category.DATABASE.value,
            kind=kind.value,
            database=name,
            message=reason,
        ),
    )
    if on_skipped is not None:
        on_skipped(name, reason)
