"""Flow: restore one file set to a point in time or its latest state, into a folder or in place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from backupflow.backup import source_of
from backupflow.backuplog import BackupLog
from backupflow.config import current_settings
from backupflow.errors import BackupflowError, EngineError, ParameterError
from backupflow.filesets import FILE_SETS, FileSetName
from backupflow.filesets.contents import HookResult, run_configured_hook
from backupflow.filesets.engine import Change, FileSetEngine, plan_changes, read_members
from backupflow.models import Manifest
from backupflow.parameters import check_target_time
from backupflow.planning import RestorePlan
from backupflow.progress import current_progress
from backupflow.reporting import artifact_key, iso
from backupflow.restore import RestoreOutcome
from backupflow.restore_run import finish_restore, prepare_restore
from backupflow.storage import SourceName, Tier, tiers_for
from backupflow.targets import check_restore_target
from flows._notify import notify_on_cancellation, notify_on_crashed, notify_on_failure
from tasks.backuplog import log_event
from tasks.steps import PrefectSteps

__all__ = ["FilesRestoreReport", "restore_files"]


@dataclass(frozen=True)
class FilesRestoreReport:
    """The plan, the changes it makes (or would make), and what the restore did."""

    plan: RestorePlan[Manifest]
    target: Path
    changes: tuple[Change, ...]
    problems: tuple[str, ...]
    outcome: RestoreOutcome | None
    hook: HookResult | None = None


@flow(
    name="restore-files",
    flow_run_name="restore-files-{file_set}",
    persist_result=False,
    on_failure=[notify_on_failure("recovery_owner")],
    on_crashed=[notify_on_crashed("recovery_owner")],
    on_cancellation=[notify_on_cancellation("recovery_owner")],
)
def restore_files(
    file_set: FileSetName = "config",
    target_time: datetime | None = None,
    into: str | None = None,
    in_place: bool = False,
    dry_run: bool = False,
    source: SourceName = "auto",
    run_post_restore_hook: bool = True,
) -> FilesRestoreReport:
    """Restore a file set from the backups.

    Files are staged and verified first.  ``in_place`` puts them over the live files, which
    are first kept aside (undo with ``backupflow restore files --undo``), then runs the
    configured post-restore command; otherwise they go into ``into`` (an empty or new
    folder) or a new folder under the staging directory.
    """
    settings = current_settings()
    logger = get_run_logger()
    if in_place and into is not None:
        raise ParameterError("give into or in_place, not both.")
    if into is not None:
        check_restore_target(Path(into), settings, "into")
    target_time = check_target_time(target_time, settings.timezone, datetime.now(UTC))
    log = BackupLog(settings.backup_log)
    if not dry_run:
        log.check_writable()
    chosen = getattr(settings.files, file_set)
    engine = FileSetEngine(file_set, chosen, staging_dir=settings.staging_dir)
    steps = PrefectSteps()
    prepared = prepare_restore(
        engine,
        tiers_for(settings, source),
        file_set,
        steps,
        target_time=target_time,
        into=chosen.root if in_place else (Path(into) if into else None),
        replace=in_place,
        category=FILE_SETS[file_set],
    )
    loaded, plan, target = prepared.loaded, prepared.plan, prepared.target
    first: Tier = loaded.sources[plan.last.id][0]
    members = read_members(
        source_of(
            first.storage,
            plan.last,
            chunk_bytes=settings.pipeline.chunk_bytes,
            keyring=first.keyring,
        )
    )
    changes = tuple(plan_changes(members, target, where=f"backup {plan.last.id}"))
    counts = {a: sum(1 for _p, act in changes if act == a) for a in ("create", "replace")}
    logger.info(
        "restore %s (%s) into %s: %d to create, %d to replace",
        file_set,
        iso(plan.restore_point),
        target,
        counts["create"],
        counts["replace"],
    )
    if dry_run:
        return FilesRestoreReport(plan, target, changes, loaded.problems, None)
    try:
        outcome = finish_restore(
            prepared, steps, chunk_bytes=settings.pipeline.chunk_bytes, progress=current_progress()
        ).outcome
        assert outcome is not None
    except BackupflowError as exc:
        log_event(log, "restore-files", "failed", set=file_set, target=str(target), error=str(exc))
        raise
    hook = None
    if in_place and run_post_restore_hook and settings.files.post_restore_hook:
        hook = run_configured_hook(settings)
        logger.info(
            "post-restore command %s exited %d: %s", hook.command, hook.returncode, hook.output
        )
    summary = {
        "set": file_set,
        "restore_point": iso(plan.restore_point),
        "target": str(target),
        "created": counts["create"],
        "replaced": counts["replace"],
        "kept_aside": ", ".join(str(p) for p in outcome.kept_aside) or "-",
        "tiers_used": ", ".join(sorted(set(outcome.tiers_used.values()))),
        "hook": f"exit {hook.returncode}" if hook else "-",
    }
    log_event(
        log,
        "restore-files",
        "completed" if hook is None or hook.ok else "hook-failed",
        hook_output=hook.output if hook else None,
        **summary,
    )
    create_table_artifact(
        key=artifact_key("restore", file_set),
        table=[summary],
        description=f"Latest {file_set} restore",
    )
    if hook is not None and not hook.ok:
        raise EngineError(
            f"the {file_set} files were restored into {target}, but the post-restore command "
            f"{' '.join(hook.command)} failed with exit code {hook.returncode}: "
            f"{hook.output.strip()[-300:]}"
        )
    return FilesRestoreReport(
        plan, target, changes, loaded.problems + outcome.problems, outcome, hook
    )
