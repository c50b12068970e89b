"""The repository keys every test of a session shares (one ``generate_keys()`` per session)."""

from __future__ import annotations

from backupflow.keys import GeneratedKeys, Keyring, generate_keys

__all__ = ["KEYRING", "TEST_KEYS"]

TEST_KEYS: GeneratedKeys = generate_keys()
#: Every part: recipients, identities, signer, verify keys; encryption on.
KEYRING: Keyring = TEST_KEYS.keyring()
