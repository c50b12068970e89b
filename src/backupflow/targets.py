"""Where a restore may write: the allowed roots for targets given as parameters.

A deployment parameter or ``--into`` comes from whoever can start a run, so a target path
must be absolute and lie, after resolving links, under one of the allowed roots: the live
database's folder (its engine's restore root, :mod:`backupflow.engines.registry`), each file
set's root, the staging folder and ``restore_roots``.
"""

from __future__ import annotations

import os
from pathlib import Path

from backupflow.config import Settings
from backupflow.engines.registry import engine_spec
from backupflow.errors import ParameterError

__all__ = ["allowed_roots", "check_restore_target"]


def allowed_roots(settings: Settings) -> list[Path]:
    """Every folder a restore target may lie under (in the order they are reported)."""
    files = settings.files
    roots = [
        engine_spec(settings.database.engine).restore_root(settings),
        files.config.root,
        files.logs.root,
        files.uploads.root,
        settings.staging_dir,
        *settings.restore_roots,
    ]
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def check_restore_target(target: Path, settings: Settings, parameter: str = "into") -> Path:
    """Return ``target`` if it is absolute and under an allowed root (links resolved), else
    raise :class:`ParameterError` naming ``parameter``."""
    if not target.is_absolute():
        raise ParameterError(
            f"{parameter} must be an absolute path, and {str(target)!r} is relative."
        )
    real = os.path.realpath(target)
    for root in allowed_roots(settings):
        real_root = os.path.realpath(root)
        if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
            return target
    listed = ", ".join(str(r) for r in allowed_roots(settings))
    raise ParameterError(
        f"{parameter} {target} is not under an allowed restore folder ({listed}); add its "
        "folder to BACKUPFLOW_RESTORE_ROOTS to allow it."
    )
