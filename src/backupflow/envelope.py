"""Signed manifests: a DSSE envelope (the in-toto / Sigstore "Dead Simple Signing Envelope").

The manifest's exact JSON bytes are the payload; the signature covers the DSSE
pre-authentication encoding ``PAE(type, payload)``, so nothing is canonicalised twice and
the type cannot be swapped.  What is stored in a tier::

    {"payloadType": "application/vnd.backupflow.manifest+json",
     "payload": "<base64 of the manifest JSON>",
     "signatures": [{"keyid": "<16 hex>", "sig": "<base64 Ed25519 signature>"}]}

:func:`open_envelope` returns the payload only when a trusted key signed it; anything else
is a :class:`~backupflow.errors.ForeignManifestError` naming where it was found.

Each kind of signed record has its own payload type (a backup manifest, a WAL record, a key
record), and a signature counts only when its key's scope allows that kind for that series
(:class:`~backupflow.keys.Scope`): the WAL key of one cluster cannot vouch for a manifest, or
for another cluster's WAL.  WAL records written before they had their own type carry the
manifest type; they are read as WAL records, under the WAL scope.
"""

from __future__ import annotations

import base64
import binascii
import json

from backupflow.errors import ForeignManifestError
from backupflow.keys import Keyring

__all__ = [
    "KEY_RECORD_PAYLOAD_TYPE",
    "MANIFEST_PAYLOAD_TYPE",
    "WAL_PAYLOAD_TYPE",
    "add_signature",
    "envelope_kind",
    "is_envelope",
    "open_envelope",
    "pae",
    "seal",
]

MANIFEST_PAYLOAD_TYPE = "application/vnd.backupflow.manifest+json"
WAL_PAYLOAD_TYPE = "application/vnd.backupflow.wal-record+json"
KEY_RECORD_PAYLOAD_TYPE = "application/vnd.backupflow.key-record+json"
#: The payload type each kind of record is sealed with, and the kind of key that signs it.
_SEALED_AS = {
    "manifest": (MANIFEST_PAYLOAD_TYPE, "manifest"),
    "wal": (WAL_PAYLOAD_TYPE, "wal"),
    "key": (KEY_RECORD_PAYLOAD_TYPE, "manifest"),
}
#: The payload types accepted when opening a record of each kind.
_OPENS = {
    "manifest": (MANIFEST_PAYLOAD_TYPE,),
    "wal": (WAL_PAYLOAD_TYPE, MANIFEST_PAYLOAD_TYPE),
    "key": (KEY_RECORD_PAYLOAD_TYPE,),
}
_MAX_ENVELOPE = 16 << 20
_MAX_SIGNATURES = 16


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def seal(payload: bytes, keyring: Keyring, *, kind: str = "manifest") -> bytes:
    """The envelope of ``payload`` as a record of ``kind``, signed with the key this process
    holds for that kind."""
    payload_type, signs = _SEALED_AS[kind]
    signer = keyring.require_signer(signs)
    signature = signer.sign(pae(payload_type, payload))
    envelope = {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": signer.key_id, "sig": base64.b64encode(signature).decode()}],
    }
    return json.dumps(envelope, indent=1).encode()


def envelope_kind(raw: bytes) -> str | None:
    """The kind of record an envelope says it is (``manifest``, ``wal``, ``key``), from its
    payload type alone (nothing is checked), or None."""
    try:
        payload_type = json.loads(raw).get("payloadType")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    for kind, (sealed_as, _) in _SEALED_AS.items():
        if payload_type == sealed_as:
            return kind
    return None


def add_signature(
    raw: bytes, keyring: Keyring, *, kind: str, series: str | None, source: str
) -> bytes:
    """The envelope ``raw`` (trusted here for ``kind`` of ``series``) with a signature by this
    process's key for that kind added, its payload and other signatures unchanged; ``raw``
    itself when that key already signed it.  Used when keys are rotated."""
    payload = open_envelope(raw, keyring, source=source, kind=kind, series=series)
    envelope = json.loads(raw)
    signer = keyring.require_signer(_SEALED_AS[kind][1])
    signatures = envelope["signatures"]
    if any(isinstance(e, dict) and e.get("keyid") == signer.key_id for e in signatures):
        return raw
    message = pae(envelope["payloadType"], payload)
    signatures = [e for e in signatures if isinstance(e, dict)][: _MAX_SIGNATURES - 1]
    signatures.append(
        {"keyid": signer.key_id, "sig": base64.b64encode(signer.sign(message)).decode()}
    )
    envelope["signatures"] = signatures
    return json.dumps(envelope, indent=1).encode()


def is_envelope(raw: bytes) -> bool:
    """Whether ``raw`` looks like a signed envelope (not a format-1 unsigned manifest)."""
    return raw.lstrip()[:1] == b"{" and b'"payloadType"' in raw[:4096]


def open_envelope(
    raw: bytes,
    keyring: Keyring,
    *,
    source: str,
    kind: str = "manifest",
    series: str | None = None,
) -> bytes:
    """The payload of an envelope of ``kind`` signed by a key this keyring trusts for that
    kind of record of ``series`` (None: a repository-wide record)."""
    if len(raw) > _MAX_ENVELOPE:
        raise ForeignManifestError(f"foreign manifest {source} ignored: it is too large.")
    try:
        envelope = json.loads(raw)
        payload_type = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = envelope["signatures"]
        if not isinstance(signatures, list) or len(signatures) > _MAX_SIGNATURES:
            raise ValueError("signatures")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ForeignManifestError(
            f"foreign manifest {source} ignored: it is not a signed backupflow manifest."
        ) from None
    if payload_type not in _OPENS[kind]:
        raise ForeignManifestError(f"foreign manifest {source} ignored: wrong payload type.")
    message = pae(payload_type, payload)
    scope_kind = _SEALED_AS[kind][1]
    named = []
    out_of_scope = []
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
        if not verifier.verify(signature, message):
            continue
        if verifier.scope.allows(scope_kind, series):
            return payload
        out_of_scope.append(verifier)
    if out_of_scope:
        what = f"{scope_kind} records" + (f" of {series}" if series else " for the repository")
        raise ForeignManifestError(
            f"foreign manifest {source} ignored: its signer {out_of_scope[0].key_id} is not "
            f"trusted for {what} (its scope: {out_of_scope[0].scope.describe()})."
        )
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
