"""Signed manifests: a DSSE envelope (the in-toto / Sigstore "Dead Simple Signing Envelope").

The manifest's exact JSON bytes are the payload; the signature covers the DSSE
pre-authentication encoding ``PAE(type, payload)``, so nothing is canonicalised twice and
the type cannot be swapped.  What is stored in a tier::

    {"payloadType": "application/vnd.backupflow.manifest+json",
     "payload": "<base64 of the manifest JSON>",
     "signatures": [{"keyid": "<16 hex>", "sig": "<base64 Ed25519 signature>"}]}

:func:`open_envelope` returns the payload only when a trusted key signed it; anything else
is a :class:`~backupflow.errors.ForeignManifestError` naming where it was found.
"""

from __future__ import annotations

import base64
import binascii
import json

from backupflow.errors import ForeignManifestError
from backupflow.keys import Keyring

__all__ = ["MANIFEST_PAYLOAD_TYPE", "is_envelope", "open_envelope", "pae", "seal"]

MANIFEST_PAYLOAD_TYPE = "application/vnd.backupflow.manifest+json"
_MAX_ENVELOPE = 16 << 20


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def seal(payload: bytes, keyring: Keyring) -> bytes:
    """The envelope of ``payload``, signed with this process's signing key."""
    signer = keyring.require_signer()
    signature = signer.sign(pae(MANIFEST_PAYLOAD_TYPE, payload))
    envelope = {
        "payloadType": MANIFEST_PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": signer.key_id, "sig": base64.b64encode(signature).decode()}],
    }
    return json.dumps(envelope, indent=1).encode()


def is_envelope(raw: bytes) -> bool:
    """Whether ``raw`` looks like a signed envelope (not a format-1 unsigned manifest)."""
    return raw.lstrip()[:1] == b"{" and b'"payloadType"' in raw[:4096]


def open_envelope(raw: bytes, keyring: Keyring, *, source: str) -> bytes:
    """The payload of an envelope signed by a key this keyring trusts."""
    if len(raw) > _MAX_ENVELOPE:
        raise ForeignManifestError(f"foreign manifest {source} ignored: it is too large.")
    try:
        envelope = json.loads(raw)
        payload_type = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = envelope["signatures"]
        if not isinstance(signatures, list) or len(signatures) > 16:
            raise ValueError("signatures")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ForeignManifestError(
            f"foreign manifest {source} ignored: it is not a signed backupflow manifest."
        ) from None
    if payload_type != MANIFEST_PAYLOAD_TYPE:
        raise ForeignManifestError(f"foreign manifest {source} ignored: wrong payload type.")
    message = pae(payload_type, payload)
    named = []
    for entry in signatures:
        if not isinstance(entry, dict):
            continue
        keyid, sig = entry.get("keyid"), entry.get("sig")
        if not isinstance(keyid, str) or not isinstance(sig, str):
            continue
        named.append(keyid[:16])
        verifier = keyring.verifier(keyid)
        if verifier is None:
            continue
        try:
            signature = base64.b64decode(sig, validate=True)
        except (ValueError, binascii.Error):
            continue
        if verifier.verify(signature, message):
            return payload
    if any(keyring.verifier(k) is not None for k in named):
        raise ForeignManifestError(
            f"foreign manifest {source} ignored: its signature does not match its content "
            "(tampered)."
        )
    raise ForeignManifestError(
        f"foreign manifest {source} ignored: it is signed by no trusted key "
        f"({', '.join(named) or 'no signature'}); trusted: "
        f"{', '.join(keyring.verify_key_ids) or 'none configured'}."
    )
