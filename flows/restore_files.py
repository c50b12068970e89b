"""Flow: restore one file set to a point in time or its latest state, into a folder or in place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow

from backupflow.backup import source_of
from backupflow.backuplog import BackupLog
from backupflow.config import current_settings
from backupflow.errors import BackupflowError, EngineError, ParameterError
from backupflow.filesets import FILE_SETS, FileSetName
from backupflow.filesets.contents import HookResult, run_configured_hook
from backupflow.filesets.engine import Change, FileSetEngine, plan_changes, read_members
from backupflow.models import Manifest
from backupflow.parameters import LocalTime, check_target_time
from backupflow.planning import RestorePlan
from backupflow.progress import current_progress
from backupflow.reporting import (
    EMPTY,
    artifact_key,
    iso,
    local_and_utc,
    recovery_point,
    recovery_time,
    short_chain,
)
from backupflow.restore import RestoreOutcome
from backupflow.restore_run import finish_restore, prepare_restore
from backupflow.storage import SourceName, Tier, tiers_for
from backupflow.targets import check_restore_target
from flows._notify import notify_on_cancellation, notify_on_failure
from flows._publish import (
    failed_row,
    log_target,
    prepend_history,
    run_logger,
    run_name,
    run_started,
)
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
    flow_run_name=run_name("restore-files", "file_set=config", target=True),
    persist_result=False,
    on_failure=[notify_on_failure("recovery_owner")],
    on_cancellation=[notify_on_cancellation("recovery_owner")],
)
def restore_files(
    file_set: FileSetName = "config",
    target_time: LocalTime = None,
    into: str | None = None,
    in_place: bool = False,
    dry_run: bool = False,
    source: SourceName = "auto",
    run_post_restore_hook: bool = True,
    accept_earlier: bool = False,
) -> FilesRestoreReport:
    """Restore a file set from the backups.

    Files are staged and verified first.  ``in_place`` puts them over the live files, which
    are first kept aside (undo with ``backupflow restore files --undo``), then runs the
    configured post-restore command; otherwise they go into ``into`` (an empty or new
    folder) or a new folder under the staging directory.  The artifact ``restore-<set>``
    leads with the result, RTO and RPO (docs/objectives.md).

    Args:
        file_set: Which file set to restore: config, uploads or logs.
        target_time: Restore the newest backup at or before this time (ISO-8601; without an
            offset it is read in the settings' timezone). Leave it empty for the latest
            state.
        into: An empty or new folder (absolute, under the allowed restore folders) to
            restore into. Empty: a new folder under the staging directory.
        in_place: Put the files over the live ones (kept aside first), then run the
            post-restore command. Not together with into.
        dry_run: Only list what would be created or replaced; change nothing.
        source: The tier to read: auto (primary, then secondary, then dr, falling back to
            the next tier when a copy is missing or damaged), primary, secondary or dr.
        run_post_restore_hook: Run the configured post-restore command after an in_place
            restore.
        accept_earlier: When target_time lies after every backup of the set, restore the
            latest one instead of failing.
    """
    flow_start = datetime.now(UTC)
    started = run_started(flow_start)
    settings = current_settings()
    try:
        logger = run_logger()
        if in_place and into is not None:
            raise ParameterError("give into or in_place, not both.")
        if into is not None:
            check_restore_target(Path(into), settings, "into")
        target_time = check_target_time(target_time, settings.timezone, flow_start)
        log_target(target_time, settings.timezone)
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
            accept_earlier=accept_earlier,
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
                prepared,
                steps,
                chunk_bytes=settings.pipeline.chunk_bytes,
                progress=current_progress(),
                started=started,
            ).outcome
            assert outcome is not None
        except BackupflowError as exc:
            log_event(
                log, "restore-files", "failed", set=file_set, target=str(target), error=str(exc)
            )
            raise
        hook = None
        if in_place and run_post_restore_hook and settings.files.post_restore_hook:
            hook = run_configured_hook(settings)
            logger.info(
                "post-restore command %s exited %d: %s", hook.command, hook.returncode, hook.output
            )

        def row(when: Callable[[datetime], str]) -> dict[str, Any]:
            """Result, RTO, RPO, the requested target and the restore point first; chain last."""
            assert outcome is not None
            return {
                "result": "restored and verified"
                if hook is None or hook.ok
                else "restored, post-restore command failed",
                "rto_seconds": round(
                    recovery_time(started, outcome.finished_at).total_seconds(), 2
                ),
                "rpo_seconds": round(
                    recovery_point(plan.restore_point, plan.requested, started).total_seconds(), 2
                ),
                "requested": when(plan.requested) if plan.requested else "latest",
                "restore_point": when(plan.restore_point),
                "set": file_set,
                "target": str(target),
                "created": counts["create"],
                "replaced": counts["replace"],
                "kept_aside": ", ".join(str(p) for p in outcome.kept_aside) or EMPTY,
                "tiers_used": ", ".join(sorted(set(outcome.tiers_used.values()))) or EMPTY,
                "hook": f"exit {hook.returncode}" if hook else EMPTY,
                "chain": short_chain([m.id for m in plan.manifests]),
            }

        summary = row(iso)
        log_event(
            log,
            "restore-files",
            "completed" if hook is None or hook.ok else "hook-failed",
            hook_output=hook.output if hook else None,
            **summary,
        )
        shown = row(lambda moment: local_and_utc(moment, settings.timezone))
        prepend_history(
            artifact_key("restore", file_set),
            {"result": shown.pop("result"), "reason": EMPTY, **shown},
            f"Restores of the {file_set} files, newest first",
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
    except BackupflowError as exc:
        if not dry_run:
            prepend_history(
                artifact_key("restore", file_set),
                {**failed_row(exc, target_time, settings.timezone, into), "set": file_set},
                f"Restores of the {file_set} files, newest first",
            )
        raise
