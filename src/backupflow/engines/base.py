"""The database engine interface.

An engine turns a live database into files in a staging folder (``dump``) and turns a
restore chain back into a database (``restore`` then ``install``).  It never touches a
storage tier: the pipeline streams its files in and out.  Callers branch on
:class:`Capabilities`, never on an engine's name.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from backupflow.errors import ConfigError, RestoreTargetError
from backupflow.models import BackupKind, Manifest

__all__ = ["BackupSource", "Capabilities", "Dump", "DumpFile", "Engine", "Installed"]

#: Opens one object (by role) of a backup as a verified, decompressed stream.
ObjectOpener = Callable[[str], AbstractContextManager[BinaryIO]]


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do."""

    differential: bool
    log: bool
    #: "backup": restore points are the moments backups were taken;
    #: "exact": logs can be replayed to any second in between.
    point_in_time: Literal["backup", "exact"]


@dataclass(frozen=True)
class BackupSource:
    """A backup already in the repository, with a way to read its objects."""

    manifest: Manifest
    open_object: ObjectOpener


@dataclass(frozen=True)
class DumpFile:
    """One file an engine produced, to be stored under ``role``."""

    role: str
    path: Path
    #: Measure how well it compresses first, and store it as is when that gains little
    #: (e.g. a natively compressed SQL Server backup).
    measure: bool = False


@dataclass(frozen=True)
class Dump:
    """What ``Engine.dump`` produced in the staging folder."""

    kind: BackupKind
    restore_point: datetime
    files: tuple[DumpFile, ...]
    position: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Installed:
    """Where a restored database went, and where the replaced one was kept."""

    target: Path
    kept_aside: tuple[Path, ...] = ()


class Engine(ABC):
    """A database engine: dump, restore, integrity check and install."""

    name: str
    capabilities: Capabilities

    @abstractmethod
    def check_source(self) -> None:
        """Raise :class:`~backupflow.errors.SourceNotFoundError` if the database is absent."""

    @abstractmethod
    def dump(self, kind: BackupKind, parent: BackupSource | None, staging: Path) -> Dump:
        """Write a ``kind`` backup into ``staging``; diff and log need their ``parent``."""

    @abstractmethod
    def restore(
        self, chain: Sequence[BackupSource], scratch: Path, *, until: datetime | None = None
    ) -> None:
        """Apply ``chain`` (full first) into the new file or folder ``scratch``, verify the
        result against the last manifest and run the integrity check.  ``until`` is the
        point to stop at, for engines that replay logs to an exact time."""

    def list_databases(self) -> list[str]:
        """Every database this engine's server holds (for ``databases = ["*"]``)."""
        raise ConfigError(
            f'the {self.name} engine cannot list databases; name them instead of "*".'
        )

    def restore_script(
        self, chain: Sequence[Manifest], target: Path, *, replace: bool, until: datetime | None
    ) -> list[str]:
        """The statements a restore would run, for engines that restore with a script (a
        dry run prints them); none by default."""
        del chain, target, replace, until
        return []

    def smoke(self, target: Path) -> dict[str, int]:
        """A few cheap queries on a restored database (row counts); none by default."""
        del target
        return {}

    def drop(self, target: Path) -> None:
        """Remove a scratch restore (a drill's); by default delete the file or folder."""
        if target.is_dir():
            import shutil

            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)

    def cleanup(self, dump: Dump) -> None:
        """Remove what ``dump`` left outside the staging folder (none by default)."""
        del dump

    @abstractmethod
    def install(self, scratch: Path, target: Path, *, replace: bool, stamp: str) -> Installed:
        """Move a restored ``scratch`` into ``target``.  An existing target is only replaced
        with ``replace``, and is then kept aside (suffix ``stamp``), never deleted."""

    def scratch_path(self, target: Path) -> Path:
        """Where a restore is built before it is installed (same filesystem as ``target``).

        A random name: ``restore`` creates it exclusively (``O_EXCL | O_NOFOLLOW``, ``0600``),
        so a file or link planted under a guessed name is never written through."""
        return target.parent / f".{target.name}.restoring-{secrets.token_hex(4)}"

    def space_needed(self, chain: Sequence[Manifest]) -> int:
        """Bytes a restore of ``chain`` writes next to its target, from the recorded sizes
        (checked against the free space before it starts).  By default every object's
        uncompressed size; engines that know better say so."""
        return sum(obj.raw_size for manifest in chain for obj in manifest.objects)

    def check_target(self, target: Path, replace: bool) -> None:
        """Refuse a target that exists unless ``replace`` (the default for a single file), and
        a target that is a link."""
        if target.is_symlink():
            raise RestoreTargetError(
                f"{target} is a link; restore to the file it points to, or elsewhere with --into."
            )
        if target.is_dir():
            raise RestoreTargetError(f"{target} is a folder; give the path of a database file.")
        if target.exists() and not replace:
            raise RestoreTargetError(
                f"{target} already exists; pass --replace to replace it (the current file is "
                "kept aside) or choose another path with --into."
            )

    @abstractmethod
    def default_target(self, restore_point: datetime) -> Path:
        """Where a restore goes when no target is given: never the live database."""

    @abstractmethod
    def live_target(self) -> Path:
        """The live database, replaced only with an explicit flag."""
