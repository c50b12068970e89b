"""The repository's signed records of its own keys, and rotation that revokes.

* **Key records.**  ``key init`` and ``key rotate`` leave ``keys/<key id>.key.json`` in every
  tier: a signed statement "signing key K was made at T", *created* once and never replaced.
  ``adopt`` takes the earliest record a trusted key signed as its cut-off, so an unsigned
  manifest planted after the repository had keys can never be adopted.
* **Re-signing.**  ``key rotate`` adds the new key's signature to every envelope the current
  keys trust (manifests and key records; WAL records too when the WAL key is rotated), in
  every tier, leaving payloads and older signatures as they are.  When every tier is done the
  old verify keys are dropped, and from then on anything signed only by an old key is
  refused: a stolen old key forges nothing, and every old backup stays readable.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from backupflow.catalog import MANIFEST_SUFFIX, WAL_RECORD_SUFFIX, series_of_key
from backupflow.envelope import add_signature, is_envelope, open_envelope, seal
from backupflow.errors import BackupflowError, ForeignManifestError, ObjectNotFoundError
from backupflow.keys import GeneratedKeys, Keyring, key_id
from backupflow.keystore import KeySet, unique
from backupflow.storage.base import Storage, get_bytes, put_bytes

__all__ = [
    "KEY_RECORDS_PREFIX",
    "KeyRecord",
    "ResignReport",
    "adoption_cutoff",
    "key_records",
    "resign_storage",
    "rotated",
    "signed_kind",
    "write_key_record",
]

KEY_RECORDS_PREFIX = "keys/"
_KEY_RECORD_SUFFIX = ".key.json"
_KEY_RECORD_NAME = re.compile(r"keys/[0-9a-f]{16}\.key\.json")
_MAX_KEY_RECORDS = 1000
_MAX_KEY_RECORD_BYTES = 64 << 10


class KeyRecord(BaseModel):
    """A signing key's birth certificate: which key, and when it was made."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = Field(default=1, ge=1, le=1)
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    verify_key: str = Field(max_length=200)
    created: AwareDatetime


def _record_key(ident: str) -> str:
    return f"{KEY_RECORDS_PREFIX}{ident}{_KEY_RECORD_SUFFIX}"


def write_key_record(storage: Storage, keyring: Keyring, created: datetime) -> bool:
    """Create the key record of this keyring's manifest key in ``storage``; False when one
    is already there (it is never replaced, so its time cannot be moved later)."""
    signer = keyring.require_signer()
    record = KeyRecord(key_id=signer.key_id, verify_key=signer.public_text, created=created)
    envelope = seal(record.model_dump_json().encode(), keyring, kind="key")
    return storage.create(_record_key(signer.key_id), envelope)


def key_records(storage: Storage, keyring: Keyring) -> tuple[list[KeyRecord], list[str]]:
    """The key records in ``storage`` that a trusted key signed, and one sentence for each
    object in ``keys/`` that is not one."""
    found: list[KeyRecord] = []
    problems: list[str] = []
    for count, info in enumerate(storage.list(KEY_RECORDS_PREFIX)):
        if count >= _MAX_KEY_RECORDS:
            problems.append(
                f"{storage.name}/keys holds over {_MAX_KEY_RECORDS} objects; the rest ignored."
            )
            break
        where = f"{storage.name}/{info.key}"
        if not _KEY_RECORD_NAME.fullmatch(info.key) or info.size > _MAX_KEY_RECORD_BYTES:
            problems.append(f"{where} is not a key record; ignored.")
            continue
        try:
            raw = get_bytes(storage, info.key, limit=_MAX_KEY_RECORD_BYTES)
            payload = open_envelope(raw, keyring, source=where, kind="key")
            record = KeyRecord.model_validate_json(payload)
        except ObjectNotFoundError:
            continue
        except ValidationError:
            problems.append(f"{where} is not a key record; ignored.")
            continue
        except BackupflowError as exc:
            problems.append(str(exc))
            continue
        if _record_key(record.key_id) != info.key or key_id(record.verify_key) != record.key_id:
            problems.append(f"{where} describes another key; ignored.")
            continue
        found.append(record)
    return found, problems


def adoption_cutoff(storage: Storage, keyring: Keyring) -> datetime | None:
    """When this repository first had a signing key, by the earliest trusted key record in
    ``storage``; None when it holds none."""
    records, _ = key_records(storage, keyring)
    return min((r.created for r in records), default=None)


def signed_kind(key: str) -> tuple[str, str | None] | None:
    """The kind of signed record (and its series) stored at ``key``, from where it is."""
    if _KEY_RECORD_NAME.fullmatch(key):
        return "key", None
    parts = key.split("/")
    if len(parts) >= 4 and parts[2] == "manifests" and key.endswith(MANIFEST_SUFFIX):
        return "manifest", series_of_key(key)
    if len(parts) >= 4 and parts[2] == "wal" and key.endswith(WAL_RECORD_SUFFIX):
        return "wal", series_of_key(key)
    return None


@dataclass
class ResignReport:
    """What re-signing one tier did."""

    tier: str
    resigned: int = 0
    current: int = 0
    ignored: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems


def resign_storage(
    name: str,
    storage: Storage,
    keyring: Keyring,
    *,
    kinds: frozenset[str],
    progress: Callable[[int], None] | None = None,
) -> ResignReport:
    """Add this keyring's signature (its manifest key, or WAL key for WAL records) to every
    envelope in ``storage`` of a signing kind in ``kinds`` that the keyring trusts.  What no
    trusted key signed is left alone (it is not ours) and listed in ``ignored``; a tier that
    cannot be read or written is a problem (the pass is incomplete)."""
    report = ResignReport(name)
    try:
        for info in storage.list(""):
            found = signed_kind(info.key)
            if found is None:
                continue
            kind, series = found
            if ("manifest" if kind == "key" else kind) not in kinds:
                continue
            where = f"{storage.name}/{info.key}"
            try:
                raw = get_bytes(storage, info.key)
                if not is_envelope(raw):
                    report.ignored.append(f"{where}: unsigned")
                    continue
                signed = add_signature(raw, keyring, kind=kind, series=series, source=where)
                if signed == raw:
                    report.current += 1
                    continue
                put_bytes(storage, info.key, signed)
            except ObjectNotFoundError:
                continue
            except ForeignManifestError as exc:
                report.ignored.append(str(exc))
                continue
            report.resigned += 1
            if progress is not None:
                progress(report.resigned)
    except BackupflowError as exc:
        report.problems.append(f"tier {name}: {exc}")
    return report


def rotated(
    current: Keyring,
    keys: GeneratedKeys,
    escrow: tuple[str, ...] = (),
    *,
    revoke: bool = False,
    wal_series: tuple[str, ...] = (),
    manifest_only: bool = False,
) -> KeySet:
    """The key set after a rotation: new backups are signed with the new signing key (and
    WAL records with the new WAL key, if one was made) and encrypted to the new recipient
    (and ``escrow``); every identity is kept, so older backups stay restorable.

    The old verify keys are kept until every tier was re-signed with the new keys; with
    ``revoke`` (re-signing is complete) they are dropped, so the old signing keys can no
    longer make a trusted manifest.  A WAL verify key is kept when the WAL key was not
    rotated here (it lives with PostgreSQL's OS user)."""
    configured = {v.key_id for v in current.verifiers}
    old = [v.text for v in current.verifiers]
    for signer in (current.signer, current.wal_signer):
        own = current.verifier(signer.key_id) if signer is not None else None
        if own is not None and own.key_id not in configured:
            old.append(own.text)
    kept = (
        [v.text for v in current.verifiers if v.scope.kinds == frozenset({"wal"})]
        if not keys.wal_verify_key
        else []
    )
    new_entries = keys.verify_entries(wal_series, manifest_only=manifest_only)
    return KeySet(
        recipients=unique((keys.recipient, *escrow)),
        identities=unique((keys.identity, *(str(i) for i in current.identities))),
        signing_key=keys.signing_key,
        verify_keys=unique((*new_entries, *kept, *(() if revoke else old))),
        new=keys,
        wal_signing_key=keys.wal_signing_key,
    )
