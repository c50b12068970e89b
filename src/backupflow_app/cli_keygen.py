"""``backupflow key init | rotate | resign``: new keys; rotation revokes the old signing keys.

``key init`` also leaves a signed key record in every tier (what ``adopt`` is bound to).
Rotating adds the new keys' signatures to every signed record in every tier
(:mod:`backupflow.rekey`), then drops the old verify keys from the env-file; when a tier
cannot be reached, the old keys stay trusted until ``key resign`` finishes the pass.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from backupflow.config import CONFIG_ENV_VAR, Settings
from backupflow.errors import BackupflowError, ConfigError, ParameterError
from backupflow.keys import GeneratedKeys, Keyring, generate_keys, key_id
from backupflow.keystore import (
    IDENTITIES_BLOCK,
    SIGNING_KEY_BLOCK,
    KeySet,
    block_exists,
    check_env_file,
    check_escrow_recipients,
    configured_parts,
    write_env_file,
)
from backupflow.rekey import rotated
from backupflow_app.cli_keys import (
    BlocksOption,
    EnvFileOption,
    EscrowOption,
    IdentitiesBlockOption,
    IdentityFileOption,
    PrintOption,
    WalEnvFileOption,
    _escrow_advice,
    _keyring,
    _path,
    _places,
    _print_done,
    _settings,
    _store_and_show,
    console,
    key_app,
)

__all__ = ["key_init_cmd", "key_resign_cmd", "key_rotate_cmd"]


def _wal_series(settings: Settings) -> tuple[str, ...]:
    """The series a WAL key may sign for: this installation's PostgreSQL cluster."""
    return (f"database/{settings.database.name}",)


def _wants_wal(settings: Settings, wal_env_file: Path | None) -> bool:
    if wal_env_file is not None and settings.database.engine != "postgres":
        raise ParameterError("--wal-env-file is for a PostgreSQL database (database.engine).")
    return settings.database.engine == "postgres"


def _key_records(settings: Settings, keys: GeneratedKeys) -> list[str]:
    """Leave the new manifest key's signed key record in every enabled tier (what `adopt`
    takes as the time the repository got its keys); one line per tier."""
    from backupflow.rekey import write_key_record
    from backupflow.storage import open_tiers

    lines = []
    ring = keys.keyring()
    try:
        tiers = open_tiers(settings)
    except BackupflowError as exc:
        return [f"no key record written ({exc})"]
    for tier in tiers:
        try:
            made = write_key_record(tier.storage, ring, keys.created)
        except BackupflowError as exc:
            lines.append(f"key record not written to tier {tier.name} ({exc})")
            continue
        lines.append(
            f"key record {key_id(keys.verify_key)} "
            f"{'written to' if made else 'already in'} tier {tier.name}"
        )
    return lines


@key_app.command("init")
def key_init_cmd(
    env_file: EnvFileOption = None,
    blocks: BlocksOption = False,
    identity_file: IdentityFileOption = None,
    print_secrets: PrintOption = False,
    escrow_recipient: EscrowOption = None,
    identities_block: IdentitiesBlockOption = False,
    wal_env_file: WalEnvFileOption = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace keys that are already configured (backups made with them become "
            "unrestorable unless their identity is kept); `key rotate` keeps them.",
        ),
    ] = False,
) -> None:
    """Generate the repository keys, store them, leave a signed key record in every tier,
    and print what to escrow."""
    places = _places(env_file, blocks, identity_file, print_secrets, identities_block, wal_env_file)
    escrow = check_escrow_recipients(escrow_recipient or [])
    settings = _settings()
    parts = configured_parts(
        _keyring(settings),
        blocks=(settings.crypto.signing_key_block, settings.crypto.identities_block),
    )
    target = places.env_file
    if target is not None and target != Path(os.environ.get(CONFIG_ENV_VAR) or "/").absolute():
        parts += configured_parts(_keyring(_settings(target)))
    if blocks:
        parts += [
            f"Secret block {n}" for n in (SIGNING_KEY_BLOCK, IDENTITIES_BLOCK) if block_exists(n)
        ]
    parts = list(dict.fromkeys(parts))
    if parts and not force:
        raise ConfigError(
            f"keys are already configured ({', '.join(parts[:6])}); use `backupflow key "
            "rotate` to change them and keep old backups restorable, or --force to replace them."
        )
    wal = _wants_wal(settings, places.wal_env_file)
    keys = generate_keys(wal=wal)
    keyset = KeySet.fresh(keys, escrow, _wal_series(settings) if wal else (), manifest_only=not wal)
    _store_and_show("New repository keys", keyset, keys, places)
    _print_done(_key_records(settings, keys))
    if escrow:
        console.print(
            "new backups are also encrypted to the escrow key(s) "
            + ", ".join(key_id(r) for r in escrow)
            + "."
        )
    console.print(
        "Workers need the signing key, the recipients and the verify keys; restore hosts need "
        "the identities and the verify keys. Remove BACKUPFLOW_CRYPTO__IDENTITIES from workers "
        "that never restore."
        + (
            " PostgreSQL's OS user needs only the WAL key, the recipients and the verify keys "
            "(--wal-env-file)."
            if wal
            else ""
        )
    )
    _escrow_advice(keys, print_secrets)


def _resign(settings: Settings, ring: Keyring, kinds: frozenset[str]) -> tuple[bool, list[str]]:
    """Re-sign every tier's trusted envelopes with ``ring``'s keys; whether every tier is
    done, and one line per tier."""
    from backupflow.rekey import resign_storage
    from backupflow.storage import open_tiers

    lines = []
    complete = True
    for tier in open_tiers(settings):
        report = resign_storage(tier.name, tier.storage, ring, kinds=kinds)
        complete = complete and report.complete
        lines.append(
            f"tier {tier.name}: {report.resigned} signed records re-signed, {report.current} "
            f"already current, {len(report.ignored)} not signed by a trusted key (left alone)"
            + (f"; incomplete: {report.problems[0]}" if report.problems else "")
        )
    return complete, lines


def _resigned_kinds(current: Keyring, wal_here: bool) -> frozenset[str]:
    """What this host re-signs: WAL records too when it holds the WAL key, or when no
    WAL-scoped key exists (one key signs everything, as before scopes); not when a separate
    WAL key (kept by PostgreSQL's OS user) signs them and stays trusted."""
    separate = any(v.scope.kinds == frozenset({"wal"}) for v in current.verifiers)
    return frozenset({"manifest", "wal"} if wal_here or not separate else {"manifest"})


@key_app.command("rotate")
def key_rotate_cmd(
    env_file: EnvFileOption = None,
    blocks: BlocksOption = False,
    identity_file: IdentityFileOption = None,
    print_secrets: PrintOption = False,
    escrow_recipient: EscrowOption = None,
    identities_block: IdentitiesBlockOption = False,
    wal_env_file: WalEnvFileOption = None,
) -> None:
    """New keys for new backups, and the old signing keys revoked: every signed record in
    every tier gets the new key's signature, then the old verify keys are dropped.  Older
    identities are kept, so older backups stay restorable."""
    places = _places(env_file, blocks, identity_file, print_secrets, identities_block, wal_env_file)
    escrow = check_escrow_recipients(escrow_recipient or [])
    settings = _settings(places.env_file)
    current = _keyring(settings)
    if current.signer is None and not current.identities and not current.verifiers:
        raise ConfigError(
            "no keys are configured here to rotate (no signing key, identity or verify key); "
            "run `backupflow key init` first, or point --env-file at the file that holds them."
        )
    wal = current.wal_signer is not None or places.wal_env_file is not None
    if wal:
        _wants_wal(settings, places.wal_env_file)
    keys = generate_keys(wal=wal)
    new = keys.keyring()
    resigning = Keyring(
        recipients=new.recipients,
        signer=new.signer,
        wal_signer=new.wal_signer,
        verifiers=current.trusted,
    )
    complete, lines = _resign(settings, resigning, _resigned_kinds(current, wal))
    keyset = rotated(
        current,
        keys,
        escrow,
        revoke=complete,
        wal_series=_wal_series(settings) if wal else (),
        manifest_only=settings.database.engine != "postgres",
    )
    _store_and_show("New repository keys (rotation)", keyset, keys, places)
    _print_done(lines + _key_records(settings, keys))
    if complete:
        revoked = [v.key_id for v in current.trusted if v.text not in keyset.verify_keys]
        console.print(
            f"revoked: the old signing keys {', '.join(revoked) or 'none'} are no longer "
            "trusted here; set the new BACKUPFLOW_CRYPTO__VERIFY_KEYS on every restore host too."
        )
    else:
        console.print(
            "[yellow]not revoked yet:[/yellow] a tier could not be re-signed, so the old verify "
            "keys stay trusted; run `backupflow key resign` when it is back."
        )
    kept_ids = [key_id(str(i.to_public())) for i in current.identities]
    console.print(f"kept: age identities {', '.join(kept_ids) or 'none held here'}.")
    dropped = [key_id(r) for r in current.recipients if r not in keyset.recipients]
    if dropped:
        console.print(
            f"new backups are no longer encrypted to {', '.join(dropped)}; to keep an escrow "
            "key, rotate again with --escrow-recipient age1... for it."
        )
    held = set(current.identity_ids())
    lacking = [r for r in current.recipient_ids if r not in held]
    if lacking:
        console.print(
            f"[yellow]note:[/yellow] backups encrypted to {', '.join(lacking)} need that "
            "identity, which is not held here; keep it where restores run or in escrow."
        )
    _escrow_advice(keys, print_secrets)


@key_app.command("resign")
def key_resign_cmd(
    env_file: Annotated[
        str | None,
        typer.Option(
            "--env-file", help="The env-file that holds the keys (its verify keys are updated)."
        ),
    ] = None,
) -> None:
    """Finish a rotation: give every signed record in every tier the current keys' signature,
    then drop every verify key but the current ones (and a WAL key held elsewhere)."""
    target = _path(env_file, "--env-file")
    if target is not None:
        check_env_file(target)
    settings = _settings(target)
    ring = _keyring(settings)
    signer = ring.require_signer()
    complete, lines = _resign(settings, ring, _resigned_kinds(ring, ring.wal_signer is not None))
    _print_done(lines)
    if not complete:
        raise ConfigError("a tier could not be re-signed; the old verify keys stay trusted.")
    current = {signer.key_id} | ({ring.wal_signer.key_id} if ring.wal_signer else set())
    keep = [
        v.text
        for v in ring.verifiers
        if v.key_id in current or (ring.wal_signer is None and v.scope.kinds == frozenset({"wal"}))
    ]
    if target is None:
        console.print("set BACKUPFLOW_CRYPTO__VERIFY_KEYS to " + json.dumps(keep))
        return
    write_env_file(target, {"BACKUPFLOW_CRYPTO__VERIFY_KEYS": json.dumps(keep)})
    dropped = sorted(
        {v.key_id for v in ring.verifiers} - {v.split()[0] and key_id(v.split()[0]) for v in keep}
    )
    console.print(f"revoked: {', '.join(dropped) or 'nothing (no old key was trusted)'}.")
