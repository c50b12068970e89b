"""What a refused or failed SQL Server restore or swap tells the user, and the swap's undo.

Server errors arrive as :class:`~backupflow.engines.mssql.connection.ServerFailed` with
their numbers; the ones a restore can meet are turned into the error tree's classes here:

* DBCC CHECKDB consistency errors (25xx, 89xx, and the I/O errors 823-825) raised at
  severity 16 -> :class:`IntegrityError`;
* 4305 (a log begins after the point reached: one is missing) and 4326 (a log ends before
  it) -> :class:`ChainGapError`;
* 3201 (the server cannot open the copied file) -> :class:`EngineError` naming the folders;
* a failed tail-log backup (taken first, before anything is built) -> :class:`EngineError`.

Every message of a failed restore says that the live database was not touched: a restore
only ever writes the scratch database (the tail before it only reads the live log,
``COPY_ONLY``).
"""

from __future__ import annotations

from collections.abc import Sequence

from backupflow.engines.mssql.connection import ServerFailed, SqlSession
from backupflow.engines.mssql.restoring import SwapStep
from backupflow.errors import (
    BackupflowError,
    ChainGapError,
    EngineError,
    IntegrityError,
    RestoreTargetError,
)
from backupflow.models import Manifest
from backupflow.vocabulary import flag

__all__ = ["is_consistency_error", "refuse_replace", "restore_failed", "run_swap", "tail_failed"]

#: Summaries and repair hints among the DBCC numbers (severity 10): not findings themselves.
_DBCC_INFO = {8954, 8958, 8989, 8990}
_UNTOUCHED = "the live database was not touched"


def is_consistency_error(number: int) -> bool:
    """A DBCC CHECK finding (2500-2599, 8900-8999 but the summaries) or a page I/O error."""
    return (
        (2500 <= number <= 2599 or 8900 <= number <= 8999) and number not in _DBCC_INFO
    ) or number in (823, 824, 825)


def restore_failed(
    exc: ServerFailed, manifest: Manifest | None, scratch: str, statement: str
) -> BackupflowError:
    """The error for a failed statement of the scratch restore (``manifest`` is the backup
    it restored, None for RECOVERY and CHECKDB)."""
    shown = exc.shown()
    numbers = exc.numbers
    if statement.startswith("DBCC CHECKDB"):
        if any(is_consistency_error(n) for n in numbers):
            return IntegrityError(
                f"DBCC CHECKDB found consistency errors in the restored copy {scratch} "
                f"({shown}); it was not installed and {_UNTOUCHED}, so restore from an "
                "earlier backup or another tier."
            )
        return EngineError(
            f"DBCC CHECKDB could not check the restored copy {scratch} ({shown}); it was not "
            f"installed and {_UNTOUCHED}."
        )
    what = f"{manifest.kind.value} backup {manifest.id}" if manifest else f"the copy {scratch}"
    if 4305 in numbers:
        return ChainGapError(
            f"SQL Server refused {what}: its log begins after the point the restore had "
            f"reached, so a log backup between them is missing (4305); restore to an earlier "
            f"time or take a new full backup ({_UNTOUCHED})."
        )
    if 4326 in numbers:
        return ChainGapError(
            f"SQL Server refused {what}: its log ends before the point the restore had "
            f"reached (4326), so the chain the catalog gave does not match the backups; "
            f"restore from another tier or to another time ({_UNTOUCHED})."
        )
    if 3201 in numbers:
        return EngineError(
            f"SQL Server cannot open the copy of {what} ({shown}); check that "
            "server_backup_dir and worker_backup_dir name the same folder and that SQL Server "
            f"may read it ({_UNTOUCHED})."
        )
    return EngineError(f"SQL Server could not restore {what} ({shown}); {_UNTOUCHED}.")


def refuse_replace(target: str, state: str, *, replace: bool) -> None:
    """Refuse to replace an existing ``target`` without ``--replace``, or one not ONLINE."""
    if not replace:
        raise RestoreTargetError(
            f"database {target} already exists; pass {flag('replace')} to restore over it (it "
            "is kept aside, offline, after a tail-log backup) or choose another name with "
            f"{flag('into')}."
        )
    if state != "ONLINE":
        raise RestoreTargetError(
            f"database {target} is {state}, not ONLINE, so it cannot be kept aside; drop or "
            f"rename it by hand, or restore under another name with {flag('into')}."
        )


def tail_failed(exc: ServerFailed, target: str) -> EngineError:
    """The error for a tail-log backup that failed: it runs before anything is built."""
    return EngineError(
        f"could not take the tail-log backup of {target} ({exc.shown()}), so nothing was "
        f"restored and {_UNTOUCHED}; fix that, or set "
        "BACKUPFLOW_DATABASE__TAIL_LOG_BEFORE_REPLACE=false to replace without a tail (the "
        "replaced database is still kept aside, offline)."
    )


def _undo(session: SqlSession, done: Sequence[SwapStep]) -> tuple[str, ServerFailed] | None:
    """Undo ``done`` in reverse; the statement that failed (and why), None if all ran."""
    for step in reversed(done):
        for statement in step.undo:
            try:
                session.run(statement)
            except ServerFailed as exc:
                return statement, exc
    return None


def run_swap(session: SqlSession, steps: Sequence[SwapStep]) -> None:
    """Run the swap; when a step fails, undo the ones before it and say where things are."""
    done: list[SwapStep] = []
    for step in steps:
        try:
            session.run(step.statement)
        except ServerFailed as exc:
            stuck = _undo(session, done)
            if stuck is None:
                raise EngineError(
                    f"could not {step.does} ({exc.shown()}), so the restored copy was not put "
                    f"in place and everything before that step was undone."
                ) from None
            statement, undo_exc = stuck
            left = [s for d in reversed(done) for s in d.undo]
            remaining = left[left.index(statement) :]
            raise EngineError(
                f"could not {step.does} ({exc.shown()}), and undoing the swap failed at "
                f"{statement} ({undo_exc.shown()}); run these statements by hand to bring the "
                f"replaced database back: {' '.join(remaining)}"
            ) from None
        done.append(step)
