"""The statements of a SQL Server restore: tail first, build and check under a scratch
name, then swap.

Pure functions, so a dry run prints exactly what a real run executes.

0. The tail (``--replace`` over a database in the FULL or BULK_LOGGED model, with
   ``tail_log_before_replace``): before anything is built, the live database's log tail is
   backed up ``COPY_ONLY`` to :func:`tail_name` (see
   :func:`~backupflow.engines.mssql.tsql.tail_log_statement`).  It reads the log and
   changes neither the database's state nor its log chain, so the live database stays as
   it was even when the check below fails.
1. ``restore_statements``: the chain is restored under a scratch database name (never the
   live one) ``WITH MOVE`` to files named for the scratch, logs stop at the requested time,
   the scratch is recovered and ``DBCC CHECKDB`` runs on it.  Nothing live is touched.
2. ``swap_steps``: only after that check, the target is put in place.  An existing target
   (``--replace``) is set ``SINGLE_USER`` (other sessions rolled back), renamed
   ``<name>_before_restore_<stamp>`` while still online (the order Microsoft's "Rename a
   database" page gives: single-user, then ``MODIFY NAME``), and then taken ``OFFLINE``:
   it is kept aside with every transaction committed after the tail.  Last, the scratch is
   renamed to the target name.  Each step carries the statements that undo it, run in
   reverse order when a later step fails.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from backupflow.engines.mssql import tsql
from backupflow.models import BackupKind

__all__ = [
    "SwapStep",
    "aside_name",
    "copy_name",
    "is_scratch_name",
    "restore_statements",
    "scratch_name",
    "swap_steps",
    "tail_name",
]

_SCRATCH = re.compile(r"_restore_[0-9a-f]{8}$")
_EXT = {BackupKind.FULL: ".bak", BackupKind.DIFF: ".bak", BackupKind.LOG: ".trn"}
#: A database name is at most 128 characters (the name rule); room for the suffixes.
_STEM_SCRATCH = 128 - len("_restore_") - 8
_STEM_ASIDE = 80


def scratch_name(target: str) -> str:
    """``<target>_restore_<8 hex>``: derived from the target, random, never the target."""
    return f"{target[:_STEM_SCRATCH]}_restore_{secrets.token_hex(4)}"


def is_scratch_name(name: str) -> bool:
    return _SCRATCH.search(name) is not None


def aside_name(target: str, stamp: str) -> str:
    """Where a replaced database is kept: ``<target>_before_restore_<stamp>``."""
    return f"{target[:_STEM_ASIDE]}_before_restore_{stamp}"


def tail_name(target: str, stamp: str) -> str:
    """The tail-log backup file of a replaced database (in the server's backup folder)."""
    return f"{target[:_STEM_ASIDE]}_tail_{stamp}.trn"


def copy_name(scratch: str, index: int, kind: BackupKind) -> str:
    """The copy of the chain's ``index``-th backup in the backup folder, named for the
    scratch so that :meth:`discard` finds what a failed restore left."""
    return f"{scratch}_{index:03d}{_EXT[kind]}"


def restore_statements(
    scratch: str,
    steps: Sequence[tuple[BackupKind, str]],
    moves: Sequence[tuple[str, str]],
    *,
    until: datetime | None,
    server_timezone: str,
) -> list[str]:
    """One RESTORE per (kind, server path) of the chain into ``scratch``, then RECOVERY, then
    DBCC CHECKDB: ``len(steps) + 2`` statements, in that order."""
    statements = [
        tsql.restore_statement(
            scratch,
            path,
            kind.value,
            moves=moves if index == 0 else (),
            stop_at=until if kind is BackupKind.LOG else None,
            server_timezone=server_timezone,
        )
        for index, (kind, path) in enumerate(steps)
    ]
    return [*statements, tsql.recover(scratch), tsql.checkdb(scratch)]


@dataclass(frozen=True)
class SwapStep:
    """One statement of the swap, and what undoes it if a later step fails."""

    statement: str
    undo: tuple[str, ...] = ()
    #: What the statement does, for an error message ("take ... offline").
    does: str = ""


def swap_steps(scratch: str, target: str, *, aside: str | None) -> list[SwapStep]:
    """Put the checked ``scratch`` in place as ``target``; an existing target (``aside`` is
    its new name) is kept aside, offline."""
    steps = []
    if aside is not None:
        steps += [
            SwapStep(
                tsql.set_option(target, "SINGLE_USER"),
                (tsql.set_option(target, "MULTI_USER"),),
                f"set {target} to single-user",
            ),
            SwapStep(
                tsql.rename_database(target, aside),
                (tsql.rename_database(aside, target),),
                f"rename {target} to {aside}",
            ),
            SwapStep(
                tsql.set_option(aside, "OFFLINE"),
                (tsql.set_option(aside, "ONLINE"),),
                f"take {aside} offline",
            ),
        ]
    steps.append(
        SwapStep(tsql.rename_database(scratch, target), does=f"rename {scratch} to {target}")
    )
    return steps
