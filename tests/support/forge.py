"""Test helpers for an attacker with write access to one bucket: planted and forged manifests."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backupflow.catalog import manifest_key
from backupflow.config import KeySettings, Settings
from backupflow.envelope import seal
from backupflow.keys import GeneratedKeys, Keyring
from backupflow.models import Manifest
from backupflow.storage.base import Storage, get_bytes, put_bytes

__all__ = [
    "file_digest",
    "make_db",
    "plant_signed",
    "plant_unsigned",
    "stored_digest",
    "with_keys",
]


def make_db(path: Path, rows: int = 3000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(rows)])
    conn.close()


def stored_digest(storage: Storage, key: str) -> str:
    return hashlib.sha256(get_bytes(storage, key)).hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plant_unsigned(
    storage: Storage, manifest: Manifest, key: str | None = None, **changes: Any
) -> str:
    """Write ``manifest`` (with ``changes``) as plain JSON, unsigned, where it would live."""
    data = json.loads(manifest.to_json())
    data.update(changes)
    forged = Manifest.model_validate(data)
    where = key or manifest_key(forged)
    put_bytes(storage, where, json.dumps(data, indent=1).encode())
    return where


def plant_signed(
    storage: Storage, manifest: Manifest, keyring: Keyring, key: str | None = None
) -> str:
    """Write ``manifest`` sealed with ``keyring``'s signer (the attacker's or a leaked one)."""
    where = key or manifest_key(manifest)
    put_bytes(storage, where, seal(manifest.to_json(), keyring))
    return where


def with_keys(
    settings: Settings,
    *,
    recipients: Sequence[GeneratedKeys] = (),
    identities: Sequence[GeneratedKeys] = (),
    signer: GeneratedKeys | None = None,
    verify: Sequence[GeneratedKeys] = (),
    encrypt: bool = True,
) -> Settings:
    """``settings`` holding exactly the named parts of the given keys."""
    keys = KeySettings.model_validate(
        {
            "encrypt": encrypt,
            "recipients": [k.recipient for k in recipients],
            "identities": "\n".join(k.identity for k in identities),
            "signing_key": signer.signing_key if signer else "",
            "verify_keys": [k.verify_key for k in verify],
        }
    )
    return settings.model_copy(update={"crypto": keys})
