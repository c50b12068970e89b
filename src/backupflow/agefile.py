"""Streaming decryption of age v1 files encrypted to X25519 recipients, block by block.

pyrage (rage) writes every stored object and parses every key; this module only reads the
age v1 file format (https://age-encryption.org/v1) back, with the primitives of the
``cryptography`` package, because pyrage's streaming reader calls back into Python for
every 8 KiB in and out: a restore then spends more time passing the GIL around than
decrypting (measured in docs/benchmark.md).  Here a whole block of the stored object is
decrypted in a few calls that release the GIL, on whatever thread reads the object.

What is checked, as the format requires: the header's version line, stanza grammar and
canonical base64, a bounded header size (64 KiB) and stanza count (256; ours hold one
stanza per recipient); a passphrase stanza only alone; each X25519 stanza is unwrapped with
each identity held (a low-order share, which gives an all-zero secret, aborts); the header
MAC; then every
64 KiB payload chunk's Poly1305 tag with its counter nonce, the last chunk flagged as last
(a file cut at a chunk boundary, with chunks dropped, reordered or appended, fails), and
nothing after it.  Any failure is one :class:`IntegrityError` naming what did not hold, and
the stream stays failed.  Interoperability with pyrage and the ``age`` command is tested both
ways.  Note what age does not promise: anyone holding a recipient (public) key can write a
valid age file, so a *replaced* object decrypts; the manifest's signed SHA-256 of the stored
bytes and of the plaintext (:func:`backupflow.pipeline.open_verified`) catches that.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from hashlib import sha256

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from backupflow.errors import IntegrityError

__all__ = ["AgeDecryptor", "identity_secret"]

_VERSION_LINE = b"age-encryption.org/v1"
_X25519_INFO = b"age-encryption.org/v1/X25519"
_CHUNK = 64 * 1024
_TAG = 16
_SEALED_CHUNK = _CHUNK + _TAG
_PAYLOAD_NONCE = 16
#: Bounds on what a header may hold (ours: one stanza per recipient, under 1 KiB).
_MAX_HEADER_BYTES = 64 * 1024
_MAX_STANZAS = 256
_BODY_COLUMNS = 64

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_SECRET_HRP = "age-secret-key-"


def _damaged(reason: str) -> IntegrityError:
    return IntegrityError(
        f"the stored copy cannot be decrypted: it was tampered with or is damaged ({reason})."
    )


def _bech32_polymod(values: list[int]) -> int:
    generators = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for bit, generator in enumerate(generators):
            if (top >> bit) & 1:
                check ^= generator
    return check


def identity_secret(text: str) -> bytes:
    """The 32-byte X25519 secret of an age identity (``AGE-SECRET-KEY-1...``, Bech32)."""
    stripped = text.strip()
    if not stripped.isascii() or stripped not in (stripped.lower(), stripped.upper()):
        raise ValueError("not an age X25519 identity (mixed case or not ASCII)")
    lowered = stripped.lower()
    hrp, separator, data = lowered.rpartition("1")
    if not separator or hrp != _SECRET_HRP or len(data) < 6:
        raise ValueError("not an age X25519 identity")
    try:
        values = [_BECH32.index(char) for char in data]
    except ValueError as exc:
        raise ValueError("not an age X25519 identity") from exc
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _bech32_polymod(expanded + values) != 1:
        raise ValueError("the age identity's checksum does not match")
    accumulator = bits = 0
    secret = bytearray()
    for value in values[:-6]:
        accumulator = (accumulator << 5) | value
        bits += 5
        if bits >= 8:
            bits -= 8
            secret.append((accumulator >> bits) & 0xFF)
    if len(secret) != 32 or accumulator & ((1 << bits) - 1):
        raise ValueError("the age identity does not hold a 32-byte key")
    return bytes(secret)


def _b64(text: bytes, what: str) -> bytes:
    """Canonical unpadded standard base64, as the format requires."""
    try:
        decoded = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _damaged(f"the {what} is not base64") from exc
    if base64.b64encode(decoded).rstrip(b"=") != text:
        raise _damaged(f"the {what} is not canonical base64")
    return decoded


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


class _Identity:
    def __init__(self, secret: bytes) -> None:
        self.private = X25519PrivateKey.from_private_bytes(secret)
        self.public = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def unwrap(self, share: bytes, body: bytes) -> bytes | None:
        """The file key if this stanza was made for this identity, else None."""
        try:
            shared = self.private.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:
            # a low-order share gives an all-zero secret: the format says abort, not skip
            raise _damaged("an X25519 stanza has a low-order share") from None
        key = _hkdf(shared, share + self.public, _X25519_INFO)
        try:
            return ChaCha20Poly1305(key).decrypt(bytes(12), body, None)
        except InvalidTag:
            return None


class AgeDecryptor:
    """Feed the stored bytes to :meth:`update` in any pieces; it returns the plaintext that
    is known to be authentic so far.  :meth:`finish` checks and returns the last chunk.

    ``identities`` are the 32-byte X25519 secrets (:func:`identity_secret`).  Memory stays
    at one block plus one chunk.
    """

    def __init__(self, identities: Sequence[bytes]) -> None:
        if not identities:
            raise ValueError("at least one identity is needed")
        self._identities = [_Identity(secret) for secret in identities]
        self._pending = bytearray()
        self._aead: ChaCha20Poly1305 | None = None
        self._counter = 0
        self._finished = False
        self._failed: IntegrityError | None = None
        self._scanned = 0  # how far the header's end has been looked for

    def update(self, data: bytes) -> bytes:
        self._usable()
        try:
            self._pending += data
            if self._aead is None and not self._read_header():
                return b""
            out: list[bytes] = []
            start = 0
            with memoryview(self._pending) as view:
                # A chunk is opened only once more bytes follow it: the last one is flagged.
                while len(view) - start > _SEALED_CHUNK:
                    # bytes, not a view: older cryptography releases accept no other
                    sealed = bytes(view[start : start + _SEALED_CHUNK])
                    out.append(self._open(sealed, last=False))
                    start += _SEALED_CHUNK
            del self._pending[:start]
            return b"".join(out)
        except IntegrityError as exc:
            self._failed = exc  # the stream is dead: every later call says so again
            raise

    def finish(self) -> bytes:
        """The last chunk's plaintext; raises if the file ended early or carries extra."""
        self._usable()
        self._finished = True
        try:
            if self._aead is None:
                raise _damaged("the file ends inside its header")
            rest = bytes(self._pending)
            self._pending.clear()
            if len(rest) < _TAG or (len(rest) == _TAG and self._counter > 0):
                raise _damaged("the file ends before its last chunk")
            return self._open(rest, last=True)
        except IntegrityError as exc:
            self._failed = exc
            raise

    def _usable(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._finished:
            raise ValueError("the age stream was already finished")

    def _open(self, sealed: bytes, *, last: bool) -> bytes:
        assert self._aead is not None
        nonce = self._counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        try:
            plain = self._aead.decrypt(nonce, sealed, None)
        except InvalidTag:
            where = "the last chunk" if last else f"chunk {self._counter}"
            raise _damaged(f"{where} does not authenticate") from None
        self._counter += 1
        return plain

    def _read_header(self) -> bool:
        """Parse the header once it is all here; False while more bytes are needed."""
        end = self._pending.find(b"\n---", max(0, self._scanned - 3), _MAX_HEADER_BYTES)
        if end < 0:
            if len(self._pending) > _MAX_HEADER_BYTES:
                raise _damaged("the header is too long")
            self._scanned = len(self._pending)  # the next search starts about here
            return False
        line_end = self._pending.find(b"\n", end + 4, end + 4 + 64)
        if line_end < 0:
            if len(self._pending) > end + 4 + 64:
                raise _damaged("the header's MAC line is malformed")
            return False
        if len(self._pending) < line_end + 1 + _PAYLOAD_NONCE:
            return False
        header = bytes(self._pending[: end + 4])  # through "---", what the MAC covers
        mac_line = bytes(self._pending[end + 4 : line_end])
        if not mac_line.startswith(b" "):
            raise _damaged("the header's MAC line is malformed")
        mac = _b64(mac_line[1:], "header MAC")
        file_key = self._file_key(header[: end + 1].split(b"\n")[:-1])
        expected = hmac.new(_hkdf(file_key, b"", b"header"), header, sha256).digest()
        if len(mac) != 32 or not hmac.compare_digest(mac, expected):
            raise _damaged("the header MAC does not match")
        nonce = bytes(self._pending[line_end + 1 : line_end + 1 + _PAYLOAD_NONCE])
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        del self._pending[: line_end + 1 + _PAYLOAD_NONCE]
        return True

    def _file_key(self, lines: list[bytes]) -> bytes:
        """The file key from the first stanza an identity opens (other types are skipped)."""
        if not lines or lines[0] != _VERSION_LINE:
            raise _damaged("it is not an age v1 file")
        stanzas: list[tuple[list[bytes], bytes]] = []
        index = 1
        while index < len(lines):
            line = lines[index]
            if not line.startswith(b"-> "):
                raise _damaged("the header has a malformed stanza")
            arguments = line[3:].split(b" ")
            if any(not arg or any(c < 33 or c > 126 for c in arg) for arg in arguments):
                raise _damaged("the header has a malformed stanza")
            index += 1
            body = bytearray()
            while True:
                if index >= len(lines):
                    raise _damaged("a stanza's body is not terminated")
                chunk = lines[index]
                index += 1
                if len(chunk) > _BODY_COLUMNS:
                    raise _damaged("a stanza's body line is too long")
                body += _b64(chunk, "stanza body")
                if len(chunk) < _BODY_COLUMNS:
                    break
            stanzas.append((arguments, bytes(body)))
            if len(stanzas) > _MAX_STANZAS:
                raise _damaged("the header has too many stanzas")
        if not stanzas:
            raise _damaged("the header has no recipient stanza")
        if len(stanzas) > 1 and any(arguments[0] == b"scrypt" for arguments, _ in stanzas):
            raise _damaged("a passphrase (scrypt) stanza is not alone in the header")
        for arguments, wrapped in stanzas:
            if arguments[0] != b"X25519":
                continue
            if len(arguments) != 2 or len(wrapped) != 32:
                raise _damaged("an X25519 stanza is malformed")
            share = _b64(arguments[1], "X25519 share")
            if len(share) != 32:
                raise _damaged("an X25519 stanza is malformed")
            for identity in self._identities:
                file_key = identity.unwrap(share, wrapped)
                if file_key is not None:
                    return file_key
        raise _damaged("none of the identities held opens it")
