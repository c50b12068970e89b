"""Scratch copies that killed restores left beside their targets, and their removal.

A restore builds its copy in scratch beside its target (``.<target>.restoring-<8 hex>``,
a file for SQLite, a folder for PostgreSQL) or, for a file set, inside its target folder
(``.backupflow-restore-<8 hex>``), and checks it there before it replaces anything.  It
holds the target's restore lock (:func:`~backupflow.locks.target_lock`, an ``flock`` under
``<staging_dir>/locks``) from before that scratch exists until it is removed again, and the
kernel drops the lock when the run dies, however it dies.  So a scratch named for a target
whose lock nobody holds belongs to a run that is gone: :func:`remove_dead_scratch` removes
it once it is older than the grace period, through the engine's own ``discard`` (which, for
PostgreSQL, first stops a copy still running in it).  It judges only entries named by the
engine's pattern for that target, never follows a link (a link named like a scratch is left
alone), and removes only what we or the owner of its folder own.

Staging folders of backups are swept the same way by :func:`backupflow.backup.clean_staging`.
"""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from backupflow.backup import clean_staging
from backupflow.errors import BackupflowError
from backupflow.locks import LockHeldError, target_lock

if TYPE_CHECKING:
    from backupflow.config import Settings
    from backupflow.engines.base import Engine
    from backupflow.steps import Logger

__all__ = ["clean_leftovers", "remove_dead_scratch"]


def clean_leftovers(engine: Engine, settings: Settings, logger: Logger) -> None:
    """At the start of a backup: remove the staging folders of killed backups and the
    scratch copies that killed restores over the live target left (never a running run's),
    once older than ``orphan_grace_minutes``.  A failure to look for scratch copies is
    logged; it does not stop the backup."""
    for folder in clean_staging(settings, now=datetime.now(UTC)):
        logger.warning("removed the staging folder %s of a backup that did not finish", folder)
    cutoff = time.time() - settings.orphan_grace_minutes * 60
    try:
        removed = remove_dead_scratch(
            engine, engine.live_target(), lock_dir=settings.staging_dir, older_than=cutoff
        )
    except (BackupflowError, OSError) as exc:
        logger.warning("could not look for scratch copies of interrupted restores: %s", exc)
        return
    for path in removed:
        logger.warning("removed %s, the scratch copy of a restore that did not finish", path)


def remove_dead_scratch(
    engine: Engine,
    target: Path,
    *,
    lock_dir: Path,
    older_than: float,
    locked: bool = False,
) -> list[Path]:
    """Remove the scratch copies that killed restores into ``target`` left; returns them.

    Nothing is removed while a restore into ``target`` runs (its lock under ``lock_dir`` is
    held; ``locked`` says the caller holds it itself, as a restore does).  Of the entries
    :meth:`~backupflow.engines.base.Engine.scratch_leftovers` names, only real files and
    folders (no link) changed before ``older_than`` (a time stamp) and owned by us or by the
    owner of their folder are removed.
    """
    found = engine.scratch_leftovers(target)
    if not found:
        return []
    if not locked:
        try:
            # Every entry listed above was made by a run holding this lock; when it is free
            # now, that run is over.  A restore starting after this makes a new name.
            with target_lock(lock_dir, target, run="scratch sweep"):
                pass
        except LockHeldError:
            return []  # a restore into target is running: its scratch is its own
    removed: list[Path] = []
    for path in found:
        if _dead(path, older_than):
            engine.discard(path)
            if not os.path.lexists(path):
                removed.append(path)
    return removed


def _dead(path: Path, older_than: float) -> bool:
    """Whether ``path`` is a real file or folder of ours (or of its folder's owner) that
    has not changed since ``older_than``."""
    try:
        info = os.lstat(path)
        folder = os.lstat(path.parent)
    except OSError:
        return False
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        return False  # a link (never followed), or something that is not a copy of ours
    if info.st_uid not in (os.geteuid(), folder.st_uid):
        return False
    return info.st_mtime < older_than
