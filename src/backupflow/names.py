"""Name rules shared by every source of a name: settings, flow parameters, CLI options,
server listings and manifests.

A database name becomes a folder in the repository, part of a backup file name on the
database server and an identifier in T-SQL, so one rule serves them all: 1 to 128
characters, letters, digits, ``_``, ``.`` and ``-``, starting with a letter, digit or ``_``
(so never ``.``, ``..`` or a path).
"""

from __future__ import annotations

import re

from backupflow.errors import ConfigError

__all__ = ["DATABASE_NAME_PATTERN", "check_database_name", "is_database_name"]

DATABASE_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$"
_DATABASE_NAME = re.compile(DATABASE_NAME_PATTERN)


def is_database_name(name: object) -> bool:
    """Whether ``name`` follows the database name rule."""
    return isinstance(name, str) and _DATABASE_NAME.fullmatch(name) is not None


def check_database_name(name: object, where: str) -> str:
    """Return ``name`` if it follows the rule, else raise one sentence naming ``where`` it
    came from (the name itself is shown only when it is short and printable)."""
    if is_database_name(name):
        return str(name)
    shown = repr(name) if isinstance(name, str) and len(name) <= 64 and name.isprintable() else ""
    raise ConfigError(
        f"the database name {shown + ' ' if shown else ''}from {where} is not allowed: use 1 to "
        "128 letters, digits, '_', '.' or '-', starting with a letter, digit or '_'."
    )
