"""Secrets that must never leave the process: which ones backupflow knows, and masking them.

Used where text that backupflow did not write is shown or stored (the post-restore
command's output goes to the backup log, the Prefect logs and the terminal).  The secrets
known are the database password (from the settings or its Prefect Secret block), the keys in
every prefect-aws credentials block the settings name, and every environment value whose
variable name marks a secret.  Each is also masked in the spellings a program is likely to
print it in (JSON or Python string escapes, URL encoding).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import quote, quote_plus

from backupflow.config import Settings
from backupflow.prefect_adapter import aws_block_values, secret_block_values

__all__ = ["MASK", "block_secrets", "known_secrets", "mask"]

MASK = "**********"
#: Environment variables whose names say they hold a secret (AWS keys, DB_PASSWORD,
#: PREFECT_API_KEY, PREFECT_API_AUTH_STRING, ...).
_SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|ACCESS_KEY|API_KEY|AUTH|CREDENTIAL|PRIVATE_KEY",
    re.I,
)
_SHORTEST = 4  # masking shorter values would garble ordinary output


def known_secrets(
    settings: Settings, environ: Mapping[str, str] | None = None, *, load_blocks: bool = True
) -> list[str]:
    """Every secret backupflow knows (see the module docstring) and its escaped spellings,
    longest first (so a secret containing another is masked whole).  ``load_blocks`` reads
    the Prefect blocks the settings name; a block that cannot be loaded is skipped."""
    env = os.environ if environ is None else environ
    values = {settings.database.password.get_secret_value()}
    keys = settings.crypto
    values.add(keys.signing_key.get_secret_value())
    values.add(keys.wal_signing_key.get_secret_value())
    values.update(keys.identities.get_secret_value().replace(",", " ").split())
    values.update(value for key, value in env.items() if _SECRET_NAME.search(key))
    if load_blocks:
        values.update(block_secrets(settings))
    spelled = {
        variant for value in values if len(value) >= _SHORTEST for variant in _spellings(value)
    }
    return sorted(spelled, key=len, reverse=True)


def block_secrets(settings: Settings) -> list[str]:
    """The database password's Secret block value and the keys of every AWS credentials
    block the settings name (tiers and failover)."""
    found: list[str] = []
    for block in (
        settings.database.password_block,
        settings.crypto.signing_key_block,
        settings.crypto.identities_block,
    ):
        if block:
            found.extend(secret_block_values(block))
    repository = settings.repository
    names = {
        tier.credentials_block
        for tier in (repository.primary, repository.secondary, repository.dr)
        if tier.credentials_block
    }
    if settings.failover.credentials_block:
        names.add(settings.failover.credentials_block)
    for name in sorted(names):
        found.extend(aws_block_values(name))
    return [value for value in found if value]


def _spellings(secret: str) -> Iterator[str]:
    """``secret`` and the ways a program may print it escaped."""
    yield secret
    yield json.dumps(secret)[1:-1]
    yield json.dumps(secret, ensure_ascii=False)[1:-1]
    yield repr(secret)[1:-1]
    yield quote(secret, safe="")
    yield quote_plus(secret)


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by :data:`MASK`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text
