"""Test helpers: drive the core backup steps without Prefect, and compare databases."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import datetime
from pathlib import Path

from backupflow.backup import clean_interrupted
from backupflow.backup_run import DatabaseSubject, run_backup
from backupflow.config import Settings
from backupflow.engines import open_engine
from backupflow.models import BackupKind, Manifest
from backupflow.planning import RestorePlan
from backupflow.restore import RestoreOutcome
from backupflow.restore_run import run_restore
from backupflow.steps import DirectSteps
from backupflow.storage import Tier, open_tiers

__all__ = ["content_digest", "restore", "snapshot_copy", "take_backup"]


def take_backup(settings: Settings, kind: BackupKind, tiers: list[Tier] | None = None) -> Manifest:
    """A backup through the core's one backup run (the flows' run), without Prefect."""
    tiers = tiers if tiers is not None else open_tiers(settings)
    subject = DatabaseSubject(open_engine(settings), settings)
    return run_backup(subject, tiers, DirectSteps(), kind=kind).manifest


def restore(
    settings: Settings,
    target_time: datetime | None,
    into: Path,
    *,
    replace: bool = False,
    tiers: list[Tier] | None = None,
    accept_earlier: bool = False,
) -> tuple[RestorePlan[Manifest], RestoreOutcome]:
    """A restore through the core's one restore run (the flows' run), without Prefect."""
    tiers = tiers if tiers is not None else open_tiers(settings)
    report = run_restore(
        open_engine(settings),
        tiers,
        settings.database.name,
        DirectSteps(),
        target_time=target_time,
        into=into,
        replace=replace,
        chunk_bytes=settings.pipeline.chunk_bytes,
        accept_earlier=accept_earlier,
    )
    assert report.outcome is not None
    return report.plan, report.outcome


def content_digest(path: Path) -> str:
    """SHA-256 of a database's schema and rows."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        digest = hashlib.sha256()
        for line in conn.iterdump():
            digest.update(line.encode() + b"\n")
        return digest.hexdigest()
    finally:
        conn.close()


def snapshot_copy(source: Path, dest: Path) -> Path:
    """An independent copy of a live database, for comparison."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(source)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return dest


__all__ += ["clean_interrupted"]
