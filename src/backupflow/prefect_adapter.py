"""Everything Prefect the core needs, in one place: reading and saving Secret blocks, and a
boto3 session from a prefect-aws ``AwsCredentials`` block.

Layers point down, and Prefect enters the core only here (``tests/unit/test_layers.py``
holds every other core module to that).  Prefect's errors are translated into one-sentence
:class:`~backupflow.errors.ConfigError`\\ s that name the block and the setting to fix.
Prefect is imported inside the functions, so importing the core does not pay for it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from backupflow.errors import ConfigError

if TYPE_CHECKING:
    from boto3.session import Session

__all__ = [
    "aws_block_values",
    "aws_session",
    "find_secret",
    "load_secret",
    "save_secret",
    "secret_block_values",
]


def _load(kind: str, name: str) -> Any:
    """The block ``name`` of ``kind`` ("Secret" or "AwsCredentials"), or None when there is
    no such block."""
    if kind == "Secret":
        from prefect.blocks.system import Secret

        block_class: Any = Secret
    else:
        from prefect_aws import AwsCredentials

        block_class = AwsCredentials
    try:
        return block_class.load(name)
    except ValueError:  # Prefect's "Unable to find block document named ..."
        return None
    except Exception as exc:  # the client raises several kinds when the API is away
        raise ConfigError(
            f"the {kind} block {name!r} cannot be read ({type(exc).__name__}); check that "
            "the Prefect API at PREFECT_API_URL is up."
        ) from exc


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def find_secret(name: str) -> str | None:
    """The value of the Secret block ``name``, or None when there is no such block.

    Raises :class:`ConfigError` when the Prefect API cannot be reached.
    """
    block = _load("Secret", name)
    return None if block is None else _text(block.get())


def load_secret(
    name: str, setting: str, *, create: str = "create it", error: type[ConfigError] = ConfigError
) -> str:
    """The value of the Secret block ``name``, which the setting ``setting`` names.

    A missing block raises ``error`` (a :class:`ConfigError`) naming the block, how to
    ``create`` it and the setting; an unreachable API raises :class:`ConfigError`.
    """
    value = find_secret(name)
    if value is None:
        raise error(f"there is no Secret block {name!r}; {create} or fix {setting}.")
    return value


def save_secret(name: str, value: str) -> None:
    """Save ``value`` as the Secret block ``name``, replacing the block if there is one."""
    from prefect.blocks.system import Secret

    try:
        Secret(value=value).save(name, overwrite=True)
    except Exception as exc:
        raise ConfigError(
            f"the Secret block {name!r} cannot be saved ({type(exc).__name__}); check that "
            "the Prefect API at PREFECT_API_URL is up."
        ) from exc


def aws_session(name: str, setting: str) -> Session:
    """A boto3 session with the credentials of the ``AwsCredentials`` block ``name``, which
    the setting ``setting`` names.  Raises :class:`ConfigError` when it cannot be loaded."""
    block = _load("AwsCredentials", name)
    if block is None:
        raise ConfigError(
            f"there is no AwsCredentials block {name!r}; create it (deployments/bootstrap) or "
            f"fix {setting}."
        )
    session: Session = block.get_boto3_session()
    return session


def secret_block_values(name: str) -> list[str]:
    """What the Secret block ``name`` holds, as text; empty when it cannot be loaded (a block
    that cannot be loaded holds nothing a program could leak)."""
    try:
        value = find_secret(name)
    except ConfigError:
        return []
    return [] if value is None else [value]


def aws_block_values(name: str) -> list[str]:
    """The key id, secret and session token of the ``AwsCredentials`` block ``name``; empty
    when it cannot be loaded."""
    try:
        block = _load("AwsCredentials", name)
    except ConfigError:
        return []
    if block is None:
        return []
    secret = block.aws_secret_access_key
    return [
        secret.get_secret_value() if secret is not None else "",
        block.aws_session_token or "",
        block.aws_access_key_id or "",
    ]
