"""The database engine interface.

An engine turns a live database into files in a staging folder (``dump``) and turns a
restore chain back into a database (``restore`` then ``install``).  It never touches a
storage tier: the pipeline streams its files in and out.  Callers branch on
:class:`Capabilities`, never on an engine's name.
"""

from __future__ import annotations

import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from backupflow.catalog import CatalogEntry
from backupflow.errors import CatalogError, ConfigError, RestoreTargetError
from backupflow.fsutil import free_bytes, matching_entries, readable_size
from backupflow.models import BackupKind, Manifest, StoredObject
from backupflow.planning import RestorePlan, plan_restore
from backupflow.vocabulary import flag

__all__ = [
    "BackupSource",
    "Capabilities",
    "ChainCatalog",
    "Dump",
    "DumpFile",
    "Engine",
    "Installed",
    "Restored",
]

#: Opens one object (by role) of a backup as a verified, decompressed stream.
ObjectOpener = Callable[[str], AbstractContextManager[BinaryIO]]


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do, declared once; callers branch on these, never on a name."""

    differential: bool
    log: bool
    #: "backup": restore points are the moments backups were taken;
    #: "exact": logs can be replayed to any second in between.
    point_in_time: Literal["backup", "exact"]
    #: How the engine finds a restore chain: "parents" follows the parent ids recorded in
    #: the catalog's names (only the chain's manifests are read); "positions" compares log
    #: positions recorded inside every manifest (LSNs, WAL ranges), so every manifest of
    #: the series is read and authenticated before planning.
    chain: Literal["parents", "positions"] = "parents"
    #: What a restore target is: a path on the worker, or a database name on a server.
    target: Literal["path", "server"] = "path"


class ChainCatalog(Protocol):
    """What an engine's chain planner may read: one series on the chosen tiers.  What the
    planner skips (an unreadable manifest) it adds to ``problems``."""

    problems: list[str]

    def sorted_entries(self) -> list[CatalogEntry]:
        """Every backup of the series (from manifest names), oldest restore point first."""
        ...

    def manifest(self, backup_id: str) -> Manifest:
        """The authenticated manifest of one backup; :class:`CatalogError` if no tier has a
        readable one."""
        ...


@dataclass(frozen=True)
class Restored:
    """A restore built in scratch and checked there; nothing live has been touched yet.

    It carries everything :meth:`Engine.install` needs, so an engine keeps no state between
    the two calls."""

    scratch: Path
    manifests: tuple[Manifest, ...]
    #: The checks the restored copy passed (e.g. "PRAGMA integrity_check"), for reports.
    checks: tuple[str, ...] = ()
    #: Engine-private detail for ``install`` (the member list of a file set, ...).
    detail: Any = field(default=None, compare=False, repr=False)
    #: What went wrong on the way but did not stop the restore (a damaged copy of a WAL
    #: file served from the next tier), for the report.
    problems: tuple[str, ...] = ()


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
    #: Objects already stored, verified, in the tier named ``stored_in`` before this backup
    #: ran (PostgreSQL's archived WAL, written there by ``backupflow wal-push``).  The
    #: backup lists them; the run copies them to the other tiers like its own files.
    stored: tuple[StoredObject, ...] = ()
    stored_in: str | None = None


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
    ) -> Restored:
        """Build ``chain`` (full first) into the new scratch ``scratch``, verify the result
        against the last manifest and run the integrity check there.  Nothing live is
        touched: a failed check raises and leaves the live database as it was.  ``until``
        is the requested time; engines that replay logs to an exact time stop there, the
        others ignore it."""

    @abstractmethod
    def install(self, restored: Restored, target: Path, *, replace: bool, stamp: str) -> Installed:
        """Put a checked ``restored`` copy in place at ``target``.  An existing target is
        only replaced with ``replace``, and is then kept aside (suffix ``stamp``), never
        deleted."""

    def before_restore(self, target: Path, *, replace: bool, stamp: str) -> tuple[str, ...]:
        """Save what a restore over ``target`` would lose, before anything is built; it must
        leave the target as it is (SQL Server backs up the tail of the live database's log,
        ``COPY_ONLY``).  Returns what was saved, for the report; nothing by default."""
        del target, replace, stamp
        return ()

    def discard(self, scratch: Path) -> None:
        """Remove what a restore left in ``scratch`` (after install, or after a failure);
        by default the scratch file or folder, never following a link."""
        if scratch.is_dir() and not scratch.is_symlink():
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
        else:
            scratch.unlink(missing_ok=True)

    def plan_restore(
        self,
        catalog: ChainCatalog,
        database: str,
        target: datetime | None,
        now: datetime,
    ) -> RestorePlan[Manifest]:
        """The chain that restores ``database`` to ``target`` (None: the latest point); what
        is skipped on the way goes to ``catalog.problems``.  The engine owns this rule.

        By default backups chain by the parent ids recorded in their names (a page chain),
        and only the chain's manifests are read: a manifest no tier can read is left out and
        the plan made again without it."""
        unreadable: set[str] = set()
        while True:
            usable = [e for e in catalog.sorted_entries() if e.id not in unreadable]
            plan = plan_restore(usable, database=database, target=target, now=now)
            loaded: dict[str, Manifest] = {}
            try:
                for step in plan.steps:
                    loaded[step.manifest.id] = catalog.manifest(step.manifest.id)
            except CatalogError as exc:
                unreadable.add(step.manifest.id)
                catalog.problems.append(f"{exc}; planning without it")
                continue
            return plan.with_manifests(loaded)

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

    def scratch_path(self, target: Path) -> Path:
        """Where a restore is built before it is installed (same filesystem as ``target``).

        A random name: ``restore`` creates it exclusively (``O_EXCL | O_NOFOLLOW``, ``0600``),
        so a file or link planted under a guessed name is never written through."""
        return target.parent / f".{target.name}.restoring-{secrets.token_hex(4)}"

    def scratch_leftovers(self, target: Path) -> list[Path]:
        """Every entry named as :meth:`scratch_path` names the scratch of a restore into
        ``target`` (links included, nothing followed or judged here): what a killed restore
        may have left, for :func:`backupflow.leftovers.remove_dead_scratch`.  Engines that
        name their scratch otherwise say so here; none when the target is not a path."""
        if self.capabilities.target != "path":
            return []
        pattern = re.escape(f".{target.name}.restoring-") + "[0-9a-f]{8}"
        return matching_entries(target.parent, re.compile(pattern))

    def space_needed(self, chain: Sequence[Manifest]) -> int:
        """Bytes a restore of ``chain`` writes next to its target, from the recorded sizes
        (checked against the free space before it starts).  By default every object's
        uncompressed size; engines that know better say so."""
        return sum(obj.raw_size for manifest in chain for obj in manifest.objects)

    def check_space(self, chain: Sequence[Manifest], scratch: Path) -> None:
        """Refuse a restore whose recorded sizes do not fit where ``scratch`` is built."""
        needed = self.space_needed(chain)
        try:
            folder, free = free_bytes(scratch.parent)
        except OSError as exc:
            raise RestoreTargetError(
                f"cannot read the free space of {scratch.parent} ({exc.strerror}); restore "
                f"into a folder that exists with {flag('into')}."
            ) from exc
        if needed > free:
            raise RestoreTargetError(
                f"the restore needs {readable_size(needed)} but {folder} has only "
                f"{readable_size(free)} free; free some space or restore elsewhere with "
                f"{flag('into')}."
            )

    def check_target(self, target: Path, replace: bool) -> None:
        """Refuse a target that exists unless ``replace`` (the default for a single file), and
        a target that is a link."""
        if target.is_symlink():
            raise RestoreTargetError(
                f"{target} is a link; restore to the file it points to, or elsewhere with "
                f"{flag('into')}."
            )
        if target.is_dir():
            raise RestoreTargetError(f"{target} is a folder; give the path of a database file.")
        if target.exists() and not replace:
            raise RestoreTargetError(
                f"{target} already exists; pass {flag('replace')} to replace it (the current "
                f"file is kept aside) or choose another path with {flag('into')}."
            )

    @abstractmethod
    def default_target(self, restore_point: datetime) -> Path:
        """Where a restore goes when no target is given: never the live database."""

    @abstractmethod
    def live_target(self) -> Path:
        """The live database, replaced only with an explicit flag."""
