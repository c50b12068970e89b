"""Repository keys: age recipients and identities, manifest and WAL signing keys, verify keys
(see docs/security.md)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

__all__ = ["KeySettings"]


class KeySettings(BaseModel):
    """Repository keys (see docs/security.md): age recipients encrypt, age identities
    decrypt, the signing key signs manifests, verify keys check them.  Losing the
    identities or the signing key's escrow copy means losing the backups."""

    encrypt: bool = Field(
        default=True,
        description="Encrypt every stored object with age (client side, after compression).",
    )
    recipients: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="age public keys (age1...) new backups are encrypted to: the current key, "
        "plus an escrow key if you keep one.",
    )
    identities: SecretStr = Field(
        default=SecretStr(""),
        description="age secret keys (AGE-SECRET-KEY-1...), one a line: the current and every "
        "older key whose backups must stay restorable.  Only where restores run.",
    )
    identities_block: str | None = Field(
        default=None, description="Prefect Secret block holding the identities instead."
    )
    signing_key: SecretStr = Field(
        default=SecretStr(""),
        description="The manifest signing key (BACKUPFLOW-SIGNING-KEY-1...); where backups "
        "are written.",
    )
    signing_key_block: str | None = Field(
        default=None, description="Prefect Secret block holding the signing key instead."
    )
    wal_signing_key: SecretStr = Field(
        default=SecretStr(""),
        description="The WAL signing key (BACKUPFLOW-SIGNING-KEY-1...): signs archived WAL "
        "records only; held by PostgreSQL's OS user (archive_command), never the manifest key.",
    )
    verify_keys: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Public verify keys (bfverify1...) trusted to sign, each optionally "
        "followed by its scope: kinds=manifest|wal and series=category/name,... (see "
        "docs/security.md).  Without a scope a key is trusted for every record.",
    )
