"""Flow: back up the configured database(s) (full, differential or log) to every tier."""

from __future__ import annotations

from collections.abc import Callable

from prefect import flow

from backupflow.backup_run import run_database_backups
from backupflow.config import current_settings
from backupflow.engines import open_engine
from backupflow.models import BackupKind, Manifest
from backupflow.reporting import artifact_key
from backupflow.storage import open_tiers
from flows._notify import notify_on_cancellation, notify_on_failure
from flows._publish import markdown_artifact, publish_backup
from flows._slots import slot
from tasks.steps import PrefectSteps

__all__ = ["backup_database"]


def _publish_skipped(kind: BackupKind) -> Callable[[str, str], None]:
    def publish(database: str, reason: str) -> None:
        markdown_artifact(
            key=artifact_key("backup", "database", database, kind.value),
            markdown=f"**{kind.value} backup of {database}: skipped.** {reason}.",
            description=f"Latest {kind.value} backup of database {database}",
        )

    return publish


@flow(
    name="backup-database",
    flow_run_name="backup-database-{kind}",
    persist_result=False,
    on_failure=[notify_on_failure("backup_administrator")],
    on_cancellation=[notify_on_cancellation("backup_administrator")],
)
def backup_database(kind: BackupKind = BackupKind.FULL) -> list[Manifest]:
    """Back up the configured database(s) to the primary, secondary and DR tiers.

    It first copies to each tier whatever an earlier run left missing there.  A tier that
    fails does not stop the others: the backup is kept where it could be stored and the run
    ends Failed naming the missing tier.  A differential or log backup with no full backup
    to build on becomes a full backup (``database.missing_full=promote``) or fails (``fail``).
    With several databases (``database.databases``), each is backed up in turn and the run
    fails at the end if any of them failed.  With ``["*"]``, a database whose name breaks the
    name rule is never used: it is skipped, and the run fails at the end saying how many.

    Args:
        kind: full (the whole database), diff (the changes since the last full backup) or
            log (the changes since the last backup of any kind).
    """
    settings = current_settings()
    outcomes = run_database_backups(
        settings,
        PrefectSteps(),
        kind=kind,
        open_engine=open_engine,
        open_tiers=open_tiers,
        slot=lambda: slot(settings),
        on_stored=publish_backup,
        on_skipped=_publish_skipped(kind),
    )
    return [outcome.manifest for outcome in outcomes]
