"""Which series exist: the databases and the file sets the settings name.

One place decides it, and the backup, restore (``--database``), health, prune, drill,
replicate and verify runs all ask here, so a database listed in
``BACKUPFLOW_DATABASE__DATABASES`` is backed up, checked, pruned and drilled alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from backupflow.config import Settings
from backupflow.engines.base import Engine
from backupflow.filesets import FILE_SETS
from backupflow.models import Category
from backupflow.names import check_database_name, is_database_name

__all__ = ["Series", "all_series", "databases", "file_sets", "for_database"]


@dataclass(frozen=True)
class Series:
    """One backup series: a category and a name (a database, or a file set)."""

    category: Category
    name: str

    @property
    def label(self) -> str:
        """``category/name``, e.g. ``database/gantt`` or ``uploads/uploads``."""
        return f"{self.category.value}/{self.name}"


def databases(
    settings: Settings, open_engine: Callable[[Settings], Engine] | None = None
) -> tuple[list[str], int]:
    """The databases the settings name, and how many names the server listed for ``["*"]``
    were left out because they break the name rule (such a name is never used: it would
    become a file name on the server and a folder in the repository).

    ``database.databases`` when set, else ``database.name``; ``["*"]`` asks the engine's
    server for its databases (``open_engine`` is then required).
    """
    db = settings.database
    if db.databases != ["*"]:
        names = db.databases or [db.name]
        where = "BACKUPFLOW_DATABASE__DATABASES" if db.databases else "BACKUPFLOW_DATABASE__NAME"
        return [check_database_name(name, where) for name in names], 0
    if open_engine is None:
        from backupflow.engines import open_engine as opener

        open_engine = opener
    listed = open_engine(settings).list_databases()
    names = [name for name in listed if is_database_name(name)]
    return names, len(listed) - len(names)


def for_database(settings: Settings, name: str) -> Settings:
    """The settings of a run over one database (its name checked by the name rule)."""
    checked = check_database_name(name, "BACKUPFLOW_DATABASE__DATABASES or --database")
    return settings.model_copy(
        update={"database": settings.database.model_copy(update={"name": checked})}
    )


def file_sets() -> list[str]:
    """The file sets, in the order they are reported."""
    return list(FILE_SETS)


def all_series(
    settings: Settings, open_engine: Callable[[Settings], Engine] | None = None
) -> list[Series]:
    """Every series of this installation: each database, then each file set."""
    names, _skipped = databases(settings, open_engine)
    return [Series(Category.DATABASE, name) for name in names] + [
        Series(FILE_SETS[name], name) for name in file_sets()
    ]
