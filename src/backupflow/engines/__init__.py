"""Database engines behind one interface; :func:`open_engine` is where one is chosen.

Light on purpose: the settings compose each engine's own fields (``sqlite_settings.py``,
``mssql/settings.py``, ``postgres/settings.py``, pydantic only), so importing this package
must not import the settings; its names are loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backupflow.engines.base import (
        BackupSource,
        Capabilities,
        Dump,
        DumpFile,
        Engine,
        Installed,
    )
    from backupflow.engines.registry import database_password, open_engine
    from backupflow.engines.sqlite import SqliteEngine

__all__ = [
    "BackupSource",
    "Capabilities",
    "Dump",
    "DumpFile",
    "Engine",
    "Installed",
    "SqliteEngine",
    "database_password",
    "open_engine",
]

_HOMES = {
    **dict.fromkeys(
        ("BackupSource", "Capabilities", "Dump", "DumpFile", "Engine", "Installed"),
        "backupflow.engines.base",
    ),
    "SqliteEngine": "backupflow.engines.sqlite",
    "database_password": "backupflow.engines.registry",
    "open_engine": "backupflow.engines.registry",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(home), name)
