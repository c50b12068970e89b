"""Where repository keys are kept: an env-file, Prefect Secret blocks, an escrow file.

``backupflow key init | rotate`` build a :class:`KeySet` (the secret and public texts of the
keys a host should hold) and store it here; ``key show`` describes a loaded
:class:`~backupflow.keys.Keyring`.  Nothing here prints or logs a secret: the texts go only
into the files and blocks they are meant for.

* env-file: ``BACKUPFLOW_CRYPTO__*`` lines written into a private file (``0600`` when
  created; an existing one must be a regular file, not a link, and not readable by others),
  replaced atomically through a temporary file in the same folder, keeping its owner, group
  and mode (PostgreSQL's OS user may read it from ``archive_command``);
* Secret blocks: :data:`SIGNING_KEY_BLOCK` and :data:`IDENTITIES_BLOCK`;
* escrow file: the age identity in ``age-keygen``'s format (``# public key: age1...``), which
  ``age -d -i FILE`` reads, with the signing key as a comment line.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backupflow.errors import ConfigError, ParameterError
from backupflow.fsutil import create_private_file, replace_file
from backupflow.keys import GeneratedKeys, Keyring, key_id, parse_identities, parse_recipients
from backupflow.prefect_adapter import find_secret, save_secret

__all__ = [
    "IDENTITIES_BLOCK",
    "KEY_VARIABLES",
    "SIGNING_KEY_BLOCK",
    "KeySet",
    "block_exists",
    "check_env_file",
    "check_escrow_recipients",
    "configured_parts",
    "describe",
    "escrow_text",
    "save_blocks",
    "unique",
    "write_env_file",
    "write_escrow_file",
]

SIGNING_KEY_BLOCK = "backupflow-signing-key"
IDENTITIES_BLOCK = "backupflow-age-identities"
_PREFIX = "BACKUPFLOW_CRYPTO__"
#: Every variable ``key init`` may write; existing lines for these are replaced.
KEY_VARIABLES = tuple(
    _PREFIX + name
    for name in (
        "RECIPIENTS",
        "IDENTITIES",
        "IDENTITIES_BLOCK",
        "SIGNING_KEY",
        "SIGNING_KEY_BLOCK",
        "VERIFY_KEYS",
        "WAL_SIGNING_KEY",
    )
)
_MAX_ENV_FILE = 1 << 20


@dataclass(frozen=True)
class KeySet:
    """The keys one repository uses, as text: what new backups use (``signing_key``,
    ``recipients``) and what keeps old ones readable (``identities``, ``verify_keys``)."""

    recipients: tuple[str, ...]
    identities: tuple[str, ...] = field(repr=False)
    signing_key: str = field(repr=False)
    verify_keys: tuple[str, ...]
    new: GeneratedKeys = field(repr=False)
    #: The WAL key (PostgreSQL's OS user's), when there is one to store.
    wal_signing_key: str = field(default="", repr=False)

    @classmethod
    def fresh(
        cls,
        keys: GeneratedKeys,
        escrow: tuple[str, ...] = (),
        wal_series: tuple[str, ...] = (),
        *,
        manifest_only: bool = False,
    ) -> KeySet:
        return cls(
            recipients=unique((keys.recipient, *escrow)),
            identities=(keys.identity,),
            signing_key=keys.signing_key,
            verify_keys=tuple(keys.verify_entries(wal_series, manifest_only=manifest_only)),
            new=keys,
            wal_signing_key=keys.wal_signing_key,
        )

    def env_values(
        self, *, blocks: bool, identities_block: bool = False, wal: bool = True
    ) -> dict[str, str]:
        """The ``BACKUPFLOW_CRYPTO__*`` values for an env-file: the secrets themselves, or the
        names of the blocks that hold them (the identities stay in the file unless
        ``identities_block``); the WAL key too unless ``wal`` is False (it has its own file)."""
        values = {
            _PREFIX + "RECIPIENTS": json.dumps(list(self.recipients)),
            _PREFIX + "VERIFY_KEYS": json.dumps(list(self.verify_keys)),
        }
        if blocks:
            values[_PREFIX + "SIGNING_KEY_BLOCK"] = SIGNING_KEY_BLOCK
        else:
            values[_PREFIX + "SIGNING_KEY"] = self.signing_key
        if blocks and identities_block:
            values[_PREFIX + "IDENTITIES_BLOCK"] = IDENTITIES_BLOCK
        else:
            values[_PREFIX + "IDENTITIES"] = " ".join(self.identities)
        if wal and self.wal_signing_key:
            values[_PREFIX + "WAL_SIGNING_KEY"] = self.wal_signing_key
        return values

    def wal_env_values(self) -> dict[str, str]:
        """What PostgreSQL's OS user holds: the WAL key, the recipients, the verify keys;
        never the manifest key or an identity."""
        return {
            _PREFIX + "RECIPIENTS": json.dumps(list(self.recipients)),
            _PREFIX + "VERIFY_KEYS": json.dumps(list(self.verify_keys)),
            _PREFIX + "WAL_SIGNING_KEY": self.wal_signing_key,
        }


def unique(items: tuple[str, ...]) -> tuple[str, ...]:
    """``items`` without blanks and repeats, in order."""
    return tuple(dict.fromkeys(item for item in items if item))


def configured_parts(ring: Keyring, *, blocks: tuple[str | None, ...] = ()) -> list[str]:
    """What keys are configured (by key id), to refuse an ``init`` that would replace them."""
    parts = []
    if ring.signer is not None:
        parts.append(f"signing key {ring.signer.key_id}")
    parts += [f"age identity {k}" for k in ring.identity_ids()]
    parts += [f"age recipient {k}" for k in ring.recipient_ids]
    parts += [f"verify key {v.key_id}" for v in ring.verifiers]
    parts += [f"Secret block {name}" for name in blocks if name]
    return list(dict.fromkeys(parts))


def describe(ring: Keyring) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Rows ``(part, key id, public text or where)`` of what this host holds, and one
    sentence per part it lacks.  Public parts only: identities and the signing key are named
    by the key id of their public half."""
    rows: list[tuple[str, str, str]] = []
    missing: list[str] = []
    held = set(ring.identity_ids())
    for recipient in ring.recipients:
        rows.append(("age recipient (encrypts new backups)", key_id(recipient), recipient))
    for ident in ring.identity_ids():
        rows.append(("age identity (decrypts)", ident, "secret: present here, not shown"))
    if ring.signer is not None:
        rows.append(
            (
                "signing key (signs new manifests)",
                ring.signer.key_id,
                "secret: present here, not shown",
            )
        )
    if ring.wal_signer is not None:
        rows.append(
            (
                "WAL signing key (signs WAL records)",
                ring.wal_signer.key_id,
                "secret: present here, not shown",
            )
        )
    configured = {v.key_id for v in ring.verifiers}
    for verifier in ring.verifiers:
        rows.append(
            (
                f"verify key (trusted for {verifier.scope.describe()})",
                verifier.key_id,
                verifier.text,
            )
        )
    if ring.signer is None:
        missing.append("no signing key: this host cannot record backups.")
    elif ring.signer.key_id not in configured:
        missing.append(
            f"the signing key's verify key {ring.signer.key_id} is not in "
            f"BACKUPFLOW_CRYPTO__VERIFY_KEYS: add {ring.signer.public_text} there and on every "
            "host that restores."
        )
    if ring.signer is not None and ring.wal_signer is not None:
        missing.append(
            "this host holds the manifest key and the WAL key: PostgreSQL's OS user should "
            "hold only the WAL key (`key init --wal-env-file`)."
        )
    if any(v.scope.kinds is None and v.scope.series is None for v in ring.verifiers):
        missing.append(
            "a verify key has no scope (trusted for every record): `key rotate` replaces it "
            "with scoped keys."
        )
    if not ring.verifiers and ring.signer is None:
        missing.append("no verify key: this host trusts no manifest.")
    if ring.encrypt and not ring.recipients:
        missing.append("no age recipient: this host cannot encrypt new backups.")
    if not held:
        missing.append("no age identity: this host cannot restore encrypted backups.")
    for recipient in ring.recipients:
        if held and key_id(recipient) not in held:
            missing.append(
                f"no identity here for recipient {key_id(recipient)} (an escrow key?); backups "
                "are still readable with any identity they were encrypted to."
            )
    if not ring.encrypt:
        missing.append("encryption is off (BACKUPFLOW_CRYPTO__ENCRYPT=false).")
    return rows, missing


# -- env-file --------------------------------------------------------------------------


def check_env_file(path: Path) -> None:
    """Refuse an env-file keys cannot be written to: a missing folder, a link, not a
    regular file, readable or writable by others, or another user's."""
    if not path.parent.is_dir():
        raise ParameterError(f"--env-file {path}: its folder {path.parent} does not exist.")
    _existing_env_file(path)


def _existing_env_file(path: Path) -> tuple[list[str], int] | None:
    """The lines and mode of the env-file at ``path``, or None when there is none; refused
    when it is a link, not a regular file, or readable or writable by others."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ParameterError(f"--env-file {path} cannot be checked ({exc.strerror}).") from None
    if stat.S_ISLNK(info.st_mode):
        raise ParameterError(
            f"--env-file {path} is a link; give the real file (keys are never written "
            "through a link)."
        )
    if not stat.S_ISREG(info.st_mode):
        raise ParameterError(f"--env-file {path} is not a regular file.")
    if info.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise ParameterError(
            f"--env-file {path} is readable or writable by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}` first, and rotate any "
            "secret it already held."
        )
    if info.st_uid != os.geteuid():
        raise ParameterError(f"--env-file {path} belongs to another user; keys are not put there.")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(_MAX_ENV_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_ENV_FILE:
        raise ParameterError(f"--env-file {path} is larger than 1 MiB; is it the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParameterError(f"--env-file {path} is not UTF-8 text.") from None
    return text.splitlines(), stat.S_IMODE(info.st_mode)


def _variable(line: str) -> str:
    body = line.strip()
    if body.startswith("export "):
        body = body[len("export ") :].lstrip()
    return body.split("=", 1)[0].strip()


def write_env_file(path: Path, values: dict[str, str]) -> bool:
    """Put ``values`` into the env-file at ``path``: every earlier line of a
    ``BACKUPFLOW_CRYPTO__*`` key variable is dropped, other lines are kept.  Atomic, and an
    existing file keeps its owner, group and mode (:func:`~backupflow.fsutil.replace_file`);
    a new file is ``0600``.  Returns whether it existed."""
    check_env_file(path)
    existing = _existing_env_file(path)
    lines = existing[0] if existing is not None else []
    kept = [line for line in lines if _variable(line) not in KEY_VARIABLES]
    for name, value in values.items():
        if "\n" in value or "'" in value:
            raise ConfigError(f"the value of {name} cannot be written to an env-file.")
        kept.append(f"{name}='{value}'")
    replace_file(path, ("\n".join(kept) + "\n").encode("utf-8"))
    return existing is not None


# -- escrow file -----------------------------------------------------------------------


def escrow_text(keys: GeneratedKeys, *, now: datetime | None = None) -> str:
    """The escrow copy of ``keys``' secrets: an ``age-keygen``-style identity file (``age -d
    -i FILE`` reads it) whose comment lines also hold the signing key."""
    created = (now or keys.created).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"# created: {created}\n"
        f"# public key: {keys.recipient}\n"
        f"# backupflow age key id: {key_id(keys.recipient)}\n"
        f"# backupflow signing key {key_id(keys.verify_key)} (secret; verify key "
        f"{keys.verify_key}):\n"
        f"# {keys.signing_key}\n"
        f"{keys.identity}\n"
    )


def write_escrow_file(path: Path, keys: GeneratedKeys) -> None:
    """Write :func:`escrow_text` into a new private file (never over an existing file or
    through a link)."""
    try:
        fd = create_private_file(path)
    except FileExistsError:
        raise ParameterError(
            f"--identity-file {path} already exists; give a new file name (an escrow copy is "
            "never overwritten)."
        ) from None
    except OSError as exc:
        raise ParameterError(
            f"--identity-file {path} cannot be created ({exc.strerror})."
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as handle:
            handle.write(escrow_text(keys))
            handle.flush()
            os.fsync(fd)
    finally:
        os.close(fd)


# -- Prefect Secret blocks -------------------------------------------------------------


def block_exists(name: str) -> bool:
    return find_secret(name) is not None


def save_blocks(keyset: KeySet, *, with_identities: bool = False) -> list[str]:
    """Save the signing key (and with ``identities``, the identities) as Secret blocks.
    Identities already in the identities block are kept (a key is never dropped from it);
    returns what was done."""
    done = []
    if not with_identities:
        save_secret(SIGNING_KEY_BLOCK, keyset.signing_key)
        return [
            f"Secret block {SIGNING_KEY_BLOCK} saved (signing key {key_id(keyset.new.verify_key)})"
        ]
    old = find_secret(IDENTITIES_BLOCK)
    identities = list(keyset.identities)
    if old:
        held = {key_id(str(i.to_public())) for i in parse_identities("\n".join(identities))}
        for ident in parse_identities(old, f"the Secret block {IDENTITIES_BLOCK}"):
            if key_id(str(ident.to_public())) not in held:
                identities.append(str(ident))
    save_secret(IDENTITIES_BLOCK, "\n".join(identities))
    done.append(f"Secret block {IDENTITIES_BLOCK} saved ({len(identities)} age identities)")
    save_secret(SIGNING_KEY_BLOCK, keyset.signing_key)
    done.append(
        f"Secret block {SIGNING_KEY_BLOCK} saved (signing key {key_id(keyset.new.verify_key)})"
    )
    return done


def check_escrow_recipients(values: list[str]) -> tuple[str, ...]:
    """``--escrow-recipient`` values: age public keys."""
    try:
        return tuple(parse_recipients(values, "--escrow-recipient"))
    except ConfigError as exc:
        raise ParameterError(str(exc)) from None
