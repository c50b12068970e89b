"""``backupflow key init | show | rotate | resign``: the repository keys from the command line.

Secrets (age identities, the signing key) go only where they are stored (an env-file, the
Secret blocks, an escrow file) and reach standard output only with ``--print-secrets``.
Everything printed otherwise is public: recipients, verify keys and key ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from backupflow.config import CONFIG_ENV_VAR, Settings, load_settings
from backupflow.errors import BackupflowError, ConfigError, ParameterError
from backupflow.keys import GeneratedKeys, Keyring, key_id, load_keyring
from backupflow.keystore import (
    IDENTITIES_BLOCK,
    SIGNING_KEY_BLOCK,
    KeySet,
    check_env_file,
    describe,
    escrow_text,
    save_blocks,
    write_env_file,
    write_escrow_file,
)
from backupflow_app.cli_options import check_config_file

__all__ = ["key_app"]

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

key_app = typer.Typer(
    help="Repository keys: create, show (public parts only) and rotate.", no_args_is_help=True
)

EnvFileOption = Annotated[
    str | None,
    typer.Option(
        "--env-file",
        help="Store the keys as BACKUPFLOW_CRYPTO__* lines in this env-file (created 0600; an "
        "existing one must not be readable by others).",
    ),
]
BlocksOption = Annotated[
    bool,
    typer.Option(
        "--blocks",
        help=f"Store the signing key as the Prefect Secret block {SIGNING_KEY_BLOCK} (needs "
        "PREFECT_API_URL; every client of that API can read it: docs/security.md).",
    ),
]
IdentitiesBlockOption = Annotated[
    bool,
    typer.Option(
        "--identities-block",
        help=f"With --blocks, also store the age identities as the Secret block "
        f"{IDENTITIES_BLOCK}: then every client of the Prefect API can decrypt every backup "
        "(docs/security.md); by default they stay in the env-file or escrow of restore hosts.",
    ),
]
WalEnvFileOption = Annotated[
    str | None,
    typer.Option(
        "--wal-env-file",
        help="Store the WAL key (PostgreSQL only) in this env-file for PostgreSQL's OS user, "
        "with the recipients and verify keys, and not in --env-file: archive_command then "
        "holds a key that can sign only WAL records of this cluster.",
    ),
]
IdentityFileOption = Annotated[
    str | None,
    typer.Option(
        "--identity-file",
        help="Also write the escrow copy to this new file: an age identity file (age -d -i "
        "FILE reads it) with the signing key as a comment.",
    ),
]
PrintOption = Annotated[
    bool,
    typer.Option(
        "--print-secrets",
        help="Print the escrow copy (secret keys) on standard output, e.g. to put on paper.",
    ),
]
EscrowOption = Annotated[
    list[str] | None,
    typer.Option(
        "--escrow-recipient",
        help="An extra age public key (age1...) every new backup is also encrypted to, whose "
        "identity is kept offline (repeatable).",
    ),
]


def _path(value: str | None, option: str) -> Path | None:
    if value is None:
        return None
    if not value.strip():
        raise ParameterError(f"{option} is empty (an unset shell variable?); give a path.")
    return Path(value).absolute()


@contextmanager
def _reading(env_file: Path | None) -> Iterator[None]:
    """Read the settings with ``env_file`` as the env-file (when it exists)."""
    if env_file is None or not os.path.lexists(env_file):
        yield
        return
    saved = os.environ.get(CONFIG_ENV_VAR)
    os.environ[CONFIG_ENV_VAR] = str(env_file)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(CONFIG_ENV_VAR, None)
        else:
            os.environ[CONFIG_ENV_VAR] = saved


def _settings(env_file: Path | None = None) -> Settings:
    with _reading(env_file):
        check_config_file(os.environ.get(CONFIG_ENV_VAR), CONFIG_ENV_VAR)
        return load_settings()


def _keyring(settings: Settings) -> Keyring:
    return load_keyring(settings.crypto)


def _check_storage(
    env_file: Path | None,
    blocks: bool,
    print_secrets: bool,
    escrow: Path | None,
    *,
    identities_block: bool = False,
    wal_env_file: Path | None = None,
) -> None:
    if env_file is not None:
        check_env_file(env_file)
    if wal_env_file is not None:
        check_env_file(wal_env_file)
        if wal_env_file == env_file:
            raise ParameterError("--wal-env-file must be another file than --env-file.")
    if identities_block and not blocks:
        raise ParameterError("--identities-block goes with --blocks.")
    if env_file is None and not identities_block and not print_secrets and escrow is None:
        raise ParameterError(
            "say where the keys go: --env-file PATH, --identity-file PATH or --print-secrets "
            "(--blocks holds only the signing key, unless --identities-block); otherwise the "
            "age identity would be lost."
        )
    if blocks:
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            raise ConfigError(
                "--blocks needs PREFECT_API_URL: the Prefect API whose workers load the blocks."
            )


@dataclass(frozen=True)
class _Places:
    """Where the options say new keys go."""

    env_file: Path | None
    blocks: bool
    identity_file: Path | None
    print_secrets: bool
    identities_block: bool = False
    wal_env_file: Path | None = None


def _store(keyset: KeySet, places: _Places) -> list[str]:
    """Store ``keyset`` where the options say; returns one line per place."""
    env_file, blocks = places.env_file, places.blocks
    done: list[str] = []
    if places.identity_file is not None:
        write_escrow_file(places.identity_file, keyset.new)
        done.append(f"escrow copy written to {places.identity_file} (mode 0600)")
    if blocks:
        try:
            done += save_blocks(keyset, with_identities=places.identities_block)
        except BackupflowError:
            raise
        except Exception as exc:
            raise BackupflowError(
                f"the Secret blocks cannot be saved ({type(exc).__name__}); check that the "
                "Prefect API at PREFECT_API_URL is up."
            ) from None
    if places.wal_env_file is not None and keyset.wal_signing_key:
        values = keyset.wal_env_values()
        existed = write_env_file(places.wal_env_file, values)
        done.append(
            f"{'updated' if existed else 'created (mode 0600)'} {places.wal_env_file} (for "
            "PostgreSQL's OS user): " + ", ".join(sorted(values))
        )
    wal_here = places.wal_env_file is None
    if env_file is not None:
        values = keyset.env_values(
            blocks=blocks, identities_block=places.identities_block, wal=wal_here
        )
        existed = write_env_file(env_file, values)
        done.append(
            f"{'updated' if existed else 'created (mode 0600)'} {env_file}: "
            + ", ".join(sorted(values))
        )
        shadowing = sorted(
            name for name in os.environ if name.startswith("BACKUPFLOW_CRYPTO__") and name in values
        )
        if shadowing:
            errors.print(
                f"[yellow]warning:[/yellow] {', '.join(shadowing)} set in this environment "
                f"override {env_file}; unset them."
            )
    elif blocks:
        done.append("set these in the environment of every worker and restore host:")
        public = keyset.env_values(blocks=True, identities_block=True, wal=False)
        done += [f"  {k}='{v}'" for k, v in sorted(public.items())]
    if places.print_secrets:
        done.append("secrets printed below (escrow copy)")
    return done


def _print_rows(title: str, rows: list[tuple[str, str, str]]) -> None:
    """Rows of (part, key id, public text or where) as plain lines: public keys are printed
    whole, never cut to the terminal's width, so they can be copied."""
    print(f"{title}:")
    width = max((len(part) for part, _, _ in rows), default=0)
    for part, ident, text in rows:
        print(f"  {part:<{width}}  {ident}  {text}")


def _summary(title: str, keys: GeneratedKeys) -> None:
    _print_rows(
        title,
        [
            ("age recipient (encrypts)", key_id(keys.recipient), keys.recipient),
            ("verify key (checks manifests)", key_id(keys.verify_key), keys.verify_key),
            ("age identity (decrypts)", key_id(keys.recipient), "secret: stored, not shown"),
            ("signing key (signs manifests)", key_id(keys.verify_key), "secret: stored, not shown"),
            *(
                [
                    (
                        "WAL verify key (checks WAL records)",
                        key_id(keys.wal_verify_key),
                        keys.wal_verify_key,
                    ),
                    (
                        "WAL signing key (PostgreSQL's OS user)",
                        key_id(keys.wal_verify_key),
                        "secret: stored, not shown",
                    ),
                ]
                if keys.wal_verify_key
                else []
            ),
        ],
    )


def _escrow_advice(keys: GeneratedKeys, print_secrets: bool) -> None:
    console.print(
        "[bold]Escrow now: losing the keys means losing the backups.[/bold] Keep the age "
        f"identity {key_id(keys.recipient)} and the signing key {key_id(keys.verify_key)} "
        "offline (a sealed envelope, a password manager, a second site), as an age identity "
        "file: `# public key: age1...` and the AGE-SECRET-KEY-1... line (that is what "
        "`age-keygen` writes and `age -d -i FILE` reads)."
    )
    if print_secrets:
        print("----- BEGIN BACKUPFLOW ESCROW (secret) -----")
        print(escrow_text(keys), end="")
        print("----- END BACKUPFLOW ESCROW -----")
    else:
        console.print(
            "The secrets are not shown: use --identity-file FILE to write that escrow file, or "
            "--print-secrets to print it."
        )


def _print_done(lines: list[str]) -> None:
    for line in lines:
        console.print(escape(line), highlight=False)


def _places(
    env_file: str | None,
    blocks: bool,
    identity_file: str | None,
    print_secrets: bool,
    identities_block: bool,
    wal_env_file: str | None,
) -> _Places:
    places = _Places(
        _path(env_file, "--env-file"),
        blocks,
        _path(identity_file, "--identity-file"),
        print_secrets,
        identities_block,
        _path(wal_env_file, "--wal-env-file"),
    )
    _check_storage(
        places.env_file,
        blocks,
        print_secrets,
        places.identity_file,
        identities_block=identities_block,
        wal_env_file=places.wal_env_file,
    )
    return places


def _store_and_show(title: str, keyset: KeySet, keys: GeneratedKeys, places: _Places) -> None:
    """Store a new key set where the options say, then show its public parts and where it went."""
    done = _store(keyset, places)
    _summary(title, keys)
    _print_done(done)


@key_app.command("show")
def key_show_cmd(
    env_file: Annotated[
        str | None, typer.Option("--env-file", help="Read the keys from this env-file.")
    ] = None,
) -> None:
    """Print the public parts and key ids of the keys configured here, and what is missing."""
    target = _path(env_file, "--env-file")
    if target is not None and not os.path.lexists(target):
        raise ParameterError(f"--env-file {target} does not exist.")
    settings = _settings(target)
    ring = _keyring(settings)
    rows, missing = describe(ring)
    _print_rows("Repository keys on this host (public parts only)", rows)
    for name, block, value in (
        ("signing key", settings.crypto.signing_key_block, settings.crypto.signing_key),
        ("identities", settings.crypto.identities_block, settings.crypto.identities),
    ):
        if block and not value.get_secret_value().strip():
            console.print(f"{name} read from the Secret block {block}.")
    for sentence in missing:
        console.print(f"[yellow]missing:[/yellow] {escape(sentence)}", highlight=False)
