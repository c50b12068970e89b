"""Secrets that must never leave the process: which ones backupflow knows, and masking them.

Used where text that backupflow did not write is shown or stored (the post-restore
command's output goes to the backup log, the Prefect logs and the terminal).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from backupflow.config import Settings

__all__ = ["MASK", "known_secrets", "mask"]

MASK = "**********"
#: Environment variables whose names say they hold a secret (AWS keys, DB_PASSWORD, ...).
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL", re.I)
_SHORTEST = 4  # masking shorter values would garble ordinary output


def known_secrets(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """The database password and every environment value whose name marks a secret,
    longest first (so a secret containing another is masked whole)."""
    env = os.environ if environ is None else environ
    values = {settings.database.password.get_secret_value()}
    values.update(value for key, value in env.items() if _SECRET_NAME.search(key))
    return sorted((v for v in values if len(v) >= _SHORTEST), key=len, reverse=True)


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by :data:`MASK`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text
