"""The repository keys every test of a session shares (one ``generate_keys()`` per session)."""

from __future__ import annotations

import json

from backupflow.keys import GeneratedKeys, Keyring, generate_keys

__all__ = ["KEYRING", "TEST_KEYS", "key_env"]

TEST_KEYS: GeneratedKeys = generate_keys()
#: Every part: recipients, identities, signer, verify keys; encryption on.
KEYRING: Keyring = TEST_KEYS.keyring()


def key_env(keys: GeneratedKeys = TEST_KEYS) -> dict[str, str]:
    """The BACKUPFLOW_CRYPTO__* variables of an operator's shell holding every key."""
    return {
        "BACKUPFLOW_CRYPTO__RECIPIENTS": json.dumps([keys.recipient]),
        "BACKUPFLOW_CRYPTO__IDENTITIES": keys.identity,
        "BACKUPFLOW_CRYPTO__SIGNING_KEY": keys.signing_key,
        "BACKUPFLOW_CRYPTO__VERIFY_KEYS": json.dumps([keys.verify_key]),
    }
