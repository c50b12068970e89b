"""Hand-made age v1 files for the reader's tests: valid MACs around hostile contents (a
low-order share, extra stanzas, chunks flagged wrongly), which no honest writer produces."""

from __future__ import annotations

import base64
import hmac
import os
from hashlib import sha256

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

Stanza = tuple[list[bytes], bytes]


def b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


def public_of(secret: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(secret).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519_stanza(recipient: bytes, file_key: bytes) -> Stanza:
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    wrap = _hkdf(shared, share + recipient, b"age-encryption.org/v1/X25519")
    return [b"X25519", b64(share)], ChaCha20Poly1305(wrap).encrypt(bytes(12), file_key, None)


def header(stanzas: list[Stanza], file_key: bytes) -> bytes:
    out = b"age-encryption.org/v1\n"
    for arguments, body in stanzas:
        out += b"-> " + b" ".join(arguments) + b"\n"
        text = b64(body)
        lines = [text[i : i + 64] for i in range(0, len(text), 64)]
        if not lines or len(lines[-1]) == 64:
            lines.append(b"")
        out += b"".join(line + b"\n" for line in lines)
    out += b"---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), out, sha256).digest()
    return out + b" " + b64(mac) + b"\n"


def payload(file_key: bytes, chunks: list[tuple[bytes, bool]]) -> bytes:
    """The payload of ``(plaintext, flagged last)`` chunks, in order."""
    nonce = os.urandom(16)
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    out = nonce
    for counter, (plain, last) in enumerate(chunks):
        out += aead.encrypt(
            counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00"), plain, None
        )
    return out
